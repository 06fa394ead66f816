"""The record header line: ``0x1E "podhose/1" (" " key "=" value)* "\\n"`` (docs/architecture.md,
"Record wire format").

    >>> head = source_header("web-1_prod_app-" + "a" * 64 + ".log")
    >>> fields, body = split(with_field(head, ENC, b"cols2") + b"line\\n")
    >>> fields[ENC], body
    ('cols2', b'line\\n')
    >>> source_header("a b.log"), split(b"line\\n")
    (b'', (None, b'line\\n'))
"""

from __future__ import annotations

from collections.abc import Mapping

MAGIC = b"\x1epodhose/1"
SRC = "src"  # the kubelet file name the lines come from (kubelet_name.py)
ENC = "enc"  # how the lines are encoded (columns.py); absent: as they are
K8S = "k8s"  # the pod's metadata, base64url JSON without padding (forwarder --kubernetes-metadata)
ATTEMPT = "n"  # re-ingest attempt, set by the transform (absent: 0)
#: What a value may not contain: it would end the field, the pair or the line.
FORBIDDEN = (" ", "=", "\n")


def carries(value: str) -> bool:
    """A non-empty `value` the header can hold.

    >>> carries("x.log"), carries("a=b"), carries("")
    (True, False, False)
    """
    return bool(value) and not any(ch in value for ch in FORBIDDEN)


def source_header(src: str) -> bytes:
    """The header line for lines of file `src` (b'' when the name cannot be carried)."""
    if not carries(src):
        return b""
    return MAGIC + b" " + SRC.encode() + b"=" + src.encode("utf-8", "surrogateescape") + b"\n"


def with_field(head: bytes, key: str, value: bytes) -> bytes:
    """`head` (a header line, or b'' for a header of this field alone) with `key=value` added."""
    return (head[:-1] if head else MAGIC) + b" " + key.encode() + b"=" + value + b"\n"


def encode(fields: Mapping[str, str]) -> bytes:
    """The header line of `fields`, newline included."""
    pairs = "".join(f" {key}={value}" for key, value in fields.items())
    return MAGIC + pairs.encode() + b"\n"


def split(payload: bytes) -> tuple[dict[str, str] | None, bytes]:
    """(the header's fields, or None without a header; the lines) of a decompressed payload.
    Every ``key=value`` pair is kept, known or not; a pair without ``=`` is ignored."""
    if not payload.startswith(MAGIC):
        return None, payload
    end = payload.find(b"\n")
    line = payload[len(MAGIC) : end if end >= 0 else len(payload)]
    body = payload[end + 1 :] if end >= 0 else b""
    fields: dict[str, str] = {}
    for pair in line.decode("utf-8", "replace").split():
        key, sep, value = pair.partition("=")
        if sep:
            fields[key] = value
    return fields, body


def short_number(text: str) -> int | None:
    """A header number: 1-9 ASCII digits, else None (``isdigit`` alone accepts ``²``, and
    thousands of digits would exceed Python's int conversion limit).

    >>> short_number("3"), short_number("²"), short_number("9" * 5000), short_number("")
    (3, None, None, None)
    """
    if 0 < len(text) <= 9 and text.isascii() and text.isdigit():
        return int(text)
    return None
