"""How a record's bytes are compressed on the wire: gzip or zstd, told apart by magic bytes.

A record is ``compress(header + body)`` (docs/architecture.md, "Record wire format"); data
with neither magic is read as it is (``--compression none``).

    >>> gzip_or_zstd = (GZIP_MAGIC, ZSTD_MAGIC)
    >>> import gzip; gzip.compress(b"x").startswith(gzip_or_zstd)
    True
"""

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: zlib's window bits for a gzip member with its header and CRC.
GZIP_WBITS = 31
