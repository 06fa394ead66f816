"""How a record's bytes are compressed on the wire: gzip or zstd, told apart by magic bytes;
and gzip data read back within a bound (records here, Firehose's error objects in redrive).

A record is ``compress(header + body)`` (docs/architecture.md, "Record wire format"); data
with neither magic is read as it is (``--compression none``).

    >>> gzip_or_zstd = (GZIP_MAGIC, ZSTD_MAGIC)
    >>> import gzip; gzip.compress(b"x").startswith(gzip_or_zstd)
    True
    >>> gunzip_members(gzip.compress(b"a") + b"\\0\\0" + gzip.compress(b"b"), room=10)
    b'ab'
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: zlib's window bits for a gzip member with its header and CRC.
GZIP_WBITS = 31


class GunzipError(ValueError):
    """gzip data that is not whole gzip members (the decompressor's own error aside)."""


class GunzipTooLargeError(GunzipError):
    """gzip data that decompresses to more than it may."""


def gunzip_members(
    data: bytes, room: int, decompressobj: Callable[..., Any] = zlib.decompressobj
) -> bytes:
    """gzip.decompress's result (every member; zero padding between them allowed), refusing
    more than ``room`` bytes of output without making them. ``decompressobj``: zlib's, or a
    compatible faster one (ISA-L's); its own error is raised as it is."""
    members = []
    left = room
    while data:
        if not data.startswith(GZIP_MAGIC):
            raise GunzipError("not a gzip member after the last")
        inflater = decompressobj(wbits=GZIP_WBITS)
        members.append(inflater.decompress(data, left + 1))
        left -= len(members[-1])
        if left < 0 or inflater.unconsumed_tail:
            raise GunzipTooLargeError(f"more than {room} bytes")
        if not inflater.eof:
            raise GunzipError("truncated")
        data = inflater.unused_data.lstrip(b"\x00")
    return b"".join(members)
