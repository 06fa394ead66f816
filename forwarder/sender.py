"""Sending: PutRecordBatch with our own retry loop; resend only failed records; never give up."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from forwarder.batcher import Record, SendQueue
from forwarder.config import Config
from forwarder.metrics import Metrics
from forwarder.offsets import AckTracker

log = logging.getLogger("forwarder.sender")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0
INVALID = "InvalidArgumentException"


def make_client(cfg: Config) -> Any:  # botocore clients are generated at run time
    """A firehose client without botocore's own retries (we retry ourselves)."""
    boto_cfg = BotoConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=cfg.send_concurrency + 1,
        tcp_keepalive=True,
    )
    return boto3.client(
        "firehose", region_name=cfg.region, endpoint_url=cfg.endpoint_url, config=boto_cfg
    )


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


class Sender:
    """Threads that take calls from the queue and deliver them until acknowledged."""

    def __init__(
        self,
        cfg: Config,
        queue: SendQueue,
        tracker: AckTracker,
        metrics: Metrics,
        hard_stop: threading.Event,
    ) -> None:
        self.cfg = cfg
        self.queue = queue
        self.tracker = tracker
        self.metrics = metrics
        self.hard_stop = hard_stop
        self.client = make_client(cfg)
        self.threads = [
            threading.Thread(target=self._run, name=f"sender-{i}", daemon=True)
            for i in range(cfg.send_concurrency)
        ]

    def start(self) -> None:
        """Start the sender threads."""
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while (call := self.queue.take()) is not None:
            self.deliver(call)

    def deliver(self, records: list[Record]) -> None:
        """Send `records` until every one is acknowledged (or a hard stop abandons them)."""
        attempt = 0
        while records and not self.hard_stop.is_set():
            failed, code = self._put(records)
            if code == INVALID and len(records) > 1:
                half = len(records) // 2  # should not happen: limits are enforced; split
                self.deliver(records[:half])
                self.deliver(records[half:])
                return
            if failed:
                self.metrics.retries.inc(len(failed))
                self.hard_stop.wait(backoff(attempt))
                attempt += 1
            records = failed

    def _put(self, records: list[Record]) -> tuple[list[Record], str | None]:
        """One PutRecordBatch call. Returns the records to resend and the call's error code."""
        try:
            resp = self.client.put_record_batch(
                DeliveryStreamName=self.cfg.delivery_stream,
                Records=[{"Data": r.data} for r in records],
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            self._call_failed(code, exc, len(records))
            return records, code
        except (BotoCoreError, OSError) as exc:  # connection reset/refused/closed, timeouts
            self._call_failed(type(exc).__name__, exc, len(records))
            return records, type(exc).__name__
        except Exception as exc:  # anything unexpected: log it, keep the records, retry
            log.exception("unexpected PutRecordBatch failure")
            self._call_failed(type(exc).__name__, exc, len(records))
            return records, type(exc).__name__
        self.metrics.calls.inc()
        failed: list[Record] = []
        ok: list[Record] = []
        for record, result in zip(records, resp["RequestResponses"], strict=True):
            if result.get("ErrorCode"):
                failed.append(record)
                self.metrics.failures.labels(result["ErrorCode"]).inc()
            else:
                ok.append(record)
        if failed:
            log.warning("records failed", extra={"failed": len(failed), "total": len(records)})
        self.tracker.ack(r.mark for r in ok)
        self.metrics.records_sent.inc(len(ok))
        self.metrics.bytes_sent.inc(sum(len(r.data) for r in ok))
        return failed, None

    def _call_failed(self, code: str, exc: Exception, count: int) -> None:
        self.metrics.failures.labels(code).inc()
        if code == INVALID:
            log.error(
                "Firehose rejected a call as invalid; limits are enforced, so this is a bug",
                extra={"code": code, "error": str(exc), "records": count},
            )
        else:
            log.warning("PutRecordBatch failed", extra={"code": code, "error": str(exc)})
