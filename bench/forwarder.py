"""Benchmark the forwarder on a backlog: packed, packed+gzip (default), one line per record.

Run from the repo root: ``python -m bench.forwarder [--mb 500]``. For each line size (120 B
and 1 KB Docker json-file lines, ``--mb`` MB each) it writes a backlog into a temp node
layout, starts the local Firehose endpoint in its own process (counting only, no storage),
runs ``python -m forwarder --exit-on-eof`` against it, and reports throughput, the
forwarder's CPU time (user+sys of the child, from wait4) and peak RSS, Firehose calls and
records, and billed bytes (each record rounded up to 5 KB) per GB of raw log. Results are
printed as a table and written to bench/results/forwarder.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import plotting
from devstack.forwarder_process import forwarder_command
from devstack.node_layout import CONTAINERS_DIR
from devstack.polling import wait_for
from testkit.backlog import write_backlog
from testkit.forwarder import free_port
from testkit.prices import FIREHOSE_USD_PER_GB

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# Prices for $ per GB of logs (us-east-1), beside testkit.prices' Firehose price: a node
# vCPU-hour, and the transform Lambda per GB of logs (bench.lambda_memory: 512 MB arm64,
# default batch).
VCPU_USD_PER_HOUR = 0.0385
LAMBDA_USD_PER_GB = 0.00015
# Fluent Bit 4.2, simple_aggregation + gzip, on its own 1 GB throughput backlog (figures from
# the cost issue): billed/raw and node CPU-s per GB.
FLUENT_BIT_BILLED, FLUENT_BIT_CPU_S_PER_GB = 0.0754, 54.0
MB = 1_000_000
GB = 1_000_000_000
MODES = {
    "packed": ["--compression", "none"],
    "zstd columns (default)": [],
    "zstd-1 columns": ["--zstd-level", "1"],
    "zstd-9 columns": ["--zstd-level", "9"],
    "zstd columns 2 MiB": ["--max-record-bytes", str(2 * 1024 * 1024)],
    "gzip-1": ["--compression", "gzip", "--gzip-level", "1"],
    "one-line-per-record": ["--one-line-per-record"],
}


@dataclass
class Result:
    """Figures of one forwarder run."""

    line_bytes: int | str
    avg_line_bytes: float
    mode: str
    raw_mb: float
    lines: int
    lines_delivered: int
    seconds: float
    mb_per_s: float
    lines_per_s: float
    cpu_s: float
    cpu_s_per_gb: float
    mb_per_cpu_s: float
    peak_rss_mb: float
    calls: int
    records: int
    billed_gb_per_gb: float

    @property
    def usd_per_gb(self) -> float:
        """$ per GB of logs: Firehose bytes + node CPU + the transform Lambda."""
        return usd_per_gb(self.billed_gb_per_gb, self.cpu_s_per_gb)


def usd_per_gb(billed_per_raw: float, cpu_s_per_gb: float) -> float:
    """$ per GB of logs for a billed/raw ratio and node CPU-seconds per GB."""
    node = cpu_s_per_gb * VCPU_USD_PER_HOUR / 3600
    return billed_per_raw * FIREHOSE_USD_PER_GB + node + LAMBDA_USD_PER_GB


def start_endpoint() -> tuple[subprocess.Popen[bytes], str]:
    """The local Firehose endpoint in its own process, counting only."""
    port = free_port()
    cmd = [sys.executable, "-m", "devstack.firehose_endpoint", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--count-only", "--count-lines"], cwd=REPO, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    if wait_for(lambda: answers(url), 20, 0.05):
        return proc, url
    proc.kill()
    raise RuntimeError("endpoint did not start")


def answers(url: str) -> bool:
    """True when the endpoint's /stats answers."""
    try:
        stats(url)
    except OSError:
        return False
    return True


def stats(url: str) -> dict[str, int]:
    """Counters of the endpoint."""
    with urllib.request.urlopen(url + "/stats", timeout=5) as resp:
        return json.loads(resp.read())


def run_forwarder(root: Path, url: str, extra: list[str]) -> tuple[float, float, float]:
    """Run the forwarder to EOF; return (wall seconds, CPU seconds, peak RSS bytes)."""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    db = root / f"offsets-{time.monotonic_ns()}.db"
    cmd = forwarder_command(
        str(root / CONTAINERS_DIR / "*.log"), "bench", url, db, "--exit-on-eof",
        "--http-port", "0", "--log-level", "WARNING", *extra,
    )  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"forwarder exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024.0


def bench_one(root: Path, line_bytes: int | str, raw: int, lines: int, mode: str) -> Result:
    """One forwarder run in one mode against a fresh endpoint."""
    endpoint, url = start_endpoint()
    try:
        wall, cpu, rss = run_forwarder(root, url, MODES[mode])
        st = stats(url)
    finally:
        endpoint.kill()
        endpoint.wait()
    return Result(
        line_bytes=line_bytes,
        avg_line_bytes=round(raw / lines, 1),
        mode=mode,
        raw_mb=round(raw / MB, 1),
        lines=lines,
        lines_delivered=st["lines"],
        seconds=round(wall, 2),
        mb_per_s=round(raw / MB / wall, 1),
        lines_per_s=round(lines / wall),
        cpu_s=round(cpu, 2),
        cpu_s_per_gb=round(cpu / (raw / GB), 1),
        mb_per_cpu_s=round(raw / MB / cpu, 1),
        peak_rss_mb=round(rss / 2**20, 1),
        calls=st["calls"],
        records=st["records"],
        billed_gb_per_gb=round(st["billed_bytes"] / raw, 4),
    )


def plot(results: list[Result], fluent_bit_usd: float, path: Path) -> None:
    """$ per GB of logs by mode, per line size, beside Fluent Bit's best configuration."""
    plt = plotting.pyplot()
    shown = [r for r in results if r.mode not in ("one-line-per-record", "packed")]
    sizes = list(dict.fromkeys(str(r.line_bytes) for r in shown))
    modes = list(dict.fromkeys(r.mode for r in shown))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(modes)
    for m, mode in enumerate(modes):
        values = [
            next(
                (
                    r.usd_per_gb * 1000
                    for r in shown
                    if r.mode == mode and str(r.line_bytes) == size
                ),
                0,
            )
            for size in sizes
        ]
        ax.bar([i + m * width for i in range(len(sizes))], values, width, label=mode)
    label = "Fluent Bit simple_aggregation+gzip, its own 1 GB backlog (published)"
    ax.axhline(fluent_bit_usd * 1000, color="black", linestyle="--", label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sizes))], sizes)
    ax.set_xlabel("backlog (line bytes or shape)")
    ax.set_ylabel("$ per 1,000 GB of logs")
    ax.set_title("Firehose ingestion + node CPU + transform Lambda, by forwarder setting")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    plotting.save(fig, path)


def table(results: list[Result]) -> str:
    """Results as a fixed-width table."""
    cols = [
        ("line", "line_bytes"), ("avg", "avg_line_bytes"), ("mode", "mode"), ("raw MB", "raw_mb"),
        ("MB/s", "mb_per_s"),
        ("lines/s", "lines_per_s"), ("CPU s/GB", "cpu_s_per_gb"), ("MB/CPU-s", "mb_per_cpu_s"),
        ("peak RSS MB", "peak_rss_mb"), ("calls", "calls"), ("records", "records"),
        ("billed/raw", "billed_gb_per_gb"), ("$/GB", "usd_per_gb"), ("lines ok", "lines_delivered"),
    ]  # fmt: skip
    rows = [[h for h, _ in cols]]
    for r in results:
        row = [str(getattr(r, attr)) for _, attr in cols]
        row[-2] = f"{r.usd_per_gb:.5f}"
        row[-1] = "yes" if r.lines_delivered == r.lines else f"NO ({r.lines_delivered}/{r.lines})"
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def main() -> None:
    """Run every line size and mode; print and save the results."""
    parser = argparse.ArgumentParser(description="forwarder benchmark")
    parser.add_argument("--mb", type=int, default=500, help="MB of backlog per line size")
    parser.add_argument(
        "--sizes",
        default="120,1024,fluentbit_backlog,fluentbit_mix",
        help="line sizes in bytes or shape names",
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    parser.add_argument("--out", type=Path, default=RESULTS / "forwarder.json", help="JSON file")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of $ per GB by setting")
    args = parser.parse_args()
    results: list[Result] = []
    for size in (int(s) if s.isdigit() else s for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="podhose-bench-") as tmp:
            # In a process of its own: a forwarder started from a bench process that grew
            # to hold the backlog would count that memory in its peak RSS (fork/exec
            # carries the parent's resident pages into the child's ru_maxrss).
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                raw, lines = pool.submit(write_backlog, Path(tmp), size, args.mb * MB).result()
            print(f"{size}-byte lines: {raw / MB:.0f} MB, {lines} lines written", flush=True)
            for mode in args.modes.split(","):
                results.append(bench_one(Path(tmp), size, raw, lines, mode))
                print(table(results[-1:]).splitlines()[1], flush=True)
    print()
    print(table(results))
    fluent_bit = usd_per_gb(FLUENT_BIT_BILLED, FLUENT_BIT_CPU_S_PER_GB)
    print(f"\nFluent Bit 4.2 simple_aggregation+gzip (published): billed {FLUENT_BIT_BILLED}, "
          f"{FLUENT_BIT_CPU_S_PER_GB} CPU-s/GB, ${fluent_bit:.5f} per GB")  # fmt: skip
    if args.plot:
        plot(results, fluent_bit, args.plot)
        print(f"plot written to {args.plot}")
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join(["python -m bench.forwarder", *sys.argv[1:]]), "results": []}
    doc["results"] = [asdict(r) for r in results]
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
