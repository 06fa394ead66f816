"""What transforming a record gives: its output and line counts, or why it has none.

Example:
    >>> totals = LineCounts()
    >>> totals.add(LineCounts(lines_in=3, lines_out=2))
    >>> totals.lines_in, totals.lines_out
    (3, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

from podhose_wire.columns import Columns
from transform_lambda.wire_decoder import RecordHeader


class RecordUnreadableError(ValueError):
    """The record's data cannot be read at all (for example a corrupt gzip stream)."""


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


#: A record's transformed lines: (NDJSON, every line newline-terminated; their counts).
Output = tuple[bytes, LineCounts]


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
