"""Soak: the chaos scenario (testkit/chaos.py) for minutes to hours, sampled over time.

Writes a CSV (elapsed seconds, forwarder RSS, CPU, delivery lag, lines written and
delivered, delivered lines per second, kills, fault phase), a PNG plot of it and a summary
(the accountant's counts, and how often each condition of testkit/chaos.py happened: reused
inodes, stuck pieces, incompressible pairs, kills with unacknowledged drained files,
malformed answers); exits non-zero if any line was lost or corrupted.

    python -m bench.soak --minutes 30 --out bench/results/soak    (make soak)

With --keep DIR the run's folder (the forwarders' logs, the node's files, the offsets
database) is kept for a post-mortem instead of deleted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import plotting
from testkit.chaos import PHASES, Chaos

COLUMNS = ("elapsed_s", "rss_mb", "cpu_s", "delivery_lag_s", "lines_written",
           "lines_delivered", "delivered_per_s", "kills", "phase")  # fmt: skip


class Sampler:
    """Called by the chaos loop every few seconds: one CSV row."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w", newline="")  # noqa: SIM115 - closed in close()
        self.csv = csv.writer(self.file)
        self.csv.writerow(COLUMNS)
        self.last: tuple[float, int] | None = None
        self.cpu_before = 0.0  # CPU of forwarders killed earlier
        self.pid = 0
        self.cpu_last = 0.0

    def __call__(self, chaos: Chaos) -> None:
        proc = chaos.proc
        if proc is None or proc.proc is None:
            return
        now = time.monotonic()
        try:
            ps = psutil.Process(proc.proc.pid)
            rss = ps.memory_info().rss / 2**20
            times = ps.cpu_times()
            cpu = times.user + times.system
            lag = proc.metric("podhose_delivery_lag_seconds")
        except (OSError, psutil.Error):
            return  # restarting
        if proc.proc.pid != self.pid:
            self.cpu_before += self.cpu_last
            self.pid = proc.proc.pid
        self.cpu_last = cpu
        written = sum(len(w.expected) + len(w.pieces) for w in chaos.all_writers())
        delivered = chaos.accountant.delivered_count()
        rate = 0.0
        if self.last is not None:
            rate = (delivered - self.last[1]) / (now - self.last[0])
        self.last = (now, delivered)
        self.csv.writerow([f"{now - chaos.started_at:.1f}", f"{rss:.1f}",
                           f"{self.cpu_before + cpu:.2f}", f"{lag:.2f}", written, delivered,
                           f"{rate:.0f}", chaos.counts.kills, chaos.phase])  # fmt: skip
        self.file.flush()

    def close(self) -> None:
        """Close the CSV."""
        self.file.close()


def plot(csv_path: Path, png_path: Path, title: str) -> None:
    """RSS, delivery lag and delivered lines/s over time, from the CSV."""
    plt = plotting.pyplot()
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    t = [float(r["elapsed_s"]) / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    series = (("rss_mb", "forwarder RSS (MB)"), ("delivery_lag_s", "delivery lag (s)"),
              ("delivered_per_s", "delivered lines/s"))  # fmt: skip
    for ax, (column, label) in zip(axes, series, strict=True):
        ax.plot(t, [float(r[column]) for r in rows], linewidth=0.8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    cycle = sum(seconds for _, seconds in PHASES)
    axes[-1].set_xlabel(f"minutes (faults cycle every ~{cycle:.0f} s; one SIGKILL per cycle)")
    plotting.save(fig, png_path)


def main() -> int:
    """Run the soak; print the summary; non-zero exit on loss or corruption."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", default="bench/results/soak", help="path prefix for outputs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep", help="run in this new folder and keep it (forwarder logs, files, offsets)"
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out.with_suffix(".csv"), out.with_suffix(".png")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="podhose-soak-"))
    root.mkdir(parents=True, exist_ok=not args.keep)
    sampler = Sampler(csv_path)
    try:
        result = Chaos(root, args.minutes * 60, args.seed, sample=sampler).run(300)
    finally:
        sampler.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    summary = dataclasses.asdict(result)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(csv_path, png_path, f"podhose soak, {args.minutes:g} min: lost {result.lost}, "
         f"corrupt {result.corrupt}, {result.kills} SIGKILLs, {result.reused_inodes} reused "
         f"inodes, {result.stuck_pieces} stuck pieces")  # fmt: skip
    print(json.dumps(summary))
    print(f"wrote {csv_path}, {png_path}")
    return 0 if result.lost == 0 and result.corrupt == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
