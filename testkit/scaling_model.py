"""How far one Firehose stream goes: nodes per stream, calls and records per second, the
5 KB billing floor, and the transform Lambda's concurrency and cost (docs/scaling.md).

`python -m bench.scaling` prints the tables docs/scaling.md shows (tests/unit/test_scaling_model.py
checks the page against them); `--measure` there gives the figures of MEASURED_NODE_RATES.

Every function is pure: rates in bytes per second, ratios as billed (or sent) bytes per raw byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from devstack.stack_config import load_template
from forwarder.config import defaults
from forwarder.send_queue import CALL_TARGET_BYTES
from podhose_wire.firehose_limits import (
    BILLING_UNIT,
    LARGE_REGION_QUOTA,
    SMALL_REGION_QUOTA,
    call_cost,
)
from podhose_wire.firehose_limits import Quota as RegionQuota
from testkit.prices import FIREHOSE_USD_PER_GB, GB_SECOND_USD, REQUEST_USD

MIB = 1024 * 1024
MB = 1_000_000
GB = 1_000_000_000
# AWS prices a month as 730 hours.
MONTH_S = 730 * 3600

FLUSH_INTERVAL_S: float = defaults()["flush_interval"]  # --flush-interval, forwarder/config.py
MAX_RECORD_BYTES: int = defaults()["max_record_bytes"]  # --max-record-bytes (raw lines)

_PARAMS = load_template()["Parameters"]
# template.yaml defaults: Firehose buffers this much incoming data (or this long) per
# transform invocation, and the function's memory.
PROCESSOR_BUFFER_BYTES = float(_PARAMS["ProcessorBufferSizeMB"]["Default"]) * MB
PROCESSOR_INTERVAL_S = float(_PARAMS["ProcessorBufferIntervalSeconds"]["Default"])
LAMBDA_MEMORY_GB = float(_PARAMS["TransformMemorySize"]["Default"]) / 1024


@dataclass(frozen=True)
class Quota:
    """A Direct PUT stream's default quota (PutRecord + PutRecordBatch together). AWS raises
    the three together, in proportion, on request (Firehose developer guide, "Quota")."""

    name: str
    bytes_per_s: float
    calls_per_s: float
    records_per_s: float

    @classmethod
    def of(cls, name: str, quota: RegionQuota) -> Quota:
        """The named quota of `quota` (podhose_wire.firehose_limits)."""
        assert quota.bytes_per_second and quota.calls_per_second and quota.records_per_second
        return cls(name, quota.bytes_per_second, quota.calls_per_second, quota.records_per_second)


# The three large regions, and most others (us-east-2, us-west-1, ap-*, ca-central-1,
# eu-central-1, eu-west-2, eu-west-3, eu-north-1, me-south-1, sa-east-1, GovCloud, ...).
QUOTAS = (
    Quota.of("us-east-1, us-west-2, eu-west-1", LARGE_REGION_QUOTA),
    Quota.of("most other regions", SMALL_REGION_QUOTA),
)

# Billed (5 KB-rounded) bytes per raw byte with the default encoding on ~1 MiB records,
# docs/benchmarks.md "Forwarder" (bench/forwarder.py): Fluent Bit's backlog shape (14.6x)
# and the higher-entropy mix (9.7x). Bytes as sent are a little less; the quota counts those.
RATIO_BACKLOG = 0.0685
RATIO_MIX = 0.1027
# Average line of the backlog shape, bytes (docs/benchmarks.md, "avg bytes").
LINE_BYTES = 246.4
# Transform seconds per MB of lines at the template's 512 MB: Fluent Bit's mix in 3 MB
# buffers, 696 ms for 30 MB (docs/benchmarks.md "Lambda memory", bench/lambda_memory.py),
# where the CPU quota binds throughout. The default 0.25 MB buffer measured 27 ms for 2.5 MB
# (fits one CPU period): the figure used here is the slower, conservative one.
TRANSFORM_S_PER_RAW_MB = 0.696 / 30

# What one forwarder sent at --flush-interval 1, 2 and 5 (calls/s, records/s) with 30
# containers logging 250-byte lines at random times, 6.7 lines/s each (~58 KB/s a node);
# `python -m bench.scaling --measure`, 2-core development machine, 2026-12-03, after the
# flush tick (docs/scaling.md "Calls per second"): all open records of a stream close at
# one tick per interval and share a call, so calls/s is ~1/flush_interval, and records/s is
# about the files that logged in each interval (before the tick: 8.0 calls/s at 1 s).
MEASURED_NODE_RATES = {1.0: (0.9, 27.0), 2.0: (0.5, 14.0), 5.0: (0.2, 5.0)}

# Planning assumptions for the tables (not measured here): containers logging per node.
ACTIVE_FILES = 30
NODE_COUNTS = (100, 1_000, 5_000)
NODE_RATES = (10_000, 50_000, 100_000, 250_000, 1_000_000)  # bytes of log per node per second


# ---- the forwarder's side: records, calls, bytes ----------------------------------------------
def records_per_file(line_rate: float, flush_interval: float = FLUSH_INTERVAL_S) -> float:
    """Records per second one file yields: a record opens at a line, closes flush_interval later,
    and the next opens at the next line (lines at random times, `line_rate` a second), or
    whenever MAX_RECORD_BYTES of lines fill one first.

    >>> records_per_file(1.0, 1.0), records_per_file(0.0, 1.0)
    (0.5, 0.0)
    """
    if line_rate <= 0:
        return 0.0
    by_age = line_rate / (1 + line_rate * flush_interval)
    by_size = line_rate * LINE_BYTES / MAX_RECORD_BYTES
    return max(by_age, by_size)


def node_records(
    node_rate: float, files: int = ACTIVE_FILES, flush_interval: float = FLUSH_INTERVAL_S
) -> float:
    """Records per second a node sends when `files` containers share `node_rate` bytes/s."""
    return files * records_per_file(node_rate / files / LINE_BYTES, flush_interval)


def node_calls_floor(
    node_rate: float, ratio: float = RATIO_BACKLOG, flush_interval: float = FLUSH_INTERVAL_S
) -> float:
    """The fewest PutRecordBatch calls per second a node can send while it has lines: one per
    flush interval, or one per CALL_TARGET_BYTES of base64 records when busier."""
    if node_rate <= 0:
        return 0.0
    return max(1 / flush_interval, call_cost(round(node_rate * ratio)) / CALL_TARGET_BYTES)


def billed_per_node(node_rate: float, records: float, ratio: float = RATIO_BACKLOG) -> float:
    """Billed bytes per second: the compressed bytes, but at least BILLING_UNIT per record."""
    return max(node_rate * ratio, records * BILLING_UNIT)


# ---- one stream's quota -----------------------------------------------------------------------
def nodes_per_stream(
    quota: Quota, node_rate: float, ratio: float, calls_per_node: float, records_per_node: float
) -> tuple[float, str]:
    """(nodes one stream takes, which quota binds): bytes as sent, calls or records."""
    limits = {
        "bytes": quota.bytes_per_s / (node_rate * ratio),
        "calls": quota.calls_per_s / calls_per_node,
        "records": quota.records_per_s / records_per_node,
    }
    binding = min(limits, key=lambda k: limits[k])
    return limits[binding], binding


def streams_needed(
    quota: Quota, nodes: int, node_rate: float, ratio: float, *, calls: float, records: float
) -> int:
    """Streams (at their default quota) for `nodes` nodes spread evenly over them."""
    per_stream, _ = nodes_per_stream(quota, node_rate, ratio, calls, records)
    return math.ceil(nodes / per_stream)


# ---- the transform Lambda ---------------------------------------------------------------------
@dataclass(frozen=True)
class LambdaLoad:
    """The transform behind one stream, or behind all streams of a cluster together."""

    invocations_per_s: float
    duration_s: float
    concurrency: float
    usd_per_month: float


def lambda_load(nodes: int, node_rate: float, ratio: float = RATIO_BACKLOG) -> LambdaLoad:
    """Firehose invokes the transform per PROCESSOR_BUFFER_BYTES of incoming (sent) data, or
    every PROCESSOR_INTERVAL_S when less comes; concurrency is rate x duration (Little's law)."""
    incoming = nodes * node_rate * ratio
    invocations = max(incoming / PROCESSOR_BUFFER_BYTES, 1 / PROCESSOR_INTERVAL_S)
    raw_mb = nodes * node_rate / MB / invocations
    duration = raw_mb * TRANSFORM_S_PER_RAW_MB
    per_call = duration * LAMBDA_MEMORY_GB * GB_SECOND_USD + REQUEST_USD
    monthly = invocations * per_call * MONTH_S
    return LambdaLoad(invocations, duration, invocations * duration, monthly)


def firehose_usd_per_month(billed_bytes_per_s: float) -> float:
    """Firehose ingestion for a month at FIREHOSE_USD_PER_GB (first tier, us-east-1)."""
    return billed_bytes_per_s * MONTH_S / GB * FIREHOSE_USD_PER_GB


# ---- the tables docs/scaling.md shows ---------------------------------------------------------
def planning_calls(flush_interval: float = FLUSH_INTERVAL_S) -> float:
    """Calls per node per second to plan for: the measured figure at this flush interval."""
    return MEASURED_NODE_RATES[flush_interval][0]


def nodes_table() -> list[list[str]]:
    """Nodes per stream by per-node log rate, quota class and compression, at the defaults."""
    rows = []
    for quota in QUOTAS:
        for rate in NODE_RATES:
            records = node_records(rate)
            row = [quota.name, f"{rate / 1000:,.0f}", f"{records:.1f}"]
            for ratio in (RATIO_BACKLOG, RATIO_MIX):
                n, binding = nodes_per_stream(quota, rate, ratio, planning_calls(), records)
                row.append(f"{n:,.0f} ({binding})")
            floor_n, floor_binding = nodes_per_stream(
                quota, rate, RATIO_BACKLOG, node_calls_floor(rate), records
            )
            row.append(f"{floor_n:,.0f} ({floor_binding})")
            rows.append(row)
    return rows


NODES_HEADER = [
    "quota", "KB/s per node", "records/s per node",
    f"nodes per stream at {1 / RATIO_BACKLOG:.1f}x", f"at {1 / RATIO_MIX:.1f}x",
    "if calls were 1/s per node",
]  # fmt: skip


def fleet_table(node_rate: float = 50_000) -> list[list[str]]:
    """Calls, records, streams, Firehose and Lambda per month at NODE_COUNTS, `node_rate` each."""
    rows = []
    records = node_records(node_rate)
    for nodes in NODE_COUNTS:
        calls = nodes * planning_calls()
        lam = lambda_load(nodes, node_rate)
        billed = billed_per_node(node_rate, records) * nodes
        streams = [
            streams_needed(
                q, nodes, node_rate, RATIO_BACKLOG, calls=planning_calls(), records=records
            )
            for q in QUOTAS
        ]
        rows.append([
            f"{nodes:,}", f"{calls:,.0f}", f"{nodes * records:,.0f}",
            f"{nodes * node_rate * RATIO_BACKLOG / MIB:.2f}", *(f"{s}" for s in streams),
            f"{lam.invocations_per_s:.1f}", f"{lam.duration_s * 1000:.0f}",
            f"{lam.concurrency:.1f}",
            f"${lam.usd_per_month:,.0f}", f"${firehose_usd_per_month(billed):,.0f}",
        ])  # fmt: skip
    return rows


FLEET_HEADER = [
    "nodes", "calls/s", "records/s", "MiB/s sent", "streams (5 MiB/s class)",
    "streams (1 MiB/s class)", "Lambda invocations/s", "ms each", "Lambda concurrency",
    "Lambda $/month", "Firehose $/month",
]  # fmt: skip


def flush_table(node_rate: float = 50_000, nodes: int = 1_000) -> list[list[str]]:
    """What the flush interval changes for `nodes` nodes: calls, records, billed bytes, $."""
    rows = []
    for flush, (calls, _measured_records) in MEASURED_NODE_RATES.items():
        records = node_records(node_rate, flush_interval=flush)
        billed = billed_per_node(node_rate, records)
        rows.append([
            f"{flush:g}", f"{nodes * calls:,.0f}", f"{nodes * records:,.0f}",
            f"{billed / node_rate:.2f}", f"${firehose_usd_per_month(billed * nodes):,.0f}",
        ])  # fmt: skip
    return rows


FLUSH_HEADER = ["--flush-interval s", "calls/s", "records/s", "billed / raw", "Firehose $/month"]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
