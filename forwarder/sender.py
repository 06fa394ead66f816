"""Sending: PutRecordBatch with our own retry loop, by error kind (podhose_wire.retry_policy;
the call and its answer's classification: podhose_wire.put_batch).

Only failed records are sent again. Throttling and outages back off briefly; a broken stream
or missing permission is logged as an ERROR naming the stream, retried slowly and recovers by
itself once fixed; a record Firehose refuses as invalid is isolated by splitting the call,
then skipped and counted, so one bad record cannot stall a node.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import boto3.session
from botocore.config import Config as BotoConfig

from forwarder import botocore_data
from forwarder.acks import AckTracker
from forwarder.config import Config
from forwarder.metrics import Metrics
from forwarder.pacing import Pacer
from forwarder.rate_limited_log import RateLimitedLog
from forwarder.send_queue import Record, SendQueue
from podhose_wire.put_batch import Answer, CallError, put_record_batch
from podhose_wire.retry_policy import Kind, classify, retry_after

log = logging.getLogger("forwarder.sender")

ERROR_LOG_INTERVAL = 30.0  # seconds between two logs of the same failing error code


def make_client(cfg: Config, streams: int = 1) -> Any:  # botocore generates clients at run time
    """A firehose client without botocore's own retries (we retry ourselves), with a
    connection for each sender thread of the `streams` delivery streams (boto3 clients are
    thread-safe: one is shared), on the Firehose-only botocore data unless
    --full-botocore-data (botocore_data.py)."""
    boto_cfg = BotoConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=cfg.send_concurrency * streams + 1,
        tcp_keepalive=True,
    )
    try:
        return _client(cfg, boto_cfg, cfg.full_botocore_data)
    except Exception as exc:  # a damaged copy (truncated file, edited by hand): the full data
        if cfg.full_botocore_data:
            raise
        log.warning(
            "botocore data: the Firehose-only copy cannot make a client, using the full data",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )
        return _client(cfg, boto_cfg, True)


def _client(cfg: Config, boto_cfg: BotoConfig, full_data: bool) -> Any:
    botocore_session = botocore_data.session(full_data, cfg.region)
    session = boto3.session.Session(botocore_session=botocore_session)
    return session.client(
        "firehose", region_name=cfg.region, endpoint_url=cfg.endpoint_url, config=boto_cfg
    )


@dataclass
class Outcome:
    """What one PutRecordBatch call left to do."""

    failed: list[Record]
    kind: Kind | None = None  # of the call's error, or of the worst per-record error
    code: str = ""
    message: str = ""


class Sender:
    """Threads that take calls from one stream's queue and deliver them until acknowledged."""

    def __init__(
        self,
        cfg: Config,
        queue: SendQueue,
        tracker: AckTracker,
        metrics: Metrics,
        hard_stop: threading.Event,
        *,
        stream: str | None = None,
        client: Any = None,
    ) -> None:
        self.cfg = cfg
        self.stream = stream or cfg.delivery_stream
        self.queue = queue
        self.tracker = tracker
        self.metrics = metrics
        self.hard_stop = hard_stop
        self.client = client if client is not None else make_client(cfg)
        self.said = RateLimitedLog(ERROR_LOG_INTERVAL)
        self.blocked_by: set[str] = set()  # permanent error codes seen since the last success
        self._blocked_lock = threading.Lock()
        self.pacer = Pacer(cfg.pacing != "off", metrics.pacing_rate.labels(self.stream).set,
                           metrics.pacing_wait.labels(self.stream).inc, hard_stop.wait)  # fmt: skip
        self.threads = [self._thread(i) for i in range(cfg.send_concurrency)]

    def _thread(self, index: int) -> threading.Thread:
        name = f"sender-{self.stream}-{index}"
        return threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the sender threads."""
        for thread in self.threads:
            thread.start()

    def alive(self) -> bool:
        """Every sender thread runs (until the queue is closed)."""
        return all(thread.is_alive() for thread in self.threads)

    def revive(self) -> int:
        """Replace sender threads that died (counted and logged); how many were replaced."""
        dead = [i for i, thread in enumerate(self.threads) if not thread.is_alive()]
        for i in dead:
            log.error("a sender thread died; starting another",
                      extra={"sender": self.threads[i].name, "stream": self.stream})  # fmt: skip
            self.metrics.sender_restarts.inc()
            self.threads[i] = self._thread(i)
            self.threads[i].start()
        return len(dead)

    def _run(self) -> None:
        while (call := self.queue.take()) is not None:
            try:
                self.deliver(call)
            except Exception:  # a bug must neither lose the call nor stop sending
                log.exception("sender failed; its records go back to the queue")
                self.hard_stop.wait(1.0)
            finally:  # also when the thread dies of something else: revive() replaces it
                left = [r for r in call if not r.done]
                if left and not self.hard_stop.is_set():
                    self.queue.put_back(left)

    def deliver(self, records: list[Record]) -> None:
        """Send `records` until each is acknowledged or skipped (or a hard stop abandons them)."""
        attempt = 0
        while records and not self.hard_stop.is_set():
            n = self.pacer.portion([len(r.data) for r in records])  # paced: a smaller call
            call, rest = records[:n], records[n:]
            ticket = self.pacer.wait(sum(len(r.data) for r in call), len(call))
            outcome = self.put_once(call)
            self.pacer.after(ticket, [len(r.data) for r in outcome.failed], outcome.code)
            if outcome.kind is Kind.INVALID:
                self._isolate(outcome.failed, outcome)
                records = rest
                continue
            if outcome.failed:
                self.metrics.retries.labels(self.stream).inc(len(outcome.failed))
                assert outcome.kind is not None
                self.hard_stop.wait(retry_after(outcome.kind, attempt))
                attempt += 1
            records = outcome.failed + rest

    def _isolate(self, records: list[Record], outcome: Outcome) -> None:
        """Firehose refused the call as invalid: split it; skip a single refused record."""
        if len(records) > 1:
            half = len(records) // 2
            self.deliver(records[:half])
            self.deliver(records[half:])
            return
        record = records[0]
        reason = outcome.code or "invalid"
        self.metrics.skipped_records.labels(reason, self.stream).inc()
        self.metrics.skipped_lines.labels(self.stream).inc(record.lines)
        log.error(
            "Firehose refuses this record; skipped",
            extra={"stream": self.stream, "code": outcome.code,
                   "error": outcome.message, "bytes": len(record.data), "lines": record.lines},
        )  # fmt: skip
        self._done([record])

    def _done(self, records: list[Record]) -> None:
        for record in records:
            record.done = True
        self.tracker.ack(r.mark for r in records)

    def put_once(self, records: list[Record]) -> Outcome:
        """One PutRecordBatch call."""
        answer = put_record_batch(self.client, self.stream, [r.data for r in records])
        error = answer.error
        if error is not None and error.unexpected:  # log it, keep the records, retry
            log.error("unexpected PutRecordBatch failure", exc_info=error.exception)
        if error is None or error.answered:
            self.metrics.calls.labels(self.stream).inc()
            self._resumed()
        if error is not None:
            return self._call_failed(records, error)
        return self._results(records, answer)

    def _results(self, records: list[Record], answer: Answer) -> Outcome:
        """Acknowledge the accepted records; the outcome of the failed ones."""
        failed: list[Record] = []
        ok: list[Record] = []
        worst: Outcome = Outcome(failed)
        for record, code, message in zip(records, answer.codes, answer.messages, strict=True):
            if not code:
                ok.append(record)
                continue
            failed.append(record)
            self.metrics.failures.labels(code, self.stream).inc()
            kind = classify(code, None)
            if kind is Kind.INVALID:
                kind = Kind.RETRY  # a record refused inside a 200 answer: try it again
            if worst.kind is None or kind is Kind.PERMANENT:
                worst = Outcome(failed, kind, code, message)
        if failed:
            self._report(worst, len(failed), len(records))
        self._done(ok)
        self.metrics.records_sent.labels(self.stream).inc(len(ok))
        self.metrics.bytes_sent.labels(self.stream).inc(sum(len(r.data) for r in ok))
        return worst

    def _call_failed(self, records: list[Record], error: CallError) -> Outcome:
        """The whole call failed (a 200 answer without one response per record too: nothing
        is known to be accepted, so every record is sent again)."""
        self.metrics.failures.labels(error.code, self.stream).inc()
        outcome = Outcome(records, error.kind, error.code, error.message)
        self._report(outcome, len(records), len(records))
        return outcome

    def _report(self, outcome: Outcome, failed: int, total: int) -> None:
        """Log a failure (rate-limited per code) and count permanent ones."""
        assert outcome.kind is not None
        if outcome.kind is Kind.PERMANENT:
            self.metrics.permanent_errors.labels(outcome.code, self.stream).inc()
            with self._blocked_lock:
                self.blocked_by.add(outcome.code)
        held = self.said.due(outcome.code)
        if held is None:
            return
        fields = {"stream": self.stream, "code": outcome.code,
                  "error": outcome.message, "failed": failed, "records": total,
                  "similar_since_last_log": held}  # fmt: skip
        if outcome.kind is Kind.PERMANENT:
            log.error(
                "Firehose refuses delivery to the stream: check that it exists and is ACTIVE "
                "and that this role may firehose:PutRecordBatch to it (and use its KMS key); "
                f"retrying every few seconds until fixed ({outcome.code})",
                extra=fields,
            )
        elif outcome.kind is Kind.INVALID:
            log.error("Firehose refused a call as invalid; isolating the record", extra=fields)
        else:
            log.warning("PutRecordBatch failed, retrying with backoff", extra=fields)

    def _resumed(self) -> None:
        """A call went through: say once that delivery works again after logged errors."""
        if not self.blocked_by:
            return
        with self._blocked_lock:
            codes, self.blocked_by = sorted(self.blocked_by), set()
        if codes:
            self.said.forget(codes)
            log.info("delivery resumed", extra={"stream": self.stream,
                                                "after": codes})  # fmt: skip
