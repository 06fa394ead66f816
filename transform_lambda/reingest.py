"""Put records that do not fit the processor response back into the delivery stream.

The lines of an overflowing record are split into chunks of at most ``CHUNK_BYTES``,
each led by the record's source header with the attempt counter ``n`` raised by one, and
sent with PutRecordBatch to the stream the event came from (the way AWS's Firehose
processing blueprint re-ingests). Chunks are sent uncompressed on purpose: Firehose
buffers processor input by its size, so an invocation of re-ingested chunks holds at most
one processor buffer of raw lines, whose output fits the response; gzip chunks would
expand again and go around once more.

Example:
    >>> chunks = chunk_lines(b"a\\nb\\nc\\n", None, attempt=1, chunk_bytes=4)
    >>> [c.split(b"\\n", 1)[1] for c in chunks]
    [b'a\\nb\\n', b'c\\n']
"""

from __future__ import annotations

from collections.abc import Iterator

from podhose_wire.firehose_limits import calls
from podhose_wire.put_batch import Answer, FirehoseClient, put_with_retries
from transform_lambda.wire_decoder import RecordHeader

CHUNK_BYTES = 256 * 1024
SEND_ATTEMPTS = 6


class ReingestError(RuntimeError):
    """Records could not be put back into the stream after every retry."""


def chunk_lines(
    body: bytes, header: RecordHeader | None, *, attempt: int, chunk_bytes: int = CHUNK_BYTES
) -> list[bytes]:
    """Records holding ``body``'s lines, each under ``chunk_bytes`` plus its header."""
    head = (header or RecordHeader({})).with_attempt(attempt).encode()
    return [head + chunk for chunk in _chunks(body, chunk_bytes)]


def _chunks(body: bytes, chunk_bytes: int) -> Iterator[bytes]:
    start = 0
    while start < len(body):
        end = body.rfind(b"\n", start, start + chunk_bytes)
        if end < 0:  # one line longer than a chunk travels alone
            end = body.find(b"\n", start + chunk_bytes)
            end = len(body) - 1 if end < 0 else end
        yield body[start : end + 1]
        start = end + 1


def put_records(client: FirehoseClient, stream_name: str, records: list[bytes]) -> None:
    """PutRecordBatch every record, resending only failed ones; raise ReingestError."""
    last: list[Answer] = []
    for call in calls(records):
        unsent = put_with_retries(
            client, stream_name, call, attempts=SEND_ATTEMPTS, retry_failed_calls=False,
            on_answer=lambda _attempt, _sent, answer: last.append(answer),
        )  # fmt: skip  # the Lambda's client retries failed calls itself (app.firehose_client)
        if unsent:
            error = last[-1].error
            why = f": {error.code}: {error.message}" if error is not None else ""
            raise ReingestError(f"{len(unsent)} record(s) not accepted by {stream_name}{why}")


def stream_name_from_arn(arn: str) -> str:
    """``arn:aws:firehose:<region>:<account>:deliverystream/<name>`` -> ``<name>``."""
    return arn.rsplit("/", 1)[-1]
