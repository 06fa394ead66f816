"""Encoder of the podhose/1 record wire format (see README.md, "Record wire format")."""

from __future__ import annotations

import zlib

GZIP_WBITS = 31  # zlib wbits value that selects the gzip container
_FORBIDDEN = (" ", "=", "\n")


def header(src: str) -> bytes:
    """The header line for lines of file `src`, or b'' when the name cannot be carried."""
    if not src or any(ch in src for ch in _FORBIDDEN):
        return b""
    return b"\x1epodhose/1 src=" + src.encode("utf-8", "surrogateescape") + b"\n"


def encode(head: bytes, lines: bytes, gzip_level: int | None) -> bytes:
    """One record: header plus complete lines, gzip-compressed unless gzip_level is None."""
    payload = head + lines
    if gzip_level is None:
        return payload
    return zlib.compress(payload, gzip_level, wbits=GZIP_WBITS)
