"""Firehose's error objects: JSON lines, gzip or not, each with an original record base64 in
``rawData`` (podhose_redrive's docstring)."""

from __future__ import annotations

import base64
import binascii
import json
import zlib

from podhose_wire.compression import (
    GZIP_MAGIC,
    GunzipError,
    GunzipTooLargeError,
    gunzip_members,
)

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
    try:
        return gunzip_members(body, MAX_OBJECT_BYTES)
    except GunzipTooLargeError:
        raise UnreadableObjectError(f"decompresses to over {MAX_OBJECT_BYTES} bytes") from None
    except (GunzipError, zlib.error) as error:
        raise UnreadableObjectError(f"corrupt gzip: {error}") from None
