"""A log that says the same thing at most once per interval and counts what it held back."""

from __future__ import annotations

import threading
import time


class RateLimitedLog:
    """Says a thing at most once per `interval` seconds per key; counts what it held back."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def due(self, key: str) -> int | None:
        """None when `key` was said less than `interval` ago; else how many were held back."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)

    def forget(self, keys: list[str]) -> None:
        """Say `keys` at once the next time they come."""
        with self._lock:
            for key in keys:
                self._last.pop(key, None)
                self._held.pop(key, None)
