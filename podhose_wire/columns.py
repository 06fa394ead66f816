"""The column body of a record (``enc=cols2``, and ``cols1`` from older forwarders): the
layout is specified in docs/architecture.md, "Record wire format". The forwarder splits lines
into columns (forwarder/wire_encoder.py, bulk byte operations); this module defines the kinds,
the line shapes they stand for, the time transposition both ways, and reads a body back into
lines byte for byte.

    >>> decode(b"dr\\n2\\nT1\\nhi\\\\n\\nplain\\n", ENC_TRANSPOSED_COLUMNS)
    b'{"log":"hi\\\\n","stream":"stdout","time":"T1"}\\nplain\\n'
    >>> decode(b"dr\\nT1\\nhi\\\\n\\nplain\\n", ENC_COLUMNS)
    b'{"log":"hi\\\\n","stream":"stdout","time":"T1"}\\nplain\\n'
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat

from podhose_wire.header import short_number

ENC_COLUMNS = "cols1"  # times as they are, one a line
ENC_TRANSPOSED_COLUMNS = "cols2"  # times transposed (what forwarders write)
#: Docker json-file entries by kind: the stream.
DOCKER_KINDS = {b"d": b"stdout", b"D": b"stderr"}
#: CRI lines by kind: the stream and the tag (F full, P partial).
CRI_KINDS = {b"o": b"stdout F", b"e": b"stderr F", b"p": b"stdout P", b"q": b"stderr P"}
RAW_KIND = b"r"  # any other line: its text is the whole line
KINDS = b"".join([*DOCKER_KINDS, *CRI_KINDS, RAW_KIND])
#: A Docker json-file line as dockerd writes it: (text, stream, time).
DOCKER_LINE = b'{"log":"%s","stream":"%s","time":"%s"}\n'
#: A CRI line as containerd and CRI-O write it: (time, stream and tag, text).
CRI_LINE = b"%s %s %s\n"
MAX_TIME_WIDTH = 4096  # a wider time marks a corrupt body
_DOCKER_STDOUT = DOCKER_LINE.replace(b'"stream":"%s"', b'"stream":"stdout"')


class WireFormatError(ValueError):
    """A record that claims the podhose wire format but does not follow it."""


def transposed(times: list[bytes]) -> tuple[bytes, bytes]:
    """(width line, transposed block) of the times: the first byte of every time, then the
    second byte of every time, ... (a shorter time padded with LF).

    >>> transposed([b"10:00:01.5Z", b"10:00:01.75Z"])
    (b'12', b'1100::0000::0011..57Z5\\nZ')
    """
    width = max(map(len, times), default=0)
    joined = b"\n".join(times) + b"\n"
    if len(joined) != len(times) * (width + 1) or joined[width :: width + 1].strip(b"\n"):
        joined = b"".join(map(bytes.ljust, times, repeat(width + 1), repeat(b"\n")))
    return b"%d" % width, b"".join([joined[i :: width + 1] for i in range(width)])


def untransposed(block: bytes, width: int, count: int) -> list[bytes]:
    """The `count` times of a transposed block: W slices put them back side by side.

    >>> untransposed(b"1100::0000::0011..57Z5\\nZ", 12, 2)
    [b'10:00:01.5Z', b'10:00:01.75Z']
    """
    if width == 0:
        return [b""] * count
    joined = bytearray(count * width)
    for i in range(width):
        joined[i::width] = block[i * count : (i + 1) * count]
    if b"\n" not in block:
        return [bytes(joined[j : j + width]) for j in range(0, len(joined), width)]
    return [bytes(joined[j : j + width]).rstrip(b"\n") for j in range(0, len(joined), width)]


def decode(body: bytes, enc: str) -> bytes:
    """The newline-terminated lines of a column body of encoding `enc`."""
    return Columns.read(body, transposed=enc == ENC_TRANSPOSED_COLUMNS).lines()


class Columns:
    """A column body read apart: one kind byte per line, the time of each line that has one,
    the text of each line. A ``cols2`` body's times are put back in order only when asked for
    (the transform's seed output needs only the texts)."""

    __slots__ = ("_block", "_times", "_width", "kinds", "texts")

    def __init__(
        self, kinds: bytes, texts: list[bytes], times: list[bytes] | None,
        width: int = 0, block: bytes = b"",
    ) -> None:  # fmt: skip
        """`times` as they are, or None and the ``cols2`` block of `width` they come from."""
        self.kinds, self.texts, self._times = kinds, texts, times
        self._width, self._block = width, block

    @classmethod
    def read(cls, body: bytes, transposed: bool = False) -> Columns:
        """Split a column body (``cols2`` if `transposed`, else ``cols1``); raise
        WireFormatError when it is not one."""
        end = body.find(b"\n")
        kinds = body[:end] if end >= 0 else b""
        if end < 0 or kinds.translate(None, KINDS):
            raise WireFormatError("corrupt column body")
        enveloped = len(kinds) - kinds.count(RAW_KIND)
        if transposed:
            return cls._read_transposed(kinds, enveloped, body[end + 1 :])
        parts = body[end + 1 :].split(b"\n")
        if parts.pop() != b"" or len(parts) != enveloped + len(kinds):
            raise WireFormatError("corrupt column body: sections do not match the kinds")
        return cls(kinds, parts[enveloped:], parts[:enveloped])

    @classmethod
    def _read_transposed(cls, kinds: bytes, enveloped: int, rest: bytes) -> Columns:
        end = rest.find(b"\n")
        width = short_number(rest[:end].decode("latin-1")) if end >= 0 else None
        if width is None or width > MAX_TIME_WIDTH:
            raise WireFormatError("corrupt column body: bad time width")
        start, stop = end + 1, end + 1 + width * enveloped
        texts = rest[stop + 1 :].split(b"\n")
        if rest[stop : stop + 1] != b"\n" or texts.pop() != b"" or len(texts) != len(kinds):
            raise WireFormatError("corrupt column body: sections do not match the kinds")
        return cls(kinds, texts, None, width, rest[start:stop])

    @property
    def _enveloped(self) -> int:
        return len(self.kinds) - self.kinds.count(RAW_KIND)

    @property
    def times(self) -> list[bytes]:
        """The time of every line that has one, as the runtime wrote it."""
        if self._times is None:
            self._times = untransposed(self._block, self._width, self._enveloped)
        return self._times

    @property
    def times_start_with_digits(self) -> bool:
        """Every time starts with a digit (as Fluent Bit's CRI parser requires)."""
        if self._times is None:  # the first bytes of the times come first
            count = self._enveloped
            return count == 0 or (self._width > 0 and self._block[:count].isdigit())
        return all(time[:1].isdigit() for time in self._times)

    @property
    def all_docker(self) -> bool:
        """Every line is a Docker json-file entry (stdout or stderr)."""
        return not self.kinds.translate(None, b"".join(DOCKER_KINDS))

    @property
    def all_cri_full(self) -> bool:
        """Every line is a full CRI line (stdout or stderr)."""
        return not self.kinds.translate(None, b"oe")

    def lines(self) -> bytes:
        """Every line rebuilt byte for byte, newline-terminated."""
        kinds, times, texts = self.kinds, self.times, self.texts
        if kinds.count(b"d") == len(kinds):
            return b"".join(map(_DOCKER_STDOUT.__mod__, zip(texts, times, strict=True)))
        out = []
        next_time = iter(times).__next__
        for kind, text in zip(kinds, texts, strict=True):
            out.append(_line(bytes((kind,)), text, next_time))
        return b"".join(out)


def _line(kind: bytes, text: bytes, next_time: Callable[[], bytes]) -> bytes:
    if kind == RAW_KIND:
        return text + b"\n"
    if kind in DOCKER_KINDS:
        return DOCKER_LINE % (text, DOCKER_KINDS[kind], next_time())
    return CRI_LINE % (next_time(), CRI_KINDS[kind], text)
