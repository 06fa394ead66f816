"""Which path transforms a record's lines: in bulk (bulk.py) or line by line (render.py).

The bulk path takes a record only with the seed's settings
(``TransformSettings.is_seed_pipeline``) and only when every line is ordinary
(docs/transform.md, "Bulk and per-line paths"); it declines (None) as soon as a line is
anything else, and the record then goes line by line, which implements every rule. Both
paths give the same bytes and counts.

Example:
    >>> from transform_lambda.settings import TransformSettings
    >>> body = b'2019-12-28T08:19:53Z stdout F {"a": 1}\\n'
    >>> bulk_output(body, TransformSettings())[0]
    b'{"a":1}\\n'
    >>> bulk_output(body + b"\\n", TransformSettings()) is None  # a blank line
    True
    >>> transform_lines(body + b"\\n", TransformSettings(), None).data  # so: line by line
    b'{"a":1}\\n{"log":""}\\n'
"""

from __future__ import annotations

from operator import methodcaller

from podhose_wire.columns import Columns
from podhose_wire.compression import GZIP_MAGIC
from podhose_wire.header import MAGIC
from transform_lambda import bulk
from transform_lambda.render import render_lines
from transform_lambda.result import LineCounts, Output, RecordResult
from transform_lambda.settings import TransformSettings
from transform_lambda.wire_decoder import RecordHeader

_ends_with_newline = methodcaller("endswith", b"\n")


def transform_lines(
    lines: bytes | Columns, settings: TransformSettings, header: RecordHeader | None
) -> RecordResult:
    """The result of a record's lines (`lines`: the body after its `header`, or its column
    body) in bulk when the bulk path takes them, else line by line; no partition keys."""
    if isinstance(lines, Columns):
        output = columns_output(lines, settings)
        if output is not None:
            ndjson, counts = output
            return RecordResult(ndjson, counts, header, b"", None, lines)
        lines = lines.lines()  # not in bulk from the columns: the rebuilt lines as usual
    output = bulk_output(lines, settings)
    if output is None:
        output = render_lines(lines, settings, header)
    ndjson, counts = output
    return RecordResult(ndjson, counts, header, lines)


def bulk_output(body: bytes, settings: TransformSettings) -> Output | None:
    """The bulk path's output for a record's lines (`body`, without its header): one output
    line per logical line, partial pieces joined; None when it declines."""
    return _bulk_lines(_line_count(body), body, settings)


def columns_output(columns: Columns, settings: TransformSettings) -> Output | None:
    """The bulk path straight from a column body of Docker lines (the `log` strings are
    decoded from the texts column in one call) or of full CRI lines (the texts are the
    contents): no envelope is rebuilt or parsed. None when it declines."""
    if not columns.texts or not settings.is_seed_pipeline:
        return None
    if columns.all_docker:
        made = bulk.docker_texts(columns.texts)
    elif columns.all_cri_full and columns.times_start_with_digits:
        made = bulk.cri_texts(columns.texts)
    else:
        return None
    return _counted(len(columns.texts), made)


def one_line_records_output(datas: list[bytes], settings: TransformSettings) -> Output | None:
    """The bulk path's output for a batch of records of one line each, taken together
    (one output line per record); None when it declines or the batch is not such.

    Firehose senders that put one line per record (Fluent Bit, the Kinesis Agent, the
    forwarder's one-line mode) would otherwise pay the per-record setup thousands of
    times per invocation.
    """
    if len(datas) < 2 or not settings.is_seed_pipeline or settings.partition_keys:
        return None
    joined = b"".join(datas)
    if joined.count(b"\n") != len(datas) or not all(map(_ends_with_newline, datas)):
        return None  # some record holds several lines, or none
    if MAGIC[:1] in joined or GZIP_MAGIC[:1] in joined:
        return None  # a header or gzip data could start a record (one-byte searches are fast)
    # Each record is one line already; its trailing LF is what msgspec's decode_lines splits
    # on. A piece alone in its record is a line of its own there: pieces are not joined.
    return _bulk_lines(len(datas), joined, settings, join=False)


def _line_count(body: bytes) -> int:
    """The lines render.split_lines would return, without splitting."""
    return body.count(b"\n") + (not body.endswith(b"\n"))


def _bulk_lines(
    line_count: int, body: bytes, settings: TransformSettings, *, join: bool = True
) -> Output | None:
    if not body or not settings.is_seed_pipeline:
        return None
    by_runtime = bulk.docker_lines if body[:1] == b"{" else bulk.cri_lines
    return _counted(line_count, by_runtime(line_count, body, join=join))


def _counted(line_count: int, made: bulk.Bulk | None) -> Output | None:
    if made is None:
        return None
    return made.ndjson, LineCounts(line_count, made.entries, made.decode_failures)
