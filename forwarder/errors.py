"""Firehose errors by kind, and how long to wait before trying again.

- RETRY: throttling, 5xx, network errors. Exponential backoff with full jitter, capped at
  BACKOFF_CAP seconds, so delivery resumes within seconds once the cause passes.
- PERMANENT: the stream is missing or not active, access or KMS is denied, credentials are
  refused. Nothing the forwarder does will fix it, but an operator will (create the stream,
  attach the policy): retried at a slow fixed pace, PERMANENT_RETRY seconds, forever.
- INVALID: Firehose refuses the request itself. The call is split to find the record it
  refuses; a single record it refuses is skipped (logged and counted).

    >>> classify("ResourceNotFoundException", 400), classify("ThrottlingException", 400)
    (<Kind.PERMANENT: 'permanent'>, <Kind.RETRY: 'retry'>)
    >>> classify("SomethingNew", 503), classify("SomethingNew", 403)
    (<Kind.RETRY: 'retry'>, <Kind.PERMANENT: 'permanent'>)
"""

from __future__ import annotations

import enum
import random
import threading
import time

BACKOFF_BASE = 0.1  # seconds: first retry after up to 0.1 s, doubling
BACKOFF_CAP = 3.0  # seconds: the longest wait after a throttling, 5xx or network error
PERMANENT_RETRY = 5.0  # seconds between tries while the stream or its access is broken


class Kind(enum.Enum):
    """What kind of failure a code is."""

    RETRY = "retry"
    PERMANENT = "permanent"
    INVALID = "invalid"


RETRY_CODES = frozenset({
    "ServiceUnavailableException", "ThrottlingException", "Throttling",
    "ThrottledException", "LimitExceededException", "InternalFailure", "InternalError",
    "InternalServerError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
    "KMSThrottlingException", "RequestExpired",
})  # fmt: skip
PERMANENT_CODES = frozenset({
    "ResourceNotFoundException", "ResourceInUseException", "AccessDeniedException",
    "AccessDenied", "InvalidKMSResourceException", "UnrecognizedClientException",
    "InvalidClientTokenId", "InvalidSignatureException", "ExpiredTokenException",
    "IncompleteSignature", "MissingAuthenticationToken", "NoCredentialsError",
    "PartialCredentialsError", "UnauthorizedOperation", "OptInRequired",
})  # fmt: skip
INVALID_CODES = frozenset(
    {"InvalidArgumentException", "ValidationException", "SerializationException"}
)


def classify(code: str, status: int | None) -> Kind:
    """The kind of an error `code` (with the HTTP `status`; None for per-record errors and
    errors raised before a response)."""
    if code in INVALID_CODES:
        return Kind.INVALID
    if code in RETRY_CODES:
        return Kind.RETRY
    if code in PERMANENT_CODES or code.startswith("KMS"):
        return Kind.PERMANENT
    if status is not None and 400 <= status < 500:
        return Kind.PERMANENT  # an unknown client error: don't hammer; say so
    return Kind.RETRY  # 5xx, network, per-record and anything unexpected


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based) after a RETRY error."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def retry_after(kind: Kind, attempt: int) -> float:
    """Seconds to wait before sending records that failed with `kind` again."""
    if kind is Kind.PERMANENT:
        return PERMANENT_RETRY * random.uniform(0.9, 1.1)
    return backoff(attempt)


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
