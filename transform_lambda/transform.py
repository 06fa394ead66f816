"""The transformation of a Firehose event's records: no AWS, no Powertools.

A record's data is one or more newline-separated log-file lines, optionally gzip- or
zstd-compressed (a podhose column body is rebuilt into its lines) and optionally led by a
podhose source header (docs/architecture.md, "Record wire format"). This module drives
the steps of each record, settings going down:

1. decompress, within the invocation's allowance (decompress.py);
2. split off the source header and read a column body (wire_decoder.py);
3. transform the lines, in bulk or line by line (path_choice.py, bulk.py, render.py):
   each line becomes one compact JSON line, as the seed Fluent Bit pipeline writes it;
4. name the record's dynamic-partitioning keys (partitioning.py).

Example:
    >>> line = (b'{"log":"{\\\\"name\\\\": \\\\"fakenerd\\\\", '
    ...         b'\\\\"time_ms\\\\": 1577622109635}\\\\n",'
    ...         b'"stream":"stdout","time":"2019-12-28T08:19:53.704659587Z"}\\n')
    >>> transform_record(line, TransformSettings()).data
    b'{"name":"fakenerd","time_ms":1577622109635}\\n'
    >>> [r.data for r in transform_records([b"one\\n", b"two\\n"], TransformSettings()).results]
    [b'{"log":"one"}\\n', b'{"log":"two"}\\n']
"""

from __future__ import annotations

from itertools import repeat
from typing import NamedTuple

from podhose_wire.columns import Columns, WireFormatError
from transform_lambda.decompress import Allowance
from transform_lambda.partitioning import partition_keys
from transform_lambda.path_choice import one_line_records_output, transform_lines
from transform_lambda.result import LineCounts, Output, RecordResult, RecordUnreadableError
from transform_lambda.settings import TransformSettings
from transform_lambda.wire_decoder import RecordHeader, read_encoded, split_header


class EventResults(NamedTuple):
    """An event's records, transformed, in input order."""

    #: Each record's result, or why it has none: RecordUnreadableError when it cannot be
    #: read; any other exception is a bug met on that record alone.
    results: list[RecordResult | Exception]
    #: A bug met transforming the records together; each was then transformed alone.
    batch_error: Exception | None = None


def transform_record(
    data: bytes, settings: TransformSettings, allowance: Allowance | None = None
) -> RecordResult:
    """Transform one record's (base64-decoded) data; raise RecordUnreadableError (also when
    it decompresses beyond what `allowance` leaves)."""
    allowance = allowance or Allowance(settings.decompressed_budget_bytes)
    header, body = split_header(allowance.decompress(data))
    lines: bytes | Columns = body
    if header is not None and "enc" in header.fields:
        header, lines = _read_columns(header, body)
    result = transform_lines(lines, settings, header)
    result.partition_keys = partition_keys(settings.partition_keys, header)
    return result


def transform_records(datas: list[bytes], settings: TransformSettings) -> EventResults:
    """Transform an event's records (base64-decoded data), each as ``transform_record``
    would; one-line records are transformed together in bulk. Never raises: a bug met on
    the batch makes each record go alone, so it fails only the records that meet it."""
    try:
        return EventResults(_transform_batch(datas, settings))
    except Exception as error:
        return EventResults([_transform_alone(data, settings) for data in datas], error)


def _transform_batch(
    datas: list[bytes], settings: TransformSettings
) -> list[RecordResult | Exception]:
    """The records' results; raises on a bug (not on a record that cannot be read)."""
    output = one_line_records_output(datas, settings)
    if output is not None:
        return _one_line_results(datas, output)
    results: list[RecordResult | Exception] = []
    allowance = Allowance(settings.decompressed_budget_bytes)
    for data in datas:
        try:
            results.append(transform_record(data, settings, allowance))
        except RecordUnreadableError as error:
            results.append(error)
    return results


def _one_line_results(datas: list[bytes], output: Output) -> list[RecordResult | Exception]:
    """One result per one-line record from the output of them all."""
    ndjson, batch_counts = output
    # The batch's counts are carried by its first record, so totals stay exact.
    rest = LineCounts()
    counts = [batch_counts] + [rest] * (len(datas) - 1)
    # msgspec escapes CR and LF in strings: LF is the only line boundary splitlines() meets.
    outputs = ndjson.splitlines(keepends=True)
    return list(map(RecordResult, outputs, counts, repeat(None), datas))


def _transform_alone(data: bytes, settings: TransformSettings) -> RecordResult | Exception:
    try:
        return transform_record(data, settings)
    except Exception as error:  # RecordUnreadableError, or a bug: fail this record only
        return error


def _read_columns(header: RecordHeader, body: bytes) -> tuple[RecordHeader | None, Columns]:
    try:
        return read_encoded(header, body)
    except WireFormatError as error:
        raise RecordUnreadableError(str(error)) from None
