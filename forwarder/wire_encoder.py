"""Encoder of the podhose/1 record wire format (specified in docs/architecture.md, "Record
wire format"; its header, kinds and time transposition are podhose_wire's).

A record is `compress(header + body)`. With zstd (the default) the body is the record's lines
split into columns (`enc=cols2`); the split here is the fast part: the common records (every
line a Docker stdout entry, or a full CRI stdout line) are split with a few bulk byte
operations, without Python work per line, and checked by building the lines back.

    >>> columns(b'{"log":"hi\\\\n","stream":"stdout","time":"T1"}\\nplain\\n')
    (b'cols2', b'dr\\n2\\nT1\\nhi\\\\n\\nplain\\n')
"""

from __future__ import annotations

import re
import zlib

import zstandard

from podhose_wire import columns as wire_columns
from podhose_wire.compression import GZIP_WBITS
from podhose_wire.header import ENC, source_header, with_field

ENC_TRANSPOSED_COLUMNS = wire_columns.ENC_TRANSPOSED_COLUMNS.encode()
ZSTD_MIN_WINDOW_LOG = 10  # zstd's smallest window (ZSTD_WINDOWLOG_MIN)
ZSTD_MAX_HASH_LOG = 16  # table caps (zstd_parameters)
ZSTD_MAX_CHAIN_LOG = 15
# One line: a Docker json-file entry as dockerd writes it, a CRI line, or anything else.
_LINE = re.compile(
    rb'^(?:\{"log":"(.*)","stream":"(stdout|stderr)","time":"([^"\n]*)"\}'
    rb"|([^ \n]+) (stdout|stderr) ([FP]) (.*)"
    rb"|(.*))$",
    re.MULTILINE,
)
# The common record: every line a Docker stdout entry as dockerd writes it. Its columns
# come from a few bulk byte operations, without Python work per line.
# _DOCKER_SEP cannot occur inside a JSON string.
_DOCKER_STDOUT_LINE = wire_columns.DOCKER_LINE % (b"%s", b"stdout", b"%s")
_DOCKER_OPEN, _DOCKER_SEP, _DOCKER_END = _DOCKER_STDOUT_LINE.split(b"%s")
_DOCKER_CLOSE = _DOCKER_END.removesuffix(b"\n")
_DOCKER_NEXT = _DOCKER_END + _DOCKER_OPEN
# The common CRI record: every line `<time> stdout F <content>`, as containerd writes a
# full stdout line. Also split with bulk byte operations.
_CRI_SEP = b" %s " % wire_columns.CRI_KINDS[b"o"]
_KIND = {
    **{(stream, b""): kind for kind, stream in wire_columns.DOCKER_KINDS.items()},
    **{tuple(tagged.split(b" ")): kind for kind, tagged in wire_columns.CRI_KINDS.items()},
}


def columns(lines: bytes) -> tuple[bytes, bytes]:
    """(`enc`, column body) for complete, newline-terminated `lines` (module docstring)."""
    return ENC_TRANSPOSED_COLUMNS, b"\n".join(column_sections(lines))


def column_sections(lines: bytes) -> list[bytes]:
    """The column body's sections, b"" last: joined with LF they are the body. (Joined once
    with the header in front: every copy of a megabyte costs page faults.)"""
    body = lines[:-1]
    kinds, times, texts = (
        _docker_stdout_columns(body) or _cri_stdout_columns(body) or _mixed_columns(body)
    )
    return [kinds, *wire_columns.transposed(times), *texts, b""]


Sections = tuple[bytes, list[bytes], list[bytes]]  # kinds, times, texts


def _docker_stdout_columns(body: bytes) -> Sections | None:
    """Columns of a body whose every line is `{"log":"L","stream":"stdout","time":"T"}`.

    With each line boundary `"}\n{"log":"` replaced by the stream separator, splitting at
    the separator leaves L1, T1, L2, T2, ... Whether it did is checked by building the lines
    back from them exactly as the transform will, and no part may hold a newline: a body
    of any other shape fails the check.
    """
    if not (body.startswith(_DOCKER_OPEN) and body.endswith(_DOCKER_CLOSE)):
        return None
    inner = body[len(_DOCKER_OPEN) : -len(_DOCKER_CLOSE)]
    parts = inner.replace(_DOCKER_NEXT, _DOCKER_SEP).split(_DOCKER_SEP)
    texts, times = parts[0::2], parts[1::2]
    if (
        len(texts) != len(times)  # a line without its stream and time
        or inner.count(b"\n") != len(texts) - 1  # a line boundary of another shape
        or _DOCKER_NEXT.join(map(_DOCKER_SEP.join, zip(texts, times, strict=False))) != inner
    ):
        return None  # ... or an odd count of parts, or a line with no separator or two
    return b"d" * len(texts), times, texts


def _cri_stdout_columns(body: bytes) -> Sections | None:
    """Columns of a body whose every line is `<time> stdout F <content>` (time: no space).

    With each line feed replaced by the separator ` stdout F `, splitting at it leaves T1,
    C1, T2, C2, ... It did when the lines built back from them, as the transform will, are
    the body, no time is empty or holds a space (as `_mixed_columns` requires of a CRI
    time) and none starts with `{` (the line could be a Docker entry): a body of any other
    shape fails. The body is scanned three times (split, rebuild, compare): a scan costs
    ~0.1 µs a line, the regular expression of `_mixed_columns` ~1 µs.

    >>> _cri_stdout_columns(b"T1 stdout F a b\\nT2 stdout F  c")
    (b'oo', [b'T1', b'T2'], [b'a b', b' c'])
    >>> _cri_stdout_columns(b"T1 stdout F a stdout F b\\nT2 stderr F c") is None
    True
    """
    if _CRI_SEP not in body[: body.find(b"\n")]:
        return None  # not even the first line
    parts = body.replace(b"\n", _CRI_SEP).split(_CRI_SEP)
    times, texts = parts[0::2], parts[1::2]
    if len(times) != len(texts):
        return None
    joined = b"\n".join(times)
    if (
        b" " in joined
        or joined.startswith(b"{")
        or b"\n{" in joined
        or not all(times)
        or b"\n".join(map(_CRI_SEP.join, zip(times, texts, strict=True))) != body
    ):
        return None
    return b"o" * len(texts), times, texts


def _mixed_columns(body: bytes) -> Sections:
    kinds, times, texts = [], [], []
    for log, d_stream, d_time, c_time, c_stream, tag, content, raw in _LINE.findall(body):
        if d_stream:
            kinds.append(_KIND[d_stream, b""])
            times.append(d_time)
            texts.append(log)
        elif c_stream:
            kinds.append(_KIND[c_stream, tag])
            times.append(c_time)
            texts.append(content)
        else:
            kinds.append(wire_columns.RAW_KIND)
            texts.append(raw)
    return b"".join(kinds), times, texts


class RecordEncoder:
    """Turns a file's header and lines into one record's bytes."""

    def __init__(
        self,
        compression: str,
        gzip_level: int,
        zstd_level: int,
        record_bytes: int = 1 << 20,
        catch_up_level: int | None = None,
    ) -> None:
        self.compression = compression
        self.gzip_level = gzip_level
        self.zstd_level = zstd_level
        self.catch_up_level = catch_up_level or zstd_level
        self.catching_up = False  # compress at catch_up_level: the forwarder is behind
        self._zstd = _compressor(zstd_level, record_bytes)
        # zstd allocates a context's tables at its first frame: unused, this one costs ~5 KB.
        self._zstd_fast = _compressor(self.catch_up_level, record_bytes)

    @property
    def level(self) -> int:
        """The zstd level records are compressed at now."""
        return self.catch_up_level if self.catching_up else self.zstd_level

    def header(self, src: str) -> bytes:
        """The header line for a record of file `src` (`encode` adds the encoding)."""
        return source_header(src)

    def encode(self, head: bytes, lines: bytes) -> bytes:
        """One record: `head` plus `lines` (complete lines), encoded and compressed."""
        return self.encode_counted(head, lines)[0]

    def encode_counted(self, head: bytes, lines: bytes) -> tuple[bytes, int]:
        """(the record `encode` makes, the number of lines in it: the column split counts
        them anyway)."""
        if self.compression == "zstd":
            head = with_field(head, ENC, ENC_TRANSPOSED_COLUMNS)
            kinds, *sections = column_sections(lines)
            return self._compress([head, kinds, b"\n", b"\n".join(sections)]), len(kinds)
        if self.compression == "gzip":
            packed = zlib.compress(head + lines, self.gzip_level, wbits=GZIP_WBITS)
            return packed, lines.count(b"\n")
        return head + lines, lines.count(b"\n")

    def _compress(self, parts: list[bytes]) -> bytes:
        """One zstd frame of `parts` joined, streamed: the one-shot API writes into a buffer
        as large as its input (a megabyte per record, then shrunk in place, which leaves
        the heap fragmented); streaming makes 128 KiB pieces and one right-sized result.
        Same frame, same speed."""
        zstd = self._zstd_fast if self.catching_up else self._zstd
        stream = zstd.compressobj(size=sum(map(len, parts)))
        return b"".join([*map(stream.compress, parts), stream.flush()])


def _compressor(level: int, record_bytes: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(compression_params=zstd_parameters(level, record_bytes))


def zstd_parameters(level: int, record_bytes: int = 1 << 20) -> zstandard.ZstdCompressionParameters:
    """zstd's parameters for `level` (frames with content size and checksum), with matches
    of at least 6 bytes from level 3 up, and tables sized for records of `record_bytes`.

    zstd's own tables take 5 bytes from level 3 on; on log lines 6 finds fewer short,
    costly matches inside numbers and ids. Measured at level 6 on 1 MiB column bodies of the
    testkit/shapes.py shapes: 0-6 % fewer billed bytes (no shape worse) at the same speed.

    The window never exceeds a record (a record is one frame), and the hash and chain
    tables are capped at 2^16 and 2^15 entries (level 6 has 2^19 and 2^18): the context
    takes ~2 MB less and compresses ~20 % faster, for the same billed bytes on every shape
    (measured at level 6 on 1 MiB bodies; docs/forwarder.md, "Memory").

    >>> p = zstd_parameters(6)
    >>> p.window_log, p.hash_log, p.chain_log, p.min_match
    (20, 16, 15, 6)
    """
    frame = {"write_content_size": 1, "write_checksum": 1}
    if level >= 3:
        frame["min_match"] = 6
    own = zstandard.ZstdCompressionParameters.from_level(level)
    window = max(ZSTD_MIN_WINDOW_LOG, (record_bytes - 1).bit_length())
    return zstandard.ZstdCompressionParameters.from_level(
        level,
        window_log=min(own.window_log, window),
        hash_log=min(own.hash_log, ZSTD_MAX_HASH_LOG),
        chain_log=min(own.chain_log, ZSTD_MAX_CHAIN_LOG),
        **frame,
    )
