"""A local Firehose endpoint (JSON 1.1 protocol) with fault injection, for tests and benches.

Speaks enough of Firehose for boto3: PutRecordBatch, PutRecord, DescribeDeliveryStream and
ListDeliveryStreams. Enforces the real limits, keeps accepted records in memory (or only
counts them), and injects faults on demand: throttling, per-record failures, 500s, dropped
connections, slow answers, malformed 200 answers, error answers of any code (access denied,
KMS, ...), records it refuses as invalid, and missing streams (every name exists until
`require_streams` is called; then only those created). Dropped connections happen before
anything is accepted, so they never duplicate.

Per-stream quotas (bytes, records and calls per second; a default and per-stream values) are
enforced as Firehose does, with token buckets that hold one second of quota: a call over the
calls quota is refused whole with ServiceUnavailableException "Slow down."; records past the
bytes or records quota fail one by one inside a 200 answer (FailedPutCount, per-record
ServiceUnavailableException "Slow down."), all of them when none fit. Throttled calls and
records are counted in the stats.

    python -m devstack.firehose_endpoint --port 4573
    python -m devstack.firehose_endpoint --quota-bytes-per-second 1048576 \
        --stream-quota 'busy:bytes=5242880,records=500000,calls=2000'
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import orjson

from podhose_wire.firehose_limits import (
    MAX_CALL_BYTES,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_CALL,
    Quota,
    billed_bytes,
    rate,
)
from transform_lambda.decompress import decode_payload
from transform_lambda.wire_decoder import split_header

FOREVER = -1
MALFORMED_SHAPES = ("missing", "short", "garbage")
TARGET_PREFIX = "Firehose_20150804."
ARN_PREFIX = "arn:aws:firehose:us-east-1:000000000000:deliverystream/"

QUOTA_BURST = 1.0  # seconds of quota a stream may send at once (Firehose counts per second)
SLOW_DOWN = ("ServiceUnavailableException", "Slow down.")
# Firehose's ServiceUnavailableException has no fixed HTTP status in the API model; the
# forwarder classifies it by its code. We answer 503, as the throttle() fault does.
SLOW_DOWN_STATUS = 503

Sink = Callable[[str, list[bytes]], None]


class _Bucket:
    """A token bucket of `rate` per second holding QUOTA_BURST seconds of it (at least 1)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(rate * QUOTA_BURST, 1.0)
        self.tokens = self.capacity
        self.at = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now


class _Buckets:
    """One stream's buckets (absent: that part of the quota is unlimited)."""

    def __init__(self, quota: Quota, now: float) -> None:
        def bucket(rate: float | None) -> _Bucket | None:
            return None if rate is None else _Bucket(rate, now)

        self.bytes = bucket(quota.bytes_per_second)
        self.records = bucket(quota.records_per_second)
        self.calls = bucket(quota.calls_per_second)

    def admit(self, datas: list[bytes], now: float) -> int | None:
        """How many records (from the first) fit now, taking their quota; None: the call
        itself is over the calls quota. A record goes while any byte quota is left (a record
        may overdraw it), so records larger than a second of quota still go."""
        for b in (self.bytes, self.records, self.calls):
            if b is not None:
                b.refill(now)
        if self.calls is not None:
            if self.calls.tokens < 1:
                return None
            self.calls.tokens -= 1
        fit = 0
        for data in datas:
            if self.bytes is not None and self.bytes.tokens <= 0:
                break
            if self.records is not None and self.records.tokens < 1:
                break
            if self.bytes is not None:
                self.bytes.tokens -= len(data)
            if self.records is not None:
                self.records.tokens -= 1
            fit += 1
        return fit


@dataclass
class Stats:
    """Counters of accepted traffic."""

    calls: int = 0
    records: int = 0
    bytes: int = 0
    billed_bytes: int = 0
    lines: int = 0
    rejected_calls: int = 0
    throttled_calls: int = 0  # calls refused whole over the calls quota
    partly_throttled_calls: int = 0  # 200 answers with records over the bytes/records quota
    # (some or all of them)
    throttled_records: int = 0  # records not accepted over a quota (in either kind of call)
    faults: dict[str, int] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that go away (a killed forwarder) are normal here: stay quiet."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FirehoseError(Exception):
    """An AWS JSON error response."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class FirehoseEndpoint:
    """Threaded HTTP server bound to 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        sink: Sink | None = None,
        store: bool = True,
        count_lines: bool = False,
        *,
        quota: Quota | None = None,
        stream_quotas: dict[str, Quota] | None = None,
        clock: Callable[[], float] = time.monotonic,  # what the quotas' buckets count time by
    ) -> None:
        self.host = host
        self._clock = clock
        self.port = port
        self.sink = sink
        self.store = store
        self.count_lines = count_lines
        self.records: list[tuple[str, bytes]] = []
        self.streams: set[str] = set()
        self.stats = Stats()
        self._lock = threading.Lock()
        self._faults: dict[str, int] = {}
        self._fail_every = 2
        self._call_error = ("InternalFailure", 500)
        self._refused: bytes | None = None  # records whose payload holds this are invalid
        self._delay = 0.0
        self._malformed = "missing"
        self._explicit_streams = False
        self._quota = quota or Quota()
        self._stream_quotas = dict(stream_quotas or {})
        self._buckets: dict[str, _Buckets | None] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle
    @property
    def url(self) -> str:
        """Endpoint URL for boto3's endpoint_url."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FirehoseEndpoint:
        """Bind and serve in a daemon thread."""
        self._server = _Server((self.host, self.port), _make_handler(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FirehoseEndpoint:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----- fault injection (thread-safe); `calls` = how many upcoming calls, FOREVER = all
    def throttle(self, calls: int = FOREVER) -> None:
        """Answer calls with ServiceUnavailableException."""
        self._set_fault("throttle", calls)

    def fail_records(self, calls: int = FOREVER, every: int = 2) -> None:
        """Fail every `every`-th record inside 200 responses (FailedPutCount > 0)."""
        with self._lock:
            self._fail_every = every
        self._set_fault("fail_records", calls)

    def server_error(self, calls: int = FOREVER) -> None:
        """Answer calls with HTTP 500 InternalFailure."""
        self._set_fault("server_error", calls)

    def drop_connections(self, calls: int = FOREVER) -> None:
        """Close the connection without a response, before accepting anything."""
        self._set_fault("drop", calls)

    def malformed_answers(self, calls: int = FOREVER, shape: str = "missing") -> None:
        """Answer calls with 200 and a body Firehose never sends, accepting nothing: `missing`
        (no RequestResponses), `short` (one response fewer than records) or `garbage` (not
        JSON)."""
        if shape not in MALFORMED_SHAPES:
            raise ValueError(f"shape must be one of {', '.join(MALFORMED_SHAPES)}")
        with self._lock:
            self._malformed = shape
        self._set_fault("malformed", calls)

    def fail_calls(self, code: str, status: int = 400, calls: int = FOREVER) -> None:
        """Answer calls with this error (e.g. AccessDeniedException, KMSDisabledException)."""
        with self._lock:
            self._call_error = (code, status)
        self._set_fault("call_error", calls)

    def refuse_records(self, marker: bytes | None) -> None:
        """Reject, as InvalidArgumentException, every call with a record whose decoded
        payload contains `marker` (None: stop)."""
        with self._lock:
            self._refused = marker

    def delay(self, seconds: float) -> None:
        """Wait this long before answering each call."""
        with self._lock:
            self._delay = seconds

    def require_streams(self, *names: str) -> None:
        """From now on only these streams (and those created later) exist."""
        with self._lock:
            self._explicit_streams = True
            self.streams = set(names)

    def create_stream(self, name: str) -> None:
        """Create a stream (after require_streams)."""
        with self._lock:
            self.streams.add(name)

    def delete_stream(self, name: str) -> None:
        """Delete a stream: calls to it fail with ResourceNotFoundException."""
        with self._lock:
            self._explicit_streams = True
            self.streams.discard(name)

    def clear_faults(self) -> None:
        """Back to normal (streams stay as they are)."""
        with self._lock:
            self._faults.clear()
            self._refused = None
            self._delay = 0.0

    def set_quota(self, quota: Quota | None, stream: str | None = None) -> None:
        """Enforce `quota` on `stream` (None: the default for streams without their own);
        a None quota removes it. Buckets start full."""
        with self._lock:
            if stream is None:
                self._quota = quota or Quota()
            elif quota is None:
                self._stream_quotas.pop(stream, None)
            else:
                self._stream_quotas[stream] = quota
            self._buckets.clear()

    def quota_of(self, stream: str) -> Quota:
        """The quota enforced on `stream`."""
        with self._lock:
            return self._stream_quotas.get(stream, self._quota)

    def _admit(self, stream: str, datas: list[bytes]) -> int | None:
        """Records of a call that fit the stream's quota (see _Buckets.admit); counted."""
        now = self._clock()
        with self._lock:
            if stream not in self._buckets:
                quota = self._stream_quotas.get(stream, self._quota)
                limited = quota != Quota()
                self._buckets[stream] = _Buckets(quota, now) if limited else None
            buckets = self._buckets[stream]
            if buckets is None:
                return len(datas)
            fit = buckets.admit(datas, now)
            if fit is None:
                self.stats.throttled_calls += 1
            elif fit < len(datas):
                self.stats.partly_throttled_calls += 1
            self.stats.throttled_records += len(datas) - (fit or 0)
            return fit

    def _set_fault(self, name: str, calls: int) -> None:
        with self._lock:
            self._faults[name] = calls

    def _take_fault(self, name: str) -> bool:
        with self._lock:
            left = self._faults.get(name, 0)
            if left == 0:
                return False
            if left > 0:
                self._faults[name] = left - 1
            self.stats.faults[name] = self.stats.faults.get(name, 0) + 1
            return True

    # ----- reading results
    def received(self, stream: str | None = None) -> list[bytes]:
        """Decoded record data accepted so far (optionally for one stream)."""
        with self._lock:
            return [data for name, data in self.records if stream is None or name == stream]

    def stats_dict(self) -> dict[str, Any]:
        """Counters as a dict."""
        with self._lock:
            return dict(self.stats.__dict__)

    # ----- protocol
    def handle(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        """Dispatch one JSON 1.1 request; raises FirehoseError for error responses."""
        op = target.removeprefix(TARGET_PREFIX)
        if op == "PutRecordBatch":
            return self._put_batch(body)
        if op == "PutRecord":
            resp = self._put_batch(
                {
                    "DeliveryStreamName": body.get("DeliveryStreamName"),
                    "Records": [body.get("Record")],
                }
            )
            first = resp["RequestResponses"][0]
            if "ErrorCode" in first:  # PutRecord has no per-record answers: the call fails
                raise FirehoseError(SLOW_DOWN_STATUS, first["ErrorCode"], first["ErrorMessage"])
            return {"RecordId": first.get("RecordId"), "Encrypted": False}
        if op == "DescribeDeliveryStream":
            return self._describe(str(body.get("DeliveryStreamName")))
        if op == "ListDeliveryStreams":
            with self._lock:
                names = sorted(self.streams)
            return {"DeliveryStreamNames": names, "HasMoreDeliveryStreams": False}
        raise FirehoseError(400, "UnknownOperationException", f"unsupported: {target}")

    def _put_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        stream = body.get("DeliveryStreamName")
        records = body.get("Records")
        if not isinstance(stream, str) or not isinstance(records, list) or not records:
            raise FirehoseError(400, "InvalidArgumentException", "missing stream or records")
        datas = [_decode(r) for r in records]
        _check_limits(datas)
        with self._lock:
            delay, refused, missing = (
                self._delay,
                self._refused,
                self._explicit_streams and stream not in self.streams,
            )
            call_error = self._call_error
        if delay:
            time.sleep(delay)
        if missing:
            raise FirehoseError(
                400,
                "ResourceNotFoundException",
                f"Firehose {stream} under account 000000000000 not found.",
            )
        if refused is not None and any(refused in decode_payload(d) for d in datas):
            with self._lock:
                self.stats.faults["refused"] = self.stats.faults.get("refused", 0) + 1
            raise FirehoseError(400, "InvalidArgumentException", "Record is not valid.")
        if self._take_fault("call_error"):
            raise FirehoseError(call_error[1], call_error[0], f"injected {call_error[0]}")
        if self._take_fault("throttle"):
            raise FirehoseError(503, "ServiceUnavailableException", "Slow down.")
        if self._take_fault("server_error"):
            raise FirehoseError(500, "InternalFailure", "We encountered an internal error.")
        if self._take_fault("malformed"):
            with self._lock:
                shape = self._malformed
            raise MalformedAnswerError(shape, len(datas))
        fit = self._admit(stream, datas)
        if fit is None:
            raise FirehoseError(SLOW_DOWN_STATUS, *SLOW_DOWN)
        failing = self._take_fault("fail_records")
        with self._lock:
            every = self._fail_every
        accepted: list[bytes] = []
        responses: list[dict[str, str]] = []
        for i, data in enumerate(datas):
            if (failing and i % every == 0) or i >= fit:
                responses.append({"ErrorCode": SLOW_DOWN[0], "ErrorMessage": SLOW_DOWN[1]})
            else:
                accepted.append(data)
                responses.append({"RecordId": uuid.uuid4().hex})
        self._accept(stream, accepted)
        failed = len(datas) - len(accepted)
        return {"FailedPutCount": failed, "Encrypted": False, "RequestResponses": responses}

    def _accept(self, stream: str, datas: list[bytes]) -> None:
        lines = sum(_count_lines(d) for d in datas) if self.count_lines else 0
        with self._lock:
            if not self._explicit_streams:
                self.streams.add(stream)
            st = self.stats
            st.calls += 1
            st.records += len(datas)
            st.bytes += sum(len(d) for d in datas)
            st.billed_bytes += sum(billed_bytes(len(d)) for d in datas)
            st.lines += lines
            if self.store:
                self.records.extend((stream, d) for d in datas)
        if self.sink is not None and datas:
            self.sink(stream, datas)

    def _describe(self, name: str) -> dict[str, Any]:
        with self._lock:
            if self._explicit_streams and name not in self.streams:
                raise FirehoseError(400, "ResourceNotFoundException", f"{name} not found.")
        return {
            "DeliveryStreamDescription": {
                "DeliveryStreamName": name,
                "DeliveryStreamARN": ARN_PREFIX + name,
                "DeliveryStreamStatus": "ACTIVE",
                "DeliveryStreamType": "DirectPut",
                "VersionId": "1",
                "CreateTimestamp": time.time(),
                "Destinations": [],
                "HasMoreDestinations": False,
            }
        }


class MalformedAnswerError(Exception):
    """A 200 answer of a shape Firehose never sends (see malformed_answers)."""

    def __init__(self, shape: str, records: int) -> None:
        super().__init__(shape)
        self.shape = shape
        self.records = records

    def body(self) -> bytes:
        """The answer's body."""
        if self.shape == "garbage":
            return b"<html>not json</html>"
        responses = [{"RecordId": uuid.uuid4().hex} for _ in range(self.records - 1)]
        if self.shape == "short":
            return orjson.dumps({"FailedPutCount": 0, "RequestResponses": responses})
        return orjson.dumps({"FailedPutCount": 0, "Encrypted": False})


def _decode(record: Any) -> bytes:
    if not isinstance(record, dict) or not isinstance(record.get("Data"), str):
        raise FirehoseError(400, "InvalidArgumentException", "record without Data")
    try:
        return base64.b64decode(record["Data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FirehoseError(400, "InvalidArgumentException", "Data is not base64") from exc


def _check_limits(datas: list[bytes]) -> None:
    if len(datas) > MAX_RECORDS_PER_CALL:
        raise FirehoseError(
            400, "InvalidArgumentException", f"{len(datas)} records > {MAX_RECORDS_PER_CALL}"
        )
    for data in datas:
        if len(data) > MAX_RECORD_BYTES:
            raise FirehoseError(
                400, "InvalidArgumentException", f"record of {len(data)} > {MAX_RECORD_BYTES}"
            )
    if sum(len(d) for d in datas) > MAX_CALL_BYTES:
        raise FirehoseError(400, "InvalidArgumentException", "request data > 4 MiB")


def _count_lines(data: bytes) -> int:
    return split_header(decode_payload(data))[1].count(b"\n")


def _make_handler(endpoint: FirehoseEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if length > 2 * MAX_CALL_BYTES:  # base64 + JSON of 4 MiB of data fits
                self._error(FirehoseError(413, "InvalidArgumentException", "request too large"))
                return
            if endpoint._take_fault("drop"):
                self._drop()
                return
            try:
                body = orjson.loads(raw or b"{}")
                result = endpoint.handle(self.headers.get("X-Amz-Target", ""), body)
            except FirehoseError as exc:
                with endpoint._lock:
                    endpoint.stats.rejected_calls += exc.code == "InvalidArgumentException"
                self._error(exc)
                return
            except orjson.JSONDecodeError:
                self._error(FirehoseError(400, "SerializationException", "bad JSON"))
                return
            except MalformedAnswerError as exc:
                self._send(200, exc.body())
                return
            self._send(200, orjson.dumps(result))

        def do_GET(self) -> None:
            if self.path == "/stats":
                self._send(200, orjson.dumps(endpoint.stats_dict()))
            else:
                self._send(404, b"{}")

        def _error(self, exc: FirehoseError) -> None:
            body = orjson.dumps({"__type": exc.code, "message": exc.message})
            self._send(exc.status, body, {"x-amzn-ErrorType": exc.code})

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    return Handler


def main() -> None:
    """Run the endpoint until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4573)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--count-only", action="store_true", help="do not keep records")
    parser.add_argument("--count-lines", action="store_true", help="count delivered lines")
    parser.add_argument(
        "--quota-bytes-per-second",
        type=rate,
        metavar="N",
        help="every stream's byte quota (default: unlimited)",
    )
    parser.add_argument(
        "--quota-records-per-second",
        type=rate,
        metavar="N",
        help="every stream's record quota (default: unlimited)",
    )
    parser.add_argument(
        "--quota-calls-per-second",
        type=rate,
        metavar="N",
        help="every stream's PutRecord(Batch) call quota (default: unlimited)",
    )
    parser.add_argument("--stream-quota", action="append", default=[], metavar="NAME:QUOTA",
                        help="one stream's own quota, e.g. 'logs:bytes=1048576,calls=1000' "
                        "(unset parts are unlimited); repeatable")  # fmt: skip
    args = parser.parse_args()
    default = Quota(
        args.quota_bytes_per_second, args.quota_records_per_second, args.quota_calls_per_second
    )
    streams = {}
    for item in args.stream_quota:
        name, colon, quota = item.partition(":")
        try:
            if not colon or not name.strip():
                raise ValueError(f"must be NAME:QUOTA, got {item!r}")
            streams[name.strip()] = Quota.parse(quota)
        except ValueError as exc:
            parser.error(f"--stream-quota: {exc}")
    endpoint = FirehoseEndpoint(
        args.port, args.host, store=not args.count_only, count_lines=args.count_lines,
        quota=default, stream_quotas=streams,
    )  # fmt: skip
    endpoint.start()
    print(f"firehose endpoint listening on {endpoint.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        endpoint.stop()


if __name__ == "__main__":
    main()
