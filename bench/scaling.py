"""How far one Firehose stream goes: nodes per stream, calls and records per second, the
5 KB billing floor, and the transform Lambda's concurrency and cost (docs/scaling.md).

`python -m bench.scaling [--plot docs/images/scaling.png]` prints the tables docs/scaling.md
shows (tests/unit/test_scaling_model.py checks the page against them). `--measure` runs the real
forwarder against the local endpoint for ~3 minutes and prints the calls and records per
second one node sends, the figures MEASURED_NODE_RATES below come from.

Every function is pure: rates in bytes per second, ratios as billed (or sent) bytes per raw byte.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import plotting
from bench.forwarder import FIREHOSE_USD_PER_GB
from bench.lambda_memory import GB_SECOND_USD, REQUEST_USD
from forwarder.batcher import CALL_TARGET_BYTES
from forwarder.config import Config
from forwarder.limits import BILLING_UNIT, call_cost
from localaws.stack_config import load_template

MIB = 1024 * 1024
MB = 1_000_000
GB = 1_000_000_000
# AWS prices a month as 730 hours.
MONTH_S = 730 * 3600

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}
FLUSH_INTERVAL_S: float = _DEFAULTS["flush_interval"]  # --flush-interval, forwarder/config.py
MAX_RECORD_BYTES: int = _DEFAULTS["max_record_bytes"]  # --max-record-bytes (raw lines)

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


# https://docs.aws.amazon.com/firehose/latest/dev/limits.html (checked 2026-12): the three
# large regions, and most others (us-east-2, us-west-1, ap-*, ca-central-1, eu-central-1,
# eu-west-2, eu-west-3, eu-north-1, me-south-1, sa-east-1, GovCloud, ...).
QUOTAS = (
    Quota("us-east-1, us-west-2, eu-west-1", 5 * MIB, 2_000, 500_000),
    Quota("most other regions", 1 * MIB, 1_000, 100_000),
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


# ---- the plot ---------------------------------------------------------------------------------
def plot(path: Path) -> None:
    """Nodes per stream against log rate per node, per quota class and compression."""
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    rates = [10_000 * (100 ** (i / 60)) for i in range(61)]  # 10 KB/s to 1 MB/s
    colours = {QUOTAS[0].name: "tab:blue", QUOTAS[1].name: "tab:orange"}
    for quota in QUOTAS:
        colour = colours[quota.name]
        for ratio, style in ((RATIO_BACKLOG, "-"), (RATIO_MIX, "--")):
            ax.plot(
                [r / 1000 for r in rates],
                [quota.bytes_per_s / (r * ratio) for r in rates],
                style, color=colour, lw=1.2, alpha=0.6,
                label=f"{quota.name}: bytes alone, {1 / ratio:.1f}x",
            )  # fmt: skip
        calls = [nodes_per_stream(quota, r, RATIO_BACKLOG, planning_calls(), node_records(r))
                 for r in rates]  # fmt: skip
        ax.plot(
            [r / 1000 for r in rates], [n for n, _ in calls], color=colour, lw=2.8,
            label=f"{quota.name}: all three quotas, {1 / RATIO_BACKLOG:.1f}x, "
            f"{planning_calls():g} calls/s a node",
        )  # fmt: skip
        bound = [r / 1000 for r, (_, b) in zip(rates, calls, strict=True) if b == "calls"]
        if bound:
            ax.axvspan(min(bound), max(bound), color=colour, alpha=0.07)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("log rate per node, KB/s (raw lines)")
    ax.set_ylabel("nodes per stream (default quota)")
    ax.set_title("Nodes one Firehose stream takes (shaded: the calls quota binds, not bytes)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower left")
    plotting.save(fig, path)


# ---- measuring one node -----------------------------------------------------------------------
def measure(files: int, lines_per_s: float, flush: float, seconds: float = 30) -> dict[str, float]:
    """Run the forwarder on `files` CRI files each written `lines_per_s` 250-byte lines a second
    at random times; what the local endpoint received per second."""
    from localaws.firehose_endpoint import FirehoseEndpoint
    from tests.forwarder_testlib import Node, cri_line, fwd, wait_for

    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp, FirehoseEndpoint() as endpoint:
        node = Node(Path(tmp) / "node")
        containers = [node.add(f"pod{i}") for i in range(files)]
        flags = ("--flush-interval", str(flush), "--scan-interval", "1")
        proc = fwd(endpoint, node, Path(tmp), *flags)
        proc.start()
        try:
            wait_for(proc.up, 30, "the forwarder")
            time.sleep(1.5)
            before, start = endpoint.stats_dict(), time.monotonic()
            due = [start + rng.expovariate(lines_per_s) for _ in containers]
            while time.monotonic() < start + seconds:
                now = time.monotonic()
                for i, c in enumerate(containers):
                    while due[i] <= now:
                        c.write(cri_line("x" * 250))
                        due[i] += rng.expovariate(lines_per_s)
                time.sleep(0.01)
            after, elapsed = endpoint.stats_dict(), time.monotonic() - start
        finally:
            proc.stop()
    return {k: (after[k] - before[k]) / elapsed for k in ("calls", "records", "billed_bytes")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="write the PNG here")
    parser.add_argument("--measure", action="store_true", help="measure one node (~3 minutes)")
    args = parser.parse_args()
    if args.measure:
        for files, rate, flush in ((30, 6.7, 1.0), (30, 0.5, 1.0), (100, 0.2, 1.0), (5, 40, 1.0),
                                   (30, 6.7, 2.0), (30, 6.7, 5.0)):  # fmt: skip
            got = measure(files, rate, flush)
            print(f"files {files}, {rate} lines/s each, flush {flush:g} s: "
                  f"{got['calls']:.1f} calls/s, {got['records']:.1f} records/s, "
                  f"{got['billed_bytes'] / 1000:.1f} KB/s billed")  # fmt: skip
        return
    print(f"## Nodes per stream ({planning_calls():g} calls/s and {ACTIVE_FILES} logging "
          f"containers per node, --flush-interval {FLUSH_INTERVAL_S:g})\n")  # fmt: skip
    print(markdown(NODES_HEADER, nodes_table()))
    print("\n## Fleet at 50 KB/s per node\n")
    print(markdown(FLEET_HEADER, fleet_table()))
    print("\n## 1,000 nodes at 50 KB/s: the flush interval\n")
    print(markdown(FLUSH_HEADER, flush_table()))
    if args.plot:
        plot(args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
