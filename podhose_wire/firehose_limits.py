"""Firehose's PutRecordBatch limits, what a record and a call cost, and the Direct PUT quotas
(https://docs.aws.amazon.com/firehose/latest/dev/limits.html).

    >>> call_cost(3), billed_bytes(1), billed_bytes(BILLING_UNIT + 1)
    (20, 5120, 10240)
    >>> [len(call) for call in calls([b"x"] * 1001)]
    [500, 500, 1]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

MAX_RECORDS_PER_CALL = 500
# "1,000 KB" per record, before base64.
MAX_RECORD_BYTES = 1_024_000
# 4 MiB for the entire request. Senders keep the base64-encoded request under it (call_cost),
# the stricter reading of the documentation, so calls stay valid under either reading.
MAX_CALL_BYTES = 4 * 1024 * 1024
# Firehose bills every record rounded up to the next 5 KB.
BILLING_UNIT = 5 * 1024


def call_cost(record_len: int) -> int:
    """Bytes a record adds to a PutRecordBatch request body (base64 plus JSON framing)."""
    return (record_len + 2) // 3 * 4 + 16


def billed_bytes(record_len: int) -> int:
    """Bytes Firehose bills for one record."""
    return -(-record_len // BILLING_UNIT) * BILLING_UNIT


def calls(records: list[bytes]) -> Iterator[list[bytes]]:
    """`records` in order, grouped into PutRecordBatch calls within the limits (a record over
    MAX_RECORD_BYTES is the caller's to leave out)."""
    call: list[bytes] = []
    size = 0
    for record in records:
        cost = call_cost(len(record))
        if call and (len(call) == MAX_RECORDS_PER_CALL or size + cost > MAX_CALL_BYTES):
            yield call
            call, size = [], 0
        call.append(record)
        size += cost
    if call:
        yield call


@dataclass(frozen=True)
class Quota:
    """A stream's quota per second (None: unlimited), PutRecord and PutRecordBatch together.
    Direct PUT defaults are LARGE_REGION_QUOTA in us-east-1, us-west-2 and eu-west-1 and
    SMALL_REGION_QUOTA elsewhere; AWS raises the three together, in proportion, on request."""

    bytes_per_second: float | None = None
    records_per_second: float | None = None
    calls_per_second: float | None = None

    @classmethod
    def parse(cls, text: str) -> Quota:
        """`bytes=N,records=N,calls=N` (at least one of them; each N a number above 0).

        >>> Quota.parse("bytes=1048576,calls=1000")
        Quota(bytes_per_second=1048576.0, records_per_second=None, calls_per_second=1000.0)
        >>> Quota.parse("bytes=nan")
        Traceback (most recent call last):
        ...
        ValueError: a quota is a number of units per second above 0, got 'nan'
        """
        values: dict[str, float] = {}
        for part in (p.strip() for p in text.split(",")):
            key, _, value = part.partition("=")
            if key.strip() not in ("bytes", "records", "calls") or not value:
                raise ValueError(f"quota part must be bytes=, records= or calls=, got {part!r}")
            values[f"{key.strip()}_per_second"] = rate(value)
        return cls(**values)


def rate(text: str) -> float:
    """A quota's units per second: a finite number above 0.

    >>> rate("1e6")
    1000000.0
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise ValueError(f"a quota is a number of units per second above 0, got {text!r}")
    return value


LARGE_REGION_QUOTA = Quota(5 * 1024 * 1024, 500_000, 2_000)
SMALL_REGION_QUOTA = Quota(1024 * 1024, 100_000, 1_000)
