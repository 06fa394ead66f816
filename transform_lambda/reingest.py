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

import random
import time
from collections.abc import Iterator
from typing import Any, Protocol

from transform_lambda.wire_decoder import RecordHeader

CHUNK_BYTES = 256 * 1024
MAX_BATCH_RECORDS = 500
# PutRecordBatch takes 4 MiB per call; staying at 3 MiB of data keeps even the base64
# request body (4/3 larger) within 4 MiB, whichever way a service counts it.
MAX_BATCH_BYTES = 3 * 1024 * 1024
SEND_ATTEMPTS = 6


class ReingestError(RuntimeError):
    """Records could not be put back into the stream after every retry."""


class FirehoseClient(Protocol):
    def put_record_batch(self, **kwargs: Any) -> dict[str, Any]: ...


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


def _batches(records: list[bytes]) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    size = 0
    for record in records:
        if batch and (len(batch) == MAX_BATCH_RECORDS or size + len(record) > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += len(record)
    if batch:
        yield batch


def put_records(client: FirehoseClient, stream_name: str, records: list[bytes]) -> None:
    """PutRecordBatch every record, resending only failed ones; raise ReingestError."""
    for batch in _batches(records):
        pending = batch
        for attempt in range(SEND_ATTEMPTS):
            response = client.put_record_batch(
                DeliveryStreamName=stream_name, Records=[{"Data": data} for data in pending]
            )
            if not response.get("FailedPutCount"):
                break
            results = response["RequestResponses"]
            pending = [data for data, r in zip(pending, results, strict=True) if "ErrorCode" in r]
            time.sleep(random.uniform(0, 0.1 * 2**attempt))
        else:
            raise ReingestError(f"{len(pending)} record(s) not accepted by {stream_name}")


def stream_name_from_arn(arn: str) -> str:
    """``arn:aws:firehose:<region>:<account>:deliverystream/<name>`` -> ``<name>``."""
    return arn.rsplit("/", 1)[-1]
