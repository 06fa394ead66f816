"""Health: liveness of the main loop, readiness as delivery progress, and the HTTP server
for /healthz, /readyz and /metrics.

- `/healthz` (liveness): 200 while the main loop iterates and every sender thread runs; 503
  when the loop has not iterated for `stale_after` seconds, or a sender thread died (the main
  loop replaces it at once). A Firehose outage does not fail it: restarting would not help.
- `/readyz` (readiness): 200 unless records have waited longer than `max_lag` seconds for an
  acknowledgement *and* no acknowledgement at all came for as long (Firehose down, the stream
  missing, access denied), or the buffer has been full with nothing in flight for longer
  than `max_lag`; 503 with the reason otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        self.senders_alive: Callable[[], bool] = lambda: True
        # Computed when scraped, so the value is as of the scrape, not of the last loop.
        metrics.delivery_lag.set_function(self.delivery_lag)
        metrics.ready.set_function(lambda: 1 if self.ready()[0] else 0)

    def beat(self) -> None:
        """Called by the main loop on every iteration."""
        self.heartbeat = time.monotonic()

    def delivery(
        self, oldest_sent: float | None, oldest_read: float | None, last_ack: float
    ) -> None:
        """Record delivery progress: the oldest record sent and the oldest line read but not
        acknowledged (monotonic times, None when there is none), and the last acknowledgement."""
        self.waiting_since, self.oldest_read, self.last_ack = oldest_sent, oldest_read, last_ack

    def stuck(self, since: float | None) -> None:
        """Record since when (monotonic) the buffer is full with nothing in flight, or None."""
        self.stuck_since = since

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
        now = time.monotonic()
        stuck = self.stuck_since
        if stuck is not None and now - stuck > self.max_lag:
            return False, f"buffer full for {now - stuck:.0f} s with nothing in flight"
        since = self.waiting_since
        if since is not None and now - since > self.max_lag and now - self.last_ack > self.max_lag:
            return False, (
                f"no acknowledgement from Firehose for {now - self.last_ack:.0f} s; "
                f"oldest record waiting {now - since:.0f} s"
            )
        return True, "ok"


def serve(health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Start the HTTP server in a daemon thread."""
    registry = health.metrics.registry

    class Handler(BaseHTTPRequestHandler):
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

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
