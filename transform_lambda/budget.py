"""Fit a Firehose processor response under Lambda's 6 MB synchronous response limit.

Firehose hands the processor up to 3 MB (6 MB base64) of input, and gzip-compressed
podhose records expand 10-20x when transformed. ``plan_response`` decides, for every
record, whether its transformed data fits the response; what does not fit is re-ingested
(see reingest.py) in small chunks and answered ``Dropped``. Records re-ingested before
are placed first, so they cannot be starved, and a record is re-ingested at most
``max_reingest_attempts`` times before it is answered ``ProcessingFailed`` with its
original data: nothing loops and nothing is lost.

Example:
    >>> plan = plan_response([Candidate("a", 10, 4, 0), Candidate("b", 10, 4, 0)], 200, 3)
    >>> plan.fits, [c.record_id for c in plan.overflow]
    (['a'], ['b'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

#: Lambda's limit is 6 MB; keep a margin for JSON framing the estimate does not see.
RESPONSE_BUDGET_BYTES = 6_000_000 - 64 * 1024
#: Per-record JSON framing: {"recordId":"","result":"ProcessingFailed","data":""}, etc.
RECORD_OVERHEAD_BYTES = 96
_METADATA_FRAMING = len(', "metadata": {"partitionKeys": }')


def metadata_bytes(partition_keys: dict[str, str] | None) -> int:
    """What a record's dynamic-partitioning metadata adds to the response (as the Lambda
    runtime's json.dumps writes it, spaces included); 0 without keys.

        >>> metadata_bytes({"namespace": "default", "container": "app"})
        77
    """
    if not partition_keys:
        return 0
    return _METADATA_FRAMING + len(json.dumps(partition_keys))


@dataclass(frozen=True, slots=True)
class Candidate:
    """One record's size in the response if answered with its transformed data."""

    record_id: str
    ok_bytes: int
    original_bytes: int
    attempt: int


@dataclass(slots=True)
class ResponsePlan:
    fits: list[str] = field(default_factory=list)
    overflow: list[Candidate] = field(default_factory=list)
    exhausted: list[Candidate] = field(default_factory=list)
    used_bytes: int = 0


def plan_response(
    candidates: list[Candidate], budget: int, max_reingest_attempts: int
) -> ResponsePlan:
    """Split candidates into those answered with data and those re-ingested or failed."""
    plan = ResponsePlan(used_bytes=len('{"records":[]}'))
    for candidate in sorted(candidates, key=lambda c: -c.attempt):
        cost = candidate.ok_bytes + len(candidate.record_id) + RECORD_OVERHEAD_BYTES
        if plan.used_bytes + cost <= budget:
            plan.fits.append(candidate.record_id)
            plan.used_bytes += cost
        elif candidate.attempt >= max_reingest_attempts:
            plan.exhausted.append(candidate)
            plan.used_bytes += candidate.original_bytes + RECORD_OVERHEAD_BYTES
        else:
            plan.overflow.append(candidate)
            plan.used_bytes += len(candidate.record_id) + RECORD_OVERHEAD_BYTES
    return plan
