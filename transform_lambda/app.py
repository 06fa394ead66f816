"""The Firehose data-transformation Lambda: ``lambda_handler(event, context)``.

Every input recordId is answered exactly once:

- ``Ok``: the record's lines, transformed (transform.py), as NDJSON;
- ``Dropped``: the record held no line, or its lines did not fit the 6 MB response and
  were re-ingested into the stream (budget.py, reingest.py);
- ``ProcessingFailed`` with the original data: the record cannot be read at all (bad
  base64, corrupt gzip), or re-ingesting it failed or was tried too often.

Bad data never raises: each problem gives a structured log line, an EMF metric and a
per-record result. The handler raises only when Firehose itself must retry the whole
batch (re-ingest impossible and the original data does not fit the response either).
"""

from __future__ import annotations

import binascii
import gc
import os
from collections import Counter
from dataclasses import dataclass
from functools import cache, partial
from itertools import repeat
from operator import attrgetter
from typing import Any

import boto3
import pybase64
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import (
    KinesisFirehoseDataTransformationRecord,
    KinesisFirehoseDataTransformationRecordMetadata,
    KinesisFirehoseDataTransformationResponse,
    KinesisFirehoseEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from transform_lambda import jsoncodec, reingest
from transform_lambda.budget import (
    RECORD_OVERHEAD_BYTES,
    RESPONSE_BUDGET_BYTES,
    Candidate,
    metadata_bytes,
    plan_response,
)
from transform_lambda.result import LineCounts, RecordResult, RecordUnreadableError
from transform_lambda.settings import TransformSettings
from transform_lambda.transform import transform_records

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "podhose-transform"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "podhose"))
SETTINGS = TransformSettings.from_env()


class ResponseTooLargeError(RuntimeError):
    """Neither the records nor their original data fit the response: Firehose must retry."""


@dataclass(slots=True)
class _Outcome:
    """One input record on its way to its response: transformed, or why not."""

    record_id: str
    original: str
    result: RecordResult | None = None
    error: str = ""
    ok_data: str = ""

    @property
    def attempt(self) -> int:
        header = self.result.header if self.result else None
        return header.attempt if header else 0


@cache
def firehose_client(region: str) -> Any:
    """The Firehose client re-ingest uses, one per region (``cache_clear()`` forgets it).
    botocore retries a failed call (throttling, 5xx, connection errors; not AccessDenied);
    reingest.put_records resends the records a 200 answer failed one by one."""
    config = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=5)
    return boto3.client("firehose", region_name=region, config=config)


_b64decode = partial(pybase64.b64decode, validate=True)
_b64encode = pybase64.b64encode_as_string
_result_of = attrgetter("result")
_ok_data_of = attrgetter("ok_data")
_id_of = attrgetter("record_id")
_data_of = attrgetter("data")


def _decode_all(originals: list[str]) -> list[bytes | str]:
    """Base64-decode every record's data; a record that is not base64 gets its error text."""
    try:
        return list(map(_b64decode, originals))
    except (binascii.Error, ValueError):
        pass
    decoded: list[bytes | str] = []
    for original in originals:
        try:
            decoded.append(_b64decode(original))
        except (binascii.Error, ValueError) as error:
            decoded.append(f"invalid base64: {error}")
    return decoded


def _outcome(record_id: str, original: str, result: RecordResult | Exception | str) -> _Outcome:
    if type(result) is RecordResult:
        return _Outcome(record_id, original, result, "", _b64encode(result.data))
    if isinstance(result, str):  # not even base64
        return _Outcome(record_id, original, error=result)
    if not isinstance(result, RecordUnreadableError):
        logger.error(
            "unexpected error transforming a record",
            extra={"recordId": record_id, "error": repr(result)},
        )
        return _Outcome(record_id, original, error=f"internal error: {result!r}")
    return _Outcome(record_id, original, error=str(result))


def _transform_all(records: list[dict[str, Any]], settings: TransformSettings) -> list[_Outcome]:
    ids = [record["recordId"] for record in records]
    originals = [record["data"] for record in records]
    decoded = _decode_all(originals)
    readable = [d for d in decoded if isinstance(d, bytes)]
    transformed = transform_records(readable, settings)
    if transformed.batch_error is not None:
        logger.exception(
            "bulk transform failed; transforming record by record",
            exc_info=transformed.batch_error,
        )
    merged: list[RecordResult | Exception | str] = list(transformed.results)
    if len(readable) < len(decoded):  # put the base64 errors back in their places
        results = iter(merged)
        merged = [next(results) if isinstance(d, bytes) else d for d in decoded]
    if set(map(type, merged)) == {RecordResult}:  # the common case, without a call per record
        oks = list(map(_b64encode, map(_data_of, merged)))
        return list(map(_Outcome, ids, originals, merged, repeat(""), oks))
    return list(map(_outcome, ids, originals, merged))


def process_event(
    event: KinesisFirehoseEvent, settings: TransformSettings, budget: int = RESPONSE_BUDGET_BYTES
) -> KinesisFirehoseDataTransformationResponse:
    """Transform every record of a Firehose event and build the response."""
    # Transforming allocates many short-lived objects and no cycles: the cyclic GC would
    # only cost time (about a fifth of it on one-line records).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        outcomes = _transform_all(event["records"], settings)
        failed = _fit_response(event, outcomes, budget, settings)
        records = _respond_all(outcomes, failed, settings)
        response = KinesisFirehoseDataTransformationResponse(records=records)
    finally:
        if gc_was_enabled:
            gc.enable()
    _record_metrics(outcomes, response)
    return response


def _fit_response(
    event: KinesisFirehoseEvent, outcomes: list[_Outcome], budget: int, settings: TransformSettings
) -> set[str]:
    """Make the response fit ``budget``: re-ingest what does not; return ids to fail.

    On return, outcomes that do not fit have had their ``ok_data`` cleared (answered
    Dropped after re-ingest) or their id is in the returned set (ProcessingFailed).
    """
    failed_bytes = sum(len(o.original) + RECORD_OVERHEAD_BYTES for o in outcomes if not o.result)
    ok_bytes = sum(map(len, map(_ok_data_of, outcomes))) + sum(map(len, map(_id_of, outcomes)))
    if settings.partition_keys:
        ok_bytes += sum(map(_metadata_bytes, outcomes))
    if failed_bytes + ok_bytes + RECORD_OVERHEAD_BYTES * len(outcomes) <= budget:
        return set()
    with_data = [o for o in outcomes if o.ok_data]
    candidates = [
        Candidate(o.record_id, len(o.ok_data) + _metadata_bytes(o), len(o.original), o.attempt)
        for o in with_data
    ]
    plan = plan_response(candidates, budget - failed_bytes, settings.max_reingest_attempts)
    fits = set(plan.fits)
    failed = {c.record_id for c in plan.exhausted}
    if not _reingest(event, with_data, plan.overflow):
        _fail_instead(plan.overflow, budget - failed_bytes - plan.used_bytes)
        failed |= {c.record_id for c in plan.overflow}
    for outcome in with_data:
        if outcome.record_id not in fits:
            outcome.ok_data = ""
    return failed


def _metadata_bytes(outcome: _Outcome) -> int:
    """Response bytes of the record's partition keys (sent only with data)."""
    if not outcome.ok_data or outcome.result is None:
        return 0
    return metadata_bytes(outcome.result.partition_keys)


def _respond_all(
    outcomes: list[_Outcome], failed: set[str], settings: TransformSettings
) -> list[KinesisFirehoseDataTransformationRecord]:
    """The response records, in input order."""
    datas = list(map(_ok_data_of, outcomes))
    if all(datas) and not failed and not settings.partition_keys:
        # The common case, without a Python call per record: every record is Ok.
        ids = map(_id_of, outcomes)
        return list(map(KinesisFirehoseDataTransformationRecord, ids, repeat("Ok"), datas))
    return [_respond(outcome, failed) for outcome in outcomes]


def _respond(outcome: _Outcome, failed: set[str]) -> KinesisFirehoseDataTransformationRecord:
    record_id = outcome.record_id
    if outcome.ok_data:
        keys = outcome.result.partition_keys if outcome.result else None
        metadata = KinesisFirehoseDataTransformationRecordMetadata(keys) if keys else None
        return KinesisFirehoseDataTransformationRecord(
            record_id=record_id, data=outcome.ok_data, metadata=metadata
        )
    if outcome.result is None:
        logger.warning(
            "record cannot be read", extra={"recordId": record_id, "reason": outcome.error}
        )
        return _failed(record_id, outcome.original)
    if record_id in failed:
        logger.error(
            "record could not be delivered nor re-ingested; returned as ProcessingFailed",
            extra={"recordId": record_id, "attempt": outcome.attempt},
        )
        return _failed(record_id, outcome.original)
    # No line came out, or the lines were re-ingested into the stream.
    return KinesisFirehoseDataTransformationRecord(record_id=record_id, result="Dropped")


def _failed(record_id: str, original: str) -> KinesisFirehoseDataTransformationRecord:
    return KinesisFirehoseDataTransformationRecord(
        record_id=record_id, result="ProcessingFailed", data=original
    )


def _reingest(
    event: KinesisFirehoseEvent, outcomes: list[_Outcome], overflow: list[Candidate]
) -> bool:
    """Put overflowing records back into the stream; False when that failed."""
    if not overflow:
        return True
    by_id = {o.record_id: o for o in outcomes}
    chunks: list[bytes] = []
    for candidate in overflow:
        result = by_id[candidate.record_id].result
        assert result is not None
        chunks += reingest.chunk_lines(
            result.raw_lines(), result.header, attempt=candidate.attempt + 1
        )
    stream = reingest.stream_name_from_arn(event.delivery_stream_arn)
    try:
        reingest.put_records(firehose_client(event.region), stream, chunks)
    except Exception:
        logger.exception("re-ingest failed", extra={"records": len(overflow), "stream": stream})
        metrics.add_metric(name="ReingestFailures", unit=MetricUnit.Count, value=len(overflow))
        return False
    logger.info(
        "re-ingested records that did not fit the response",
        extra={"records": len(overflow), "chunks": len(chunks), "stream": stream},
    )
    metrics.add_metric(name="RecordsReingested", unit=MetricUnit.Count, value=len(overflow))
    return True


def _fail_instead(overflow: list[Candidate], room: int) -> None:
    """Raise when the original data of records that could not be re-ingested won't fit.

    Raising makes Firehose retry the whole invocation, then send the batch to the error
    prefix: still nothing lost.
    """
    needed = sum(c.original_bytes + RECORD_OVERHEAD_BYTES for c in overflow)
    if needed > room:
        raise ResponseTooLargeError(
            f"{len(overflow)} record(s) could not be re-ingested and their original data "
            f"({needed} bytes) does not fit the response ({room} bytes left)"
        )


def _record_metrics(
    outcomes: list[_Outcome], response: KinesisFirehoseDataTransformationResponse
) -> None:
    totals = LineCounts()
    # Records transformed in bulk share one zero LineCounts: add each object once.
    for counts in {id(c): c for o in outcomes if o.result for c in (o.result.counts,)}.values():
        totals.add(counts)
    results = Counter(map(_result_of, response.records))
    for result in ("Ok", "Dropped", "ProcessingFailed"):
        metrics.add_metric(name=f"Records{result}", unit=MetricUnit.Count, value=results[result])
    metrics.add_metric(name="LinesIn", unit=MetricUnit.Count, value=totals.lines_in)
    metrics.add_metric(name="LinesOut", unit=MetricUnit.Count, value=totals.lines_out)
    metrics.add_metric(name="DecodeFailures", unit=MetricUnit.Count, value=totals.decode_failures)
    metrics.add_metric(name="InvalidUtf8Lines", unit=MetricUnit.Count, value=totals.invalid_utf8)
    metrics.add_metric(name="UnencodableLines", unit=MetricUnit.Count, value=totals.unencodable)
    metrics.add_metric(
        name="LinesWithoutKeptKeys", unit=MetricUnit.Count, value=totals.without_kept_keys
    )
    if totals.decode_failures or totals.invalid_utf8 or totals.unencodable:
        logger.warning(
            "lines kept as text or repaired",
            extra={
                "decodeFailures": totals.decode_failures,
                "invalidUtf8Lines": totals.invalid_utf8,
                "unencodableLines": totals.unencodable,
            },
        )
    if totals.without_kept_keys:
        logger.info(
            "lines with none of the kept keys dropped (nothing left to write)",
            extra={"linesWithoutKeptKeys": totals.without_kept_keys},
        )


def _handle(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    firehose_event = KinesisFirehoseEvent(event, json_deserializer=jsoncodec.loads)
    response = process_event(firehose_event, SETTINGS)
    return {"records": []} if not response.records else response.asdict()


_handle_with_context = logger.inject_lambda_context(_handle)
# What Powertools reads from the context to add function name, ARN and request id to logs.
_CONTEXT_FIELDS = ("function_name", "memory_limit_in_mb", "invoked_function_arn", "aws_request_id")


@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Entry point Firehose invokes with a batch of records.

    Tests and local runners may pass no real context (``None``): the logs then lack the
    function's name and request id, and the records are transformed all the same.
    """
    if all(hasattr(context, field) for field in _CONTEXT_FIELDS):
        return _handle_with_context(event, context)
    return _handle(event, context)
