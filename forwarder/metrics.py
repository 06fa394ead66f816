"""Prometheus metrics (own registry) and the /healthz + /metrics HTTP server."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)


class Metrics:
    """Every metric the forwarder exposes, plus the main-loop heartbeat behind /healthz."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.lines_read = Counter("podhose_lines_read", "Logical lines read", registry=r)
        self.bytes_read = Counter("podhose_bytes_read", "File bytes read", registry=r)
        self.records_sent = Counter(
            "podhose_records_sent", "Records acknowledged by Firehose", registry=r
        )
        self.bytes_sent = Counter(
            "podhose_bytes_sent", "Record bytes (as sent) acknowledged by Firehose", registry=r
        )
        self.calls = Counter("podhose_calls", "PutRecordBatch calls that returned 200", registry=r)
        self.failures = Counter(
            "podhose_failures", "Failed calls or records, by error code", ["code"], registry=r
        )
        self.retries = Counter("podhose_retries", "Records sent again after a failure", registry=r)
        self.oversize = Counter(
            "podhose_oversize_lines",
            "Lines longer than --max-line-bytes, shipped in pieces",
            registry=r,
        )
        self.truncations = Counter("podhose_truncations", "Files truncated in place", registry=r)
        self.files = Gauge("podhose_files_tracked", "Open log files", registry=r)
        self.buffered = Gauge(
            "podhose_buffered_bytes", "File bytes read but not yet acknowledged", registry=r
        )
        self.lag = Gauge(
            "podhose_file_lag_bytes", "File size minus acknowledged offset", ["file"], registry=r
        )
        self.heartbeat = time.monotonic()
        self.stale_after = 30.0

    def beat(self) -> None:
        """Called by the main loop on every iteration."""
        self.heartbeat = time.monotonic()

    def healthy(self) -> bool:
        """True while the main loop iterates."""
        return time.monotonic() - self.heartbeat < self.stale_after


def serve(metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    """Start the HTTP server in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok = metrics.healthy()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"stalled\n", "text/plain")
            elif self.path == "/metrics":
                self._reply(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
