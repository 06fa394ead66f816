"""The retry policy for Firehose calls: errors by kind, and how long to wait before trying again.

- RETRY: throttling, 5xx, network errors. Exponential backoff with full jitter, capped at
  BACKOFF_CAP seconds, so delivery resumes within seconds once the cause passes.
- PERMANENT: the stream is missing or not active, access or KMS is denied, credentials are
  refused. Nothing a sender does will fix it, but an operator will (create the stream,
  attach the policy): retried at a slow fixed pace, PERMANENT_RETRY seconds, forever.
- INVALID: Firehose refuses the request itself. The forwarder splits the call to find the
  record it refuses and skips a single refused record (logged and counted).

The forwarder's sender waits `retry_after` and tries forever; the transform's re-ingest and
podhose-redrive try a fixed number of times with `backoff` (put_batch.put_with_retries).

    >>> classify("ResourceNotFoundException", 400), classify("ThrottlingException", 400)
    (<Kind.PERMANENT: 'permanent'>, <Kind.RETRY: 'retry'>)
    >>> classify("SomethingNew", 503), classify("SomethingNew", 403)
    (<Kind.RETRY: 'retry'>, <Kind.PERMANENT: 'permanent'>)
"""

from __future__ import annotations

import enum
import random

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


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before retry number `attempt` (0-based) after a RETRY error: full
    jitter up to `base` doubled per attempt, capped at `cap`."""
    return random.uniform(0, min(cap, base * 2**attempt))


def retry_after(kind: Kind, attempt: int) -> float:
    """Seconds to wait before sending records that failed with `kind` again."""
    if kind is Kind.PERMANENT:
        return PERMANENT_RETRY * random.uniform(0.9, 1.1)
    return backoff(attempt)
