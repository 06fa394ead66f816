"""Local stand-in for Firehose's delivery side: processor buffer -> Lambda -> S3.

Not a product feature: it exists for `make demo` and the end-to-end test only. moto's Firehose
writes each PutRecordBatch straight to S3 (no processor, no buffering, no limits, no error
prefix), so this module adds the thin step that reproduces Firehose's documented processor
contract around the *real* ``transform_lambda.app.lambda_handler``:

- records are buffered by size and age (the Lambda processor's ``BufferSizeInMBs`` /
  ``BufferIntervalInSeconds``; the demo keeps the template's size but flushes after 1 s
  instead of the deployed 60 s);
- each batch becomes a real processor event (``invocationId``, ``deliveryStreamArn``,
  ``region``, ``records[].recordId/approximateArrivalTimestamp/data``);
- the response is checked like Firehose does: every recordId exactly once, a known
  ``result``, base64 ``data`` on Ok records, and the serialized response under 6,000,000
  bytes. A violation is logged loudly, counted in ``stats.violations`` and the batch goes to
  the error prefix (Firehose would do the same after its retries);
- an invocation that raises is retried ``NumberOfRetries`` times (3), then the batch goes to
  the error prefix with ``Lambda.FunctionError``;
- Ok data is written to S3 as ``<prefix>YYYY/MM/dd/HH/<stream>-1-YYYY-MM-dd-HH-mm-ss-<uuid>``
  (or the evaluated custom prefix, incl. ``!{partitionKeyFromLambda:...}`` when dynamic
  partitioning is on), gzip-compressed with a ``.gz`` suffix when the template says
  ``CompressionFormat: GZIP``; ProcessingFailed records go to the error prefix
  (``processing-failed/YYYY/MM/dd/HH/`` by default, ``!{firehose:error-output-type}`` =
  ``processing-failed``) in Firehose's error-record JSON shape; Dropped records are not
  written.

Differences from the real service (on purpose, to stay small): one S3 object per Lambda batch
and partition (Firehose also buffers toward the S3 BufferingHints, so it writes fewer, larger
objects), no S3 write retries, no CloudWatch metrics, no record format conversion, no
Lambda memory/time limits (the handler runs in this process).

Usage (needs an S3 client; devstack/pipeline.py wires it up)::

    delivery = FirehoseDelivery(config, s3_client)
    endpoint = FirehoseEndpoint(sink=delivery.sink)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gzip
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from devstack.lambda_context import LambdaContext
from devstack.stack_config import REGION, StackConfig

log = logging.getLogger(__name__)

#: Largest Lambda response Firehose accepts (the synchronous-invocation payload limit).
MAX_RESPONSE_BYTES = 6_000_000
RESULTS = frozenset({"Ok", "Dropped", "ProcessingFailed"})

Handler = Callable[[dict[str, Any], Any], Any]


@dataclasses.dataclass
class _Record:
    record_id: str
    data: bytes
    arrival_ms: int


@dataclasses.dataclass
class DeliveryStats:
    """Counters for progress lines and assertions (read them under no lock: ints only)."""

    records_in: int = 0
    bytes_in: int = 0
    invocations: int = 0
    ok: int = 0
    dropped: int = 0
    failed: int = 0
    objects: int = 0
    error_objects: int = 0
    violations: list[str] = dataclasses.field(default_factory=list)


def default_handler() -> Handler:
    """The real transform Lambda's handler (imported late: env must be set first)."""
    from transform_lambda.app import lambda_handler

    return lambda_handler


class FirehoseDelivery:
    """Buffers records for one delivery stream, invokes the processor, writes S3 objects.

    ``sink`` is the callback for ``devstack.firehose_endpoint``; it is thread-safe and only
    queues. A worker thread does the rest. ``drain()`` flushes everything, including records
    the Lambda re-ingests while it is being drained.
    """

    def __init__(
        self,
        config: StackConfig,
        s3_client: Any,
        handler: Handler | None = None,
        *,
        buffer_bytes: int | None = None,
        interval_s: float | None = None,
        lambda_timeout_s: float = 300.0,
    ) -> None:
        self.config = config
        self.s3 = s3_client
        self._handler = handler
        self.buffer_bytes = buffer_bytes or config.processor_buffer_bytes
        self.interval_s = interval_s if interval_s is not None else config.processor_interval_s
        self.lambda_timeout_s = lambda_timeout_s
        self.stats = DeliveryStats()
        self._pending: deque[_Record] = deque()
        self._pending_bytes = 0
        self._busy = False
        self._draining = 0
        self._stopping = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    # --- the endpoint side ---------------------------------------------------------------

    def sink(self, stream_name: str, records: list[bytes]) -> None:
        """Queue records accepted by the endpoint (called on the endpoint's threads)."""
        if stream_name != self.config.stream_name:
            log.warning("records for unknown stream %r ignored", stream_name)
            return
        now_ms = int(time.time() * 1000)
        with self._cond:
            for data in records:
                self._pending.append(_Record(str(uuid.uuid4().int), bytes(data), now_ms))
                self._pending_bytes += len(data)
                self.stats.records_in += 1
                self.stats.bytes_in += len(data)
            self._cond.notify_all()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> FirehoseDelivery:
        if self._handler is None:
            self._handler = default_handler()
        self._thread = threading.Thread(target=self._run, name="firehose-delivery", daemon=True)
        self._thread.start()
        return self

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Deliver every queued record now; True when nothing is left within the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._draining += 1
            self._cond.notify_all()
            try:
                while self._pending or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._draining -= 1

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            left = len(self._pending)
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)  # a daemon thread: never blocks exit for longer
            self._thread = None
        if left:
            log.warning("delivery stopped with %d undelivered records", left)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- the worker ------------------------------------------------------------------------

    def _ready(self) -> bool:
        if not self._pending:
            return False
        if self._draining or self._pending_bytes >= self.buffer_bytes:
            return True
        age = time.time() - self._pending[0].arrival_ms / 1000
        return age >= self.interval_s

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._ready():
                    self._cond.wait(0.05)
                if self._stopping:
                    return
                batch = self._take_batch()
                self._busy = True
            try:
                self._deliver(batch)
            except Exception:  # keep the worker alive; the batch is reported, not retried
                log.exception("delivery of %d records failed", len(batch))
                self.stats.violations.append(f"delivery crashed on a batch of {len(batch)}")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _take_batch(self) -> list[_Record]:
        batch: list[_Record] = []
        size = 0
        while self._pending:
            nxt = self._pending[0]
            if batch and size + len(nxt.data) > self.buffer_bytes:
                break
            batch.append(self._pending.popleft())
            size += len(nxt.data)
        self._pending_bytes -= size
        return batch

    def _deliver(self, batch: list[_Record]) -> None:
        event = {
            "invocationId": str(uuid.uuid4()),
            "deliveryStreamArn": self.config.stream_arn,
            "region": REGION,
            "records": [
                {
                    "recordId": r.record_id,
                    "approximateArrivalTimestamp": r.arrival_ms,
                    "data": base64.b64encode(r.data).decode("ascii"),
                }
                for r in batch
            ],
        }
        response, error = self._invoke(event)
        retried = error is not None and error[0] == "Lambda.FunctionError"
        attempts = 1 + self.config.lambda_retries if retried else 1
        if error is None:
            results, error = _check_response(response, batch)
        if error is not None:
            code, message = error
            log.error("LAMBDA CONTRACT VIOLATION (%s): %s", code, message)
            self.stats.violations.append(f"{code}: {message}")
            self._write_errors([(r, code, message) for r in batch], attempts)
            self.stats.failed += len(batch)
            return
        self._write_results(batch, results)

    def _invoke(self, event: dict[str, Any]) -> tuple[Any, tuple[str, str] | None]:
        assert self._handler is not None
        message = ""
        for _attempt in range(1 + self.config.lambda_retries):
            self.stats.invocations += 1
            context = LambdaContext(
                function_name=self.config.lambda_arn.rsplit(":", 1)[-1],
                invoked_function_arn=self.config.lambda_arn,
                aws_request_id=str(uuid.uuid4()),
                memory_limit_in_mb=512,
                log_group_name="/aws/lambda/podhose-local",
                deadline_ms=int((time.time() + self.lambda_timeout_s) * 1000),
            )
            try:
                return self._handler(event, context), None
            except Exception as exc:
                log.exception("transform Lambda raised")
                message = f"{type(exc).__name__}: {exc}"
        return None, ("Lambda.FunctionError", message)

    def _write_results(self, batch: list[_Record], results: dict[str, dict[str, Any]]) -> None:
        groups: dict[str, list[tuple[_Record, bytes]]] = {}
        failed: list[tuple[_Record, str, str]] = []
        for record in batch:
            item = results[record.record_id]
            outcome = item["result"]
            if outcome == "Dropped":
                self.stats.dropped += 1
            elif outcome == "ProcessingFailed":
                self.stats.failed += 1
                failed.append((record, "Lambda.ProcessingFailed", _FAILED_MESSAGE))
            else:
                self.stats.ok += 1
                keys = ((item.get("metadata") or {}).get("partitionKeys")) or {}
                try:
                    prefix = self._data_prefix(keys)
                except KeyError as exc:
                    failed.append(
                        (
                            record,
                            "DynamicPartitioning.MetadataExtractionFailed",
                            f"partition key {exc} missing from the Lambda's metadata",
                        )
                    )
                    continue
                groups.setdefault(prefix, []).append((record, item["_data"]))
        for prefix, items in groups.items():
            body = b"".join(data for _, data in items)
            if not body:
                continue
            oldest = min(record.arrival_ms for record, _ in items)
            self._put(_evaluate_time(prefix, oldest), oldest, body)
            self.stats.objects += 1
        if failed:
            self._write_errors(failed, attempts=1)

    def _data_prefix(self, partition_keys: dict[str, str]) -> str:
        prefix = self.config.prefix
        if "!{" not in prefix:
            return prefix + "!{timestamp:yyyy/MM/dd/HH}/"
        if not self.config.dynamic_partitioning:
            partition_keys = {}

        def repl(match: re.Match[str]) -> str:
            return str(partition_keys[match.group(1)])

        return re.sub(r"!\{partitionKeyFromLambda:([^}]+)\}", repl, prefix)

    def _error_prefix(self) -> str:
        prefix = self.config.error_prefix
        if not prefix:
            return "processing-failed/!{timestamp:yyyy/MM/dd/HH}/"
        prefix = prefix.replace("!{firehose:error-output-type}", "processing-failed")
        if "!{timestamp:" not in prefix:
            prefix += "!{timestamp:yyyy/MM/dd/HH}/"
        return prefix

    def _write_errors(self, failed: list[tuple[_Record, str, str]], attempts: int) -> None:
        now_ms = int(time.time() * 1000)
        lines = [
            json.dumps(
                {
                    "attemptsMade": attempts,
                    "arrivalTimestamp": record.arrival_ms,
                    "errorCode": code,
                    "errorMessage": message,
                    "attemptEndingTimestamp": now_ms,
                    "rawData": base64.b64encode(record.data).decode("ascii"),
                    "lambdaArn": self.config.lambda_arn,
                },
                separators=(",", ":"),
            )
            for record, code, message in failed
        ]
        oldest = min(record.arrival_ms for record, _, _ in failed)
        body = ("\n".join(lines) + "\n").encode()
        self._put(_evaluate_time(self._error_prefix(), oldest), oldest, body)
        self.stats.error_objects += 1

    def _put(self, prefix: str, oldest_ms: int, body: bytes) -> None:
        stamp = datetime.fromtimestamp(oldest_ms / 1000, UTC).strftime("%Y-%m-%d-%H-%M-%S")
        key = f"{prefix}{self.config.stream_name}-1-{stamp}-{uuid.uuid4()}"
        if self.config.gzip_objects:
            key += ".gz"
            body = gzip.compress(body)
        self.s3.put_object(Bucket=self.config.bucket_name, Key=key, Body=body)


_FAILED_MESSAGE = "The record was returned as ProcessingFailed by the Lambda function."

# Java DateTimeFormatter letters Firehose prefixes use, mapped to strftime.
_JAVA_TIME = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}


def _evaluate_time(prefix: str, epoch_ms: int) -> str:
    """Evaluate ``!{timestamp:<java pattern>}`` (the yyyy/MM/dd/HH/mm/ss subset) in UTC."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)

    def repl(match: re.Match[str]) -> str:
        pattern = re.sub(r"'([^']*)'", r"\1", match.group(1))
        pattern = re.sub(r"yyyy|MM|dd|HH|mm|ss", lambda m: _JAVA_TIME[m.group(0)], pattern)
        return moment.strftime(pattern)

    return re.sub(r"!\{timestamp:([^}]+)\}", repl, prefix)


class _ContractError(Exception):
    """The Lambda's response breaks Firehose's processor contract."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _check_response(
    response: Any, batch: list[_Record]
) -> tuple[dict[str, dict[str, Any]], tuple[str, str] | None]:
    """Validate a processor response like Firehose does; decode Ok data into ``_data``."""
    try:
        return _parse_response(response, {r.record_id for r in batch}), None
    except _ContractError as exc:
        return {}, (exc.code, exc.message)


def _parse_response(response: Any, sent: set[str]) -> dict[str, dict[str, Any]]:
    try:
        size = len(json.dumps(response).encode())
    except (TypeError, ValueError) as exc:
        raise _ContractError("Lambda.JsonProcessingException", f"not JSON: {exc}") from None
    if size > MAX_RESPONSE_BYTES:
        raise _ContractError(
            "Lambda.FunctionError",
            f"response is {size} bytes, over the {MAX_RESPONSE_BYTES}-byte Lambda limit",
        )
    items = response.get("records") if isinstance(response, dict) else None
    if not isinstance(items, list):
        raise _ContractError("Lambda.JsonProcessingException", "response has no 'records' list")
    results: dict[str, dict[str, Any]] = {}
    for item in items:
        rid = item.get("recordId") if isinstance(item, dict) else None
        if rid not in sent:
            raise _ContractError("Lambda.MissingRecordId", f"unknown recordId {rid!r} returned")
        if rid in results:
            raise _ContractError("Lambda.DuplicatedRecordId", f"recordId {rid} returned twice")
        results[rid] = _parse_item(item)
    missing = len(sent) - len(results)
    if missing:
        raise _ContractError(
            "Lambda.MissingRecordId", f"{missing} of {len(sent)} recordIds not returned"
        )
    return results


def _parse_item(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("result") not in RESULTS:
        raise _ContractError("Lambda.JsonProcessingException", f"bad result {item.get('result')!r}")
    if item["result"] != "Ok":
        return item
    try:
        data = base64.b64decode(item.get("data"), validate=True)
    except (TypeError, ValueError, binascii.Error):
        raise _ContractError(
            "Lambda.JsonProcessingException", f"bad base64 data for {item['recordId']}"
        ) from None
    return {**item, "_data": data}
