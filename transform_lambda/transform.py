"""The pure transformation of one Firehose record: no AWS, no Powertools.

A record's data is one or more newline-separated log-file lines, optionally gzip- or
zstd-compressed (a podhose column body is rebuilt into its lines) and optionally led by a
podhose source header (docs/architecture.md, "Record wire format").
Each line goes through the seed Fluent Bit pipeline's steps (see settings.py):

1. parse the envelope (Docker json-file or CRI, detected per line; partials joined);
2. decode ``log`` when it holds a JSON object;
3. keep only the listed keys;
4. lift the map under the lift key to the top level;

then optionally gets Kubernetes metadata, and is written as one compact JSON line.

Example:
    >>> line = (b'{"log":"{\\\\"name\\\\": \\\\"fakenerd\\\\", '
    ...         b'\\\\"time_ms\\\\": 1577622109635}\\\\n",'
    ...         b'"stream":"stdout","time":"2019-12-28T08:19:53.704659587Z"}\\n')
    >>> transform_record(line, TransformSettings()).data
    b'{"name":"fakenerd","time_ms":1577622109635}\\n'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from operator import methodcaller
from typing import Any

import zstandard
from isal import isal_zlib

from podhose_wire.columns import Columns, WireFormatError
from transform_lambda import fastpath, multiline
from transform_lambda.envelope import (
    Entry,
    parse_lines,
    strip_terminator,
    text_entry,
)
from transform_lambda.jsoncodec import decode_object, dumps_line
from transform_lambda.settings import TransformSettings
from transform_lambda.wire_decoder import RecordHeader, expand, read_encoded, split_header

GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 31  # zlib's window bits for a gzip member with its header and CRC
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Largest decompressed record accepted (the forwarder writes at most 64 MiB a record).
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024 + 4096
#: Most a record may expand when decompressed: legitimate log records stay far below it
#: (10-30x, a few hundred for one line repeated); a compression bomb does not.
MAX_EXPANSION = 5000
RECORD_SHARE = 8  # one record may decompress to at most this part of the invocation's budget
ZSTD_READ_BYTES = 4 * 1024 * 1024  # per read of a record of several zstd frames
_ends_with_newline = methodcaller("endswith", b"\n")
UNKNOWN_PARTITION = "unknown"
_NOT_KEY_CHARACTER = re.compile(r"[^A-Za-z0-9_]")


class RecordUnreadableError(ValueError):
    """The record's data cannot be read at all (for example a corrupt gzip stream)."""


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


@dataclass(slots=True)
class LineCounts:
    """What happened to a record's lines; every input line is accounted for."""

    lines_in: int = 0
    lines_out: int = 0
    decode_failures: int = 0
    invalid_utf8: int = 0
    unencodable: int = 0
    without_kept_keys: int = 0  # dropped: nothing was left to write (e.g. no ``log`` key)

    def add(self, other: LineCounts) -> None:
        self.lines_in += other.lines_in
        self.lines_out += other.lines_out
        self.decode_failures += other.decode_failures
        self.invalid_utf8 += other.invalid_utf8
        self.unencodable += other.unencodable
        self.without_kept_keys += other.without_kept_keys


@dataclass(slots=True)
class RecordResult:
    """The transformed record.

    Attributes:
        data: NDJSON, every line newline-terminated; empty when no line came out.
        counts: per-line accounting.
        header: the source header, if the record had one.
        body: the decompressed lines (without header), kept for re-ingesting; empty when
            ``columns`` holds them.
        partition_keys: Firehose dynamic-partitioning keys, when configured.
        columns: the record's column body, when it came in columns and was read from them.
    """

    data: bytes
    counts: LineCounts
    header: RecordHeader | None = None
    body: bytes = b""
    partition_keys: dict[str, str] | None = None
    columns: Columns | None = None

    def raw_lines(self) -> bytes:
        """The record's lines as the files held them (for re-ingesting)."""
        return self.columns.lines() if self.columns is not None else self.body


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
        try:
            data = _gunzip(data, room)
        except isal_zlib.error as error:
            raise RecordUnreadableError(f"corrupt gzip data: {error}") from None
    elif data.startswith(ZSTD_MAGIC):
        data = _unzstd(data, room)
    return data


def _gunzip(data: bytes, room: int) -> bytes:
    """gzip.decompress's result (every member; zero padding between them allowed), by ISA-L
    (about twice zlib's speed), refusing more than ``room`` bytes."""
    members = []
    limit = room
    while data:
        if not data.startswith(GZIP_MAGIC):
            raise RecordUnreadableError("corrupt gzip data: not a gzip member after the last")
        inflater = isal_zlib.decompressobj(wbits=GZIP_WBITS)
        members.append(inflater.decompress(data, room + 1))
        room -= len(members[-1])
        if room < 0 or inflater.unconsumed_tail:
            raise TooLargeError(f"gzip data of more than {limit} bytes")
        if not inflater.eof:
            raise RecordUnreadableError("corrupt gzip data: truncated")
        data = inflater.unused_data.lstrip(b"\x00")
    return b"".join(members)


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


def split_lines(body: bytes) -> list[bytes]:
    """Split on LF; an unterminated last line still counts as a line."""
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def transform_record(
    data: bytes, settings: TransformSettings, allowance: Allowance | None = None
) -> RecordResult:
    """Transform one record's (base64-decoded) data; raise RecordUnreadableError (also when
    it decompresses beyond what `allowance` leaves)."""
    allowance = allowance or Allowance(settings.decompressed_budget_bytes)
    room, limit = allowance.room_for(len(data))
    try:
        payload = decompress(data, room)
    except TooLargeError as error:
        raise TooLargeError(f"{error}: over {limit}") from None
    allowance.spend(len(payload) if payload is not data else 0)
    header, body = split_header(payload)
    columns, fast = None, None
    if header is not None and "enc" in header.fields:
        try:
            header, columns = read_encoded(header, body)
        except WireFormatError as error:
            raise RecordUnreadableError(str(error)) from None
        fast = _columns_output(columns, settings)
        if fast is None:  # not in bulk from the columns: read the rebuilt lines as usual
            body, columns = columns.lines(), None
    if fast is None:
        fast = _fast_output(_line_count(body), body, settings)
    if fast is None:
        fast = _general_output(split_lines(body), settings, header)
    output, counts = fast
    keys = _partition_keys(settings, header)
    body = b"" if columns is not None else body  # the columns hold the lines
    return RecordResult(output, counts, header, body, keys, columns)


def transform_records(
    datas: list[bytes], settings: TransformSettings
) -> list[RecordResult | RecordUnreadableError]:
    """Transform many records; one-line records are transformed together in bulk.

    Firehose senders that put one line per record (Fluent Bit, the Kinesis Agent, the
    forwarder's one-line mode) would otherwise pay the per-record setup thousands of
    times per invocation. The outcome is the same as ``transform_record`` on each.
    """
    bulk = _single_line_records(datas, settings)
    if bulk is not None:
        return bulk
    results: list[RecordResult | RecordUnreadableError] = []
    allowance = Allowance(settings.decompressed_budget_bytes)
    for data in datas:
        try:
            results.append(transform_record(data, settings, allowance))
        except RecordUnreadableError as error:
            results.append(error)
    return results


def _single_line_records(datas: list[bytes], settings: TransformSettings) -> list | None:
    if len(datas) < 2 or not settings.is_seed_pipeline or settings.partition_keys:
        return None
    joined = b"".join(datas)
    if joined.count(b"\n") != len(datas) or not all(map(_ends_with_newline, datas)):
        return None  # some record holds several lines, or none
    if b"\x1e" in joined or b"\x1f" in joined:
        return None  # a header or gzip data could start a record (one-byte searches are fast)
    # Each record is one line already; its trailing LF is what msgspec's decode_lines splits on.
    fast = _fast_output(len(datas), joined, settings, join=False)
    if fast is None:
        return None
    output, batch_counts = fast
    # The batch's counts are carried by its first record, so totals stay exact.
    rest = LineCounts()
    counts = [batch_counts] + [rest] * (len(datas) - 1)
    # msgspec escapes CR and LF in strings: LF is the only line boundary splitlines() meets.
    outputs = output.splitlines(keepends=True)
    return list(map(RecordResult, outputs, counts, repeat(None), datas))


def _line_count(body: bytes) -> int:
    """The lines split_lines would return, without splitting."""
    return body.count(b"\n") + (not body.endswith(b"\n"))


def _fast_output(
    line_count: int, body: bytes, settings: TransformSettings, *, join: bool = True
) -> tuple[bytes, LineCounts] | None:
    """The bulk path's output for the `line_count` lines of `body` (one output line per
    logical line: partial pieces joined), or None."""
    if not body or not settings.is_seed_pipeline:
        return None
    # One-line records (join=False) are transformed one by one elsewhere: a piece alone in
    # its record is a line of its own there.
    bulk = fastpath.docker_lines if body[:1] == b"{" else fastpath.cri_lines
    return _counted(line_count, bulk(line_count, body, join=join))


def _columns_output(
    columns: Columns, settings: TransformSettings
) -> tuple[bytes, LineCounts] | None:
    """The bulk path straight from a column body of Docker lines (the `log` strings are
    decoded from the texts column in one call) or of full CRI lines (the texts are the
    contents): no envelope is rebuilt or parsed."""
    if not columns.texts or not settings.is_seed_pipeline:
        return None
    if columns.all_docker:
        fast = fastpath.docker_texts(columns.texts)
    elif columns.all_cri_full and columns.times_start_with_digits:
        fast = fastpath.cri_texts(columns.texts)
    else:
        return None
    return _counted(len(columns.texts), fast)


def _counted(line_count: int, bulk: fastpath.Bulk | None) -> tuple[bytes, LineCounts] | None:
    if bulk is None:
        return None
    return bulk.ndjson, LineCounts(line_count, bulk.entries, bulk.decode_failures)


def _general_output(
    lines: list[bytes], settings: TransformSettings, header: RecordHeader | None
) -> tuple[bytes, LineCounts]:
    counts = LineCounts(lines_in=len(lines))
    if settings.parse_envelope:
        entries: Iterable[Entry] = parse_lines(lines)
    else:
        entries = (text_entry(strip_terminator(line)) for line in lines)
    if settings.multiline:
        join = multiline.joiner(
            settings.multiline, settings.multiline_start, settings.multiline_max_bytes
        )
        entries = join.join(entries)
    metadata = header.kubernetes() if header and settings.add_kubernetes_metadata else None
    out = [_render(entry, settings, metadata, counts) for entry in entries]
    counts.lines_out = len(out) - counts.without_kept_keys
    return b"".join(out), counts


def _render(
    entry: Entry,
    settings: TransformSettings,
    metadata: dict[str, str] | None,
    counts: LineCounts,
) -> bytes:
    counts.invalid_utf8 += entry.invalid_utf8
    fields = entry.fields
    if settings.keep_keys and not any(key in fields for key in settings.keep_keys):
        # Nothing would be left: Fluent Bit writes no `{}` for such an entry (in a batch it
        # drops it), so neither do we.
        counts.without_kept_keys += 1
        return b""
    log = fields.get("log")
    decoded = decode_object(log) if settings.decode_json and isinstance(log, str) else None
    if decoded is None and isinstance(log, str) and log.lstrip(" ").startswith("{"):
        counts.decode_failures += 1
    if decoded is not None:
        line = dumps_line(_reshape({**fields, "log": decoded}, settings, metadata))
        if line is not None:
            return line
        counts.unencodable += 1
    line = dumps_line(_reshape(fields, settings, metadata))
    if line is None:  # e.g. a kept envelope key nested deeper than JSON encoders allow
        counts.unencodable += 1
        # str(log) can only fail to encode by a lone surrogate (from the stdlib's lenient
        # read): written as U+FFFD rather than losing the line.
        text = str(log).encode("utf-8", "replace").decode("utf-8")
        line = dumps_line({"log": text}) or b""
    return line


def _reshape(
    fields: dict[str, Any], settings: TransformSettings, metadata: dict[str, str] | None
) -> dict[str, Any]:
    """Steps 3 and 4 plus metadata: keep, lift, add ``kubernetes``."""
    if settings.keep_keys:
        fields = {key: value for key, value in fields.items() if key in settings.keep_keys}
    lifted = fields.get(settings.lift_key) if settings.lift_key else None
    if isinstance(lifted, dict):
        # The lifted keys win over same-named outer keys, as in Fluent Bit's output.
        outer = {k: v for k, v in fields.items() if k != settings.lift_key and k not in lifted}
        fields = outer | lifted
    if metadata is not None and "kubernetes" not in fields:
        fields = fields | {"kubernetes": metadata}
    return fields


def _partition_keys(
    settings: TransformSettings, header: RecordHeader | None
) -> dict[str, str] | None:
    if not settings.partition_keys:
        return None
    return {
        partition_key_name(key): (header.partition_value(key) if header else None)
        or UNKNOWN_PARTITION
        for key in settings.partition_keys
    }


def partition_key_name(key: str) -> str:
    """The key name Firehose sees: ``label:app.kubernetes.io/name`` ->
    ``label_app_kubernetes_io_name``; the other keys as they are."""
    return _NOT_KEY_CHARACTER.sub("_", key)
