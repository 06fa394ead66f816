"""Decompression of a record's data, bounded so a compression bomb cannot exhaust memory.

gzip and zstd are detected by their magic bytes (``1f 8b``, ``28 b5 2f fd``); other data
is returned as it is. A record may decompress to at most the smallest of the limits
``Allowance.room_for`` lists (docs/transform.md, "Decompression limits").

Example:
    >>> import gzip
    >>> Allowance(800_000).decompress(gzip.compress(b"line\\n"))
    b'line\\n'
    >>> decompress(b"plain\\n")
    b'plain\\n'
"""

from __future__ import annotations

import zstandard
from isal import isal_zlib

from podhose_wire.columns import WireFormatError
from podhose_wire.compression import (
    GZIP_MAGIC,
    ZSTD_MAGIC,
    GunzipError,
    GunzipTooLargeError,
    gunzip_members,
)
from transform_lambda.result import RecordUnreadableError
from transform_lambda.wire_decoder import expand

#: Largest decompressed record accepted (the forwarder writes at most 64 MiB a record).
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024 + 4096
#: Most a record may expand when decompressed: legitimate log records stay far below it
#: (10-30x, a few hundred for one line repeated); a compression bomb does not.
MAX_EXPANSION = 5000
RECORD_SHARE = 8  # one record may decompress to at most this part of the invocation's budget
ZSTD_READ_BYTES = 4 * 1024 * 1024  # per read of a record of several zstd frames


class TooLargeError(RecordUnreadableError):
    """The record decompresses to more than it may (a bomb, or the invocation's budget)."""


class Allowance:
    """How many decompressed bytes one invocation may still make, so a few small records
    that expand enormously are refused instead of exhausting the Lambda's memory.

    >>> allowance = Allowance(800_000)
    >>> allowance.room_for(10)[0], allowance.room_for(1_000)[0]
    (50000, 100000)
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def room_for(self, compressed: int) -> tuple[int, str]:
        """(most bytes a record of `compressed` bytes may decompress to, the limit's name)."""
        return min(
            (MAX_PAYLOAD_BYTES, f"a record's limit of {MAX_PAYLOAD_BYTES} bytes"),
            (MAX_EXPANSION * max(compressed, 1), f"{MAX_EXPANSION}x its compressed size"),
            (max(self.left, 0), f"the invocation's {self.total} decompressed bytes"),
            # One record's output can be ~6x its text (control characters escaped): an
            # eighth of the budget keeps even that within the memory.
            (self.total // RECORD_SHARE, f"1/{RECORD_SHARE} of the invocation's {self.total}"),
        )

    def spend(self, size: int) -> None:
        """A record decompressed to `size` bytes."""
        self.left -= size

    def decompress(self, data: bytes) -> bytes:
        """One record's data decompressed within what is left; raise TooLargeError (naming
        the limit) beyond it, RecordUnreadableError when the data is corrupt."""
        room, limit = self.room_for(len(data))
        try:
            payload = decompress(data, room)
        except TooLargeError as error:
            raise TooLargeError(f"{error}: over {limit}") from None
        self.spend(len(payload) if payload is not data else 0)
        return payload


def decode_payload(data: bytes) -> bytes:
    """The record's payload as the forwarder read it: gunzipped or un-zstd'ed (detected by
    the magic bytes), column bodies rebuilt into lines (wire_decoder.expand); raise
    RecordUnreadableError when that is impossible."""
    try:
        return expand(decompress(data))
    except WireFormatError as error:
        raise RecordUnreadableError(str(error)) from None


def decompress(data: bytes, room: int | None = None) -> bytes:
    """Gunzip or un-zstd ``data`` when it starts with their magic bytes; refuse (raise
    RecordUnreadableError) more than ``room`` bytes of output (MAX_PAYLOAD_BYTES)."""
    room = MAX_PAYLOAD_BYTES if room is None else room
    if data.startswith(GZIP_MAGIC):
        try:  # ISA-L: about twice zlib's speed
            data = gunzip_members(data, room, isal_zlib.decompressobj)
        except GunzipTooLargeError:
            raise TooLargeError(f"gzip data of more than {room} bytes") from None
        except (GunzipError, isal_zlib.error) as error:
            raise RecordUnreadableError(f"corrupt gzip data: {error}") from None
    elif data.startswith(ZSTD_MAGIC):
        data = _unzstd(data, room)
    return data


def _unzstd(data: bytes, room: int) -> bytes:
    """Every frame of ``data`` (the forwarder writes one; zstd allows several), refusing more
    than ``room`` bytes: one frame of a declared size in one call, else in bounded reads."""
    try:
        size = zstandard.frame_content_size(data)
        if size < 0 or size > room:
            raise TooLargeError(f"zstd frame of unknown or excessive size ({size})")
        return zstandard.ZstdDecompressor().decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as error:
        if "unused data" not in str(error):
            raise RecordUnreadableError(f"corrupt zstd data: {error}") from None
    return _unzstd_frames(data, room)


def _unzstd_frames(data: bytes, room: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    parts, size = [], 0
    try:
        while piece := reader.read(min(room + 1 - size, ZSTD_READ_BYTES)):
            parts.append(piece)
            size += len(piece)
            if size > room:
                raise TooLargeError(f"zstd data of more than {room} bytes")
    except zstandard.ZstdError as error:
        raise RecordUnreadableError(f"corrupt zstd data: {error}") from None
    return b"".join(parts)
