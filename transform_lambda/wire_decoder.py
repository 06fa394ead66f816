"""The record wire format: an optional source header line before the raw log lines.

See docs/architecture.md, "Record wire format". A record may start with::

    \\x1epodhose/1 src=<pod>_<namespace>_<container>-<containerid>.log\\n

Records without it (raw lines from Fluent Bit, the Kinesis Agent, ...) are unchanged.

Example:
    >>> header, body = split_header(b"\\x1epodhose/1 src=web-1_prod_app-" + b"a" * 64
    ...                             + b".log\\nline\\n")
    >>> header.source.namespace, body
    ('prod', b'line\\n')
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transform_lambda import jsoncodec

HEADER_MAGIC = b"\x1epodhose/1"
ENC_COLUMNS = "cols1"  # times as they are
ENC_TRANSPOSED_COLUMNS = "cols2"  # times transposed
_MAX_TIME_WIDTH = 4096
_DOCKER = {b"d": b"stdout", b"D": b"stderr"}
_CRI = {b"o": b"stdout F", b"e": b"stderr F", b"p": b"stdout P", b"q": b"stderr P"}
_DOCKER_STDOUT = b'{"log":"%s","stream":"stdout","time":"%s"}\n'
_DOCKER_LINE = b'{"log":"%s","stream":"%s","time":"%s"}\n'


#: PODHOSE_PARTITION_KEYS entry for a pod label (needs the forwarder's --kubernetes-metadata).
LABEL_KEY_PREFIX = "label:"


class WireFormatError(ValueError):
    """A record that claims the podhose wire format but does not follow it."""


# kubelet's /var/log/containers naming, as Fluent Bit's kubernetes filter reads it.
_KUBELET_NAME = re.compile(
    r"^(?P<pod>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*)"
    r"_(?P<namespace>[^_]+)_(?P<container>.+)-(?P<container_id>[a-z0-9]{64})\.log$"
)


@dataclass(frozen=True, slots=True)
class KubernetesSource:
    """Where a record's lines come from, parsed from the kubelet file name."""

    namespace: str
    pod: str
    container: str
    container_id: str

    @classmethod
    def from_filename(cls, name: str) -> KubernetesSource | None:
        """Parse ``<pod>_<namespace>_<container>-<id>.log``; None if it does not match."""
        match = _KUBELET_NAME.match(name)
        if match is None:
            return None
        return cls(**match.groupdict())

    def as_metadata(self) -> dict[str, str]:
        """The ``kubernetes`` object added to each line (Fluent Bit's key names)."""
        return {
            "namespace_name": self.namespace,
            "pod_name": self.pod,
            "container_name": self.container,
            "docker_id": self.container_id,
        }

    def partition_value(self, key: str) -> str:
        """The value of one dynamic-partitioning key (see settings.PARTITION_KEY_NAMES)."""
        return str(getattr(self, key))


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """The parsed header line; ``fields`` keeps every key, known or not."""

    fields: dict[str, str]

    @property
    def source_file(self) -> str | None:
        return self.fields.get("src")

    @property
    def source(self) -> KubernetesSource | None:
        name = self.source_file
        return KubernetesSource.from_filename(name) if name else None

    @property
    def pod_metadata(self) -> dict[str, Any] | None:
        """What the forwarder's ``--kubernetes-metadata`` put in ``k8s=`` (``pod_id``,
        ``host``, ``labels``, ``annotations``), or None (absent or unreadable)."""
        raw = self.fields.get("k8s")
        if not raw:
            return None
        try:
            value = jsoncodec.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (ValueError, *jsoncodec.DECODE_ERRORS):
            return None
        return value if isinstance(value, dict) else None

    def kubernetes(self) -> dict[str, Any] | None:
        """The ``kubernetes`` object for this record's lines: the file name's fields plus
        the pod metadata, in Fluent Bit's key names; None without a kubelet file name."""
        source = self.source
        if source is None:
            return None
        return {**source.as_metadata(), **(self.pod_metadata or {})}

    def partition_value(self, key: str) -> str | None:
        """A dynamic-partitioning key's value: a file-name field, or ``label:<name>``."""
        if key.startswith(LABEL_KEY_PREFIX):
            labels = (self.pod_metadata or {}).get("labels") or {}
            value = labels.get(key.removeprefix(LABEL_KEY_PREFIX))
            return value if isinstance(value, str) else None
        source = self.source
        return source.partition_value(key) if source is not None else None

    @property
    def attempt(self) -> int:
        """Re-ingest attempt number (0 for a record straight from a forwarder)."""
        return short_number(self.fields.get("n", "0")) or 0

    def encode(self) -> bytes:
        """The header line, newline included."""
        pairs = "".join(f" {key}={value}" for key, value in self.fields.items())
        return HEADER_MAGIC + pairs.encode() + b"\n"

    def with_attempt(self, attempt: int) -> RecordHeader:
        return RecordHeader({**self.fields, "n": str(attempt)})


def expand(payload: bytes) -> bytes:
    """The payload with its lines as the files held them: a column body (``enc=cols2`` or
    ``cols1``) is rebuilt byte for byte and the header loses its ``enc``; other payloads are
    returned as they are. Raises WireFormatError for an unknown encoding or a corrupt column body.
    """
    if not payload.startswith(HEADER_MAGIC):
        return payload
    header, body = split_header(payload)
    assert header is not None
    if "enc" not in header.fields:
        return payload
    header, columns = read_encoded(header, body)
    return (header.encode() if header else b"") + columns.lines()


def read_encoded(header: RecordHeader, body: bytes) -> tuple[RecordHeader | None, Columns]:
    """(the header without ``enc``, or None when nothing else is left; the columns) of a
    record whose header names an encoding; raise WireFormatError for an unknown one."""
    enc = header.fields.get("enc")
    if enc not in (ENC_COLUMNS, ENC_TRANSPOSED_COLUMNS):
        raise WireFormatError(f"unknown record encoding enc={enc}")
    fields = {key: value for key, value in header.fields.items() if key != "enc"}
    return (RecordHeader(fields) if fields else None), Columns.read(
        body, transposed=enc == ENC_TRANSPOSED_COLUMNS
    )


class Columns:
    """A column body read apart (forwarder/wire_encoder.py writes it): one kind byte per
    line, the time of each line that has one, the text of each line. A ``cols2`` body's times are
    put back in order only when asked for (the seed's output needs only the texts)."""

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
        if end < 0 or kinds.translate(None, b"dDoepqr"):
            raise WireFormatError("corrupt column body")
        enveloped = len(kinds) - kinds.count(b"r")
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
        if width is None or width > _MAX_TIME_WIDTH:
            raise WireFormatError("corrupt column body: bad time width")
        start, stop = end + 1, end + 1 + width * enveloped
        texts = rest[stop + 1 :].split(b"\n")
        if rest[stop : stop + 1] != b"\n" or texts.pop() != b"" or len(texts) != len(kinds):
            raise WireFormatError("corrupt column body: sections do not match the kinds")
        return cls(kinds, texts, None, width, rest[start:stop])

    @property
    def _enveloped(self) -> int:
        return len(self.kinds) - self.kinds.count(b"r")

    @property
    def times(self) -> list[bytes]:
        """The time of every line that has one, as the runtime wrote it."""
        if self._times is None:
            self._times = _untransposed(self._block, self._width, self._enveloped)
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
        return not self.kinds.translate(None, b"dD")

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


def _untransposed(block: bytes, width: int, count: int) -> list[bytes]:
    """The `count` times of a ``cols2`` block: W slices put them back side by side.

    >>> _untransposed(b"1100::0000::0011..57Z5\\nZ", 12, 2)
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


def _line(kind: bytes, text: bytes, next_time: Callable[[], bytes]) -> bytes:
    if kind == b"r":
        return text + b"\n"
    if kind in _DOCKER:
        return _DOCKER_LINE % (text, _DOCKER[kind], next_time())
    return b"%s %s %s\n" % (next_time(), _CRI[kind], text)


def decode_columns(body: bytes, enc: str = ENC_COLUMNS) -> bytes:
    """Rebuild newline-terminated lines from a column body of encoding `enc`.

    >>> decode_columns(b'dr\\nT1\\nhi\\\\n\\nplain\\n')
    b'{"log":"hi\\\\n","stream":"stdout","time":"T1"}\\nplain\\n'
    """
    return Columns.read(body, transposed=enc == ENC_TRANSPOSED_COLUMNS).lines()


def short_number(text: str) -> int | None:
    """A header number: 1-9 ASCII digits, else None (``isdigit`` alone accepts ``²``, and
    thousands of digits would exceed Python's int conversion limit).

    >>> short_number("3"), short_number("²"), short_number("9" * 5000), short_number("")
    (3, None, None, None)
    """
    if 0 < len(text) <= 9 and text.isascii() and text.isdigit():
        return int(text)
    return None


def split_header(payload: bytes) -> tuple[RecordHeader | None, bytes]:
    """Split a (decompressed) record payload into its header, if any, and its lines."""
    if not payload.startswith(HEADER_MAGIC):
        return None, payload
    end = payload.find(b"\n")
    line = payload[len(HEADER_MAGIC) : end if end >= 0 else len(payload)]
    body = payload[end + 1 :] if end >= 0 else b""
    fields: dict[str, str] = {}
    for pair in line.decode("utf-8", "replace").split():
        key, sep, value = pair.partition("=")
        if sep:
            fields[key] = value
    return RecordHeader(fields), body
