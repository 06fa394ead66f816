"""The scaling model's tables, plot and measurement (the model: testkit/scaling_model.py).

`python -m bench.scaling [--plot docs/images/scaling.png]` prints the tables docs/scaling.md
shows (tests/unit/test_scaling_model.py checks the page against them). `--measure` runs the real
forwarder against the local endpoint for ~3 minutes and prints the calls and records per
second one node sends, the figures MEASURED_NODE_RATES come from.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from bench import plotting
from testkit.scaling_model import (
    ACTIVE_FILES,
    FLEET_HEADER,
    FLUSH_HEADER,
    FLUSH_INTERVAL_S,
    NODES_HEADER,
    QUOTAS,
    RATIO_BACKLOG,
    RATIO_MIX,
    fleet_table,
    flush_table,
    markdown,
    node_records,
    nodes_per_stream,
    nodes_table,
    planning_calls,
)  # fmt: skip


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
    from devstack.firehose_endpoint import FirehoseEndpoint
    from testkit.forwarder import Node, fwd, wait_for
    from testkit.lines import cri_line

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
