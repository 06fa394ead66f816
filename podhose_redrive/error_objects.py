"""Firehose's error objects: JSON lines, gzip or not, each with an original record base64 in
``rawData`` (podhose_redrive's docstring)."""

from __future__ import annotations

import base64
import binascii
import json
import zlib

from podhose_wire.compression import GZIP_MAGIC, GZIP_WBITS

MAX_OBJECT_BYTES = 256 * 1024 * 1024  # an error object, stored or decompressed


class UnreadableObjectError(ValueError):
    """An error object that is not Firehose's error-record JSON lines."""


def read_error_records(body: bytes) -> tuple[list[bytes], list[str]]:
    """(the original records (rawData) of one error object, gzip-compressed or not, what is
    wrong with each line that cannot be read); raise UnreadableObjectError when the object as
    a whole cannot be read (corrupt gzip, over MAX_OBJECT_BYTES decompressed)."""
    if body.startswith(GZIP_MAGIC):
        body = gunzip(body)
    records, problems = [], []
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            records.append(base64.b64decode(entry["rawData"], validate=True))
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as error:
            problems.append(f"line {number}: {type(error).__name__}: {str(error)[:200]}")
    return records, problems


def gunzip(body: bytes) -> bytes:
    """Every gzip member of `body`, refusing more than MAX_OBJECT_BYTES."""
    out, left = [], MAX_OBJECT_BYTES
    try:
        while body:
            inflater = zlib.decompressobj(wbits=GZIP_WBITS)
            out.append(inflater.decompress(body, left + 1))
            left -= len(out[-1])
            if left < 0 or inflater.unconsumed_tail:
                raise UnreadableObjectError(f"decompresses to over {MAX_OBJECT_BYTES} bytes")
            if not inflater.eof:
                raise UnreadableObjectError("corrupt gzip: truncated")
            body = inflater.unused_data.lstrip(b"\x00")
    except zlib.error as error:
        raise UnreadableObjectError(f"corrupt gzip: {error}") from None
    return b"".join(out)
