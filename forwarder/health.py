"""Health: liveness of the main loop, readiness as delivery progress, and the HTTP server
for /healthz, /readyz and /metrics.

- `/healthz` (liveness): 200 while the main loop iterates and every sender thread runs; 503
  when the loop has not iterated for `stale_after` seconds, or a sender thread died (the main
  loop replaces it at once). A Firehose outage does not fail it: restarting would not help.
- `/readyz` (readiness): 200 unless records have waited longer than `max_lag` seconds for an
  acknowledgement *and* no acknowledgement at all came for as long (Firehose down, the stream
  missing, access denied), or the buffer has been full with nothing in flight for longer
  than `max_lag`, or scans have failed for longer than `max_lag` (new files and rotations
  go unseen), or no path matches the globs, or every matched path is unreadable; 503 with
  the reason otherwise.

The server answers GET only, at most MAX_CONNECTIONS connections at once, each allowed
MAX_REQUEST_BYTES and REQUEST_SECONDS for its request: whatever clients send, its threads and
memory stay bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forwarder.metrics import Metrics


class Health:
    """State behind /healthz and /readyz, updated by the main loop."""

    def __init__(self, metrics: Metrics, stale_after: float, max_lag: float) -> None:
        self.metrics = metrics
        self.stale_after = stale_after
        self.max_lag = max_lag
        self.heartbeat = time.monotonic()
        self.waiting_since: float | None = None  # oldest unacknowledged record, monotonic
        self.oldest_read: float | None = None  # oldest unacknowledged line, monotonic
        self.last_ack = time.monotonic()
        self.stuck_since: float | None = None  # buffer full with nothing in flight, since
        self.stuck_stream = ""  # ... of this delivery stream
        self.waiting_stream = ""  # the delivery stream of waiting_since and last_ack
        self.nothing_to_read: str | None = None  # why no file can be read, if none can
        self.scans_failing: tuple[float, str] | None = None  # (since, why) while scans fail
        self.senders_alive: Callable[[], bool] = lambda: True
        # Computed when scraped, so the value is as of the scrape, not of the last loop.
        metrics.delivery_lag.set_function(self.delivery_lag)
        metrics.ready.set_function(lambda: 1 if self.ready()[0] else 0)

    def beat(self) -> None:
        """Called by the main loop on every iteration."""
        self.heartbeat = time.monotonic()

    def delivery(
        self,
        oldest_sent: float | None,
        oldest_read: float | None,
        last_ack: float,
        stream: str = "",
    ) -> None:
        """Record delivery progress: the oldest record sent to `stream` and the oldest line
        read but not acknowledged (monotonic times, None when there is none), and the last
        acknowledgement from `stream` (the stream that waits longest)."""
        self.waiting_since, self.oldest_read, self.last_ack = oldest_sent, oldest_read, last_ack
        self.waiting_stream = stream

    def stuck(self, since: float | None, stream: str = "") -> None:
        """Record since when (monotonic) the buffer share of `stream` is full with nothing in
        flight, or None."""
        self.stuck_since, self.stuck_stream = since, stream

    def delivery_lag(self) -> float:
        """Seconds the oldest unacknowledged line has waited (0 when there is none)."""
        since = self.oldest_read
        return 0.0 if since is None else time.monotonic() - since

    def live(self) -> bool:
        """True while the main loop iterates and every sender thread runs."""
        return time.monotonic() - self.heartbeat < self.stale_after and self.senders_alive()

    def ready(self) -> tuple[bool, str]:
        """(ready, why not)."""
        if not self.live():
            return False, "main loop stalled or a sender thread died"
        if self.nothing_to_read is not None:
            return False, "nothing to read: " + self.nothing_to_read
        now = time.monotonic()
        if self.scans_failing is not None and now - self.scans_failing[0] > self.max_lag:
            since, why = self.scans_failing
            return False, f"scans failing for {now - since:.0f} s ({why}): new files go unseen"
        stuck = self.stuck_since
        if stuck is not None and now - stuck > self.max_lag:
            return False, (
                f"buffer full for {now - stuck:.0f} s with nothing in flight"
                + _of_stream(self.stuck_stream)
            )
        since = self.waiting_since
        if since is not None and now - since > self.max_lag and now - self.last_ack > self.max_lag:
            return False, (
                f"no acknowledgement from Firehose for {now - self.last_ack:.0f} s; "
                f"oldest record waiting {now - since:.0f} s" + _of_stream(self.waiting_stream)
            )
        return True, "ok"


def _of_stream(stream: str) -> str:
    return f" (stream {stream})" if stream else ""


MAX_CONNECTIONS = 8  # served at once; more are closed at once (bounded threads and memory)
MAX_REQUEST_BYTES = 8 * 1024  # request line and headers read from one connection, at most
REQUEST_SECONDS = 5.0  # a client has this long to send its request, in all


class _Request:
    """The request side of one connection, read within MAX_REQUEST_BYTES and REQUEST_SECONDS
    in all (not per read: a client sending a byte at a time gets no more time). Past either,
    it reads as the end of the request (a time-out closes the connection)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.left = MAX_REQUEST_BYTES
        self.deadline = time.monotonic() + REQUEST_SECONDS

    def readline(self, size: int = -1) -> bytes:
        limit = self.left if size < 0 else min(size, self.left)
        while b"\n" not in self.buffer and len(self.buffer) < limit:
            self.sock.settimeout(max(0.001, self.deadline - time.monotonic()))
            chunk = self.sock.recv(1024)
            if not chunk:
                break
            self.buffer += chunk
        end = self.buffer.find(b"\n") + 1 or len(self.buffer)
        line, self.buffer = self.buffer[: min(end, limit)], self.buffer[min(end, limit) :]
        self.left -= len(line)
        return line

    def read(self, size: int = -1) -> bytes:
        return b""  # GET only: no body is read

    def close(self) -> None:
        self.buffer = b""


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the cap: closed without an answer
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that misbehaves or goes away is not the forwarder's problem: quiet."""


def serve(health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Start the HTTP server in a daemon thread (OSError when it cannot bind)."""
    registry = health.metrics.registry

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            super().setup()
            self.rfile = _Request(self.connection)  # type: ignore[assignment]

        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok = health.live()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"stalled\n", "text/plain")
            elif self.path == "/readyz":
                ok, why = health.ready()
                self._reply(200 if ok else 503, why.encode() + b"\n", "text/plain")
            elif self.path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
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

    server = _Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
