"""The transform at each Lambda memory size's CPU share, measured; priced per GB of logs.

Lambda gives a function memory/1,769 MB of a vCPU, enforced as a CPU quota per scheduling
period. For each memory size this transforms one event of Fluent Bit's mix (testkit/shapes.py,
packed as the forwarder packs it by default) with ``app.process_event`` (base64, transform,
response; no re-ingest: the budget is lifted) in a child process held to that share by the
cgroup cpu controller (v1 ``cpu.cfs_quota_us`` or v2 ``cpu.max``, the kernel's default
100 ms period), and reports the median wall-clock duration of --repeat calls, the child's
peak RSS, and the cost at the arm64 GB-second price: $ per GB of logs. Two events: the
template's default processor buffer (0.25 MB of records, ~2.5 MB of lines) and Firehose's
largest (3 MB of records, ~30 MB of lines). The event is built and the handler warmed up
before the quota applies.

Needs root and a writable cgroup cpu controller (it exits 2 saying so otherwise). Lambda's
own period and its burst behaviour are not public: treat short durations as estimates.

    python -m bench.lambda_memory --repeat 9 [--plot docs/images/lambda-memory.png]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import plotting
from bench.transform import RESULTS
from testkit import shapes
from testkit.events import firehose_event
from testkit.prices import GB_SECOND_USD, REQUEST_USD

#: Raw bytes of lines that fill the template's default 0.25 MB processor buffer and
#: Firehose's largest, 3 MB, with the forwarder's default records (~10x compression).
EVENTS = {"0.25 MB buffer": 2_500_000, "3 MB buffer": 30_000_000}
MEMORY_SIZES_MB = (128, 256, 512, 1024, 1769, 3008)
FULL_VCPU_MB = 1769
PERIOD_US = 100_000  # the kernel's default CFS period


@dataclass
class MemoryRow:
    """One memory size's measurement."""

    event: str
    memory_mb: int
    cpu_share: float
    duration_s: float  # median wall-clock seconds per event
    peak_rss_mb: float
    raw_mb: float

    @property
    def usd_per_gb(self) -> float:
        """Duration and requests for 1 GB of raw log lines, billed per started ms."""
        billed_s = math.ceil(self.duration_s * 1000) / 1000
        invocations = 1000 / self.raw_mb
        return invocations * (billed_s * self.memory_mb / 1024 * GB_SECOND_USD + REQUEST_USD)


class CgroupUnavailableError(RuntimeError):
    """No cgroup cpu controller this process may use."""


def _cpu_controller() -> tuple[Path, int]:
    """(mount point, cgroup version) of a cpu controller from /proc/mounts."""
    for line in Path("/proc/mounts").read_text().splitlines():
        _device, mount, kind, options, *_ = line.split()
        if kind == "cgroup" and "cpu" in options.split(","):
            return Path(mount), 1
        if kind == "cgroup2" and "cpu" in (Path(mount) / "cgroup.subtree_control").read_text():
            return Path(mount), 2
    raise CgroupUnavailableError("no cgroup cpu controller is mounted")


def _make_cgroup(memory_mb: int) -> Path:
    mount, version = _cpu_controller()
    group = mount / f"podhose-bench-{os.getpid()}-{memory_mb}"
    quota = max(1000, round(PERIOD_US * memory_mb / FULL_VCPU_MB))
    try:
        group.mkdir()
        if version == 1:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
    except OSError as error:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise CgroupUnavailableError(f"cannot set a CPU quota in {mount}: {error}") from None
    return group


def measure(name: str, memory_mb: int, repeat: int) -> MemoryRow:
    """Run the worker on event `name` under `memory_mb`'s CPU share and read its figures."""
    group = _make_cgroup(memory_mb)
    try:
        tasks = group / ("tasks" if (group / "tasks").exists() else "cgroup.procs")
        worker = [sys.executable, "-m", "bench.lambda_memory", "--worker", str(tasks),
                  "--raw-bytes", str(EVENTS[name]), "--repeat", str(repeat)]  # fmt: skip
        done = subprocess.run(worker, capture_output=True, text=True, check=True, timeout=900)
    finally:
        group.rmdir()
    figures = json.loads(done.stdout.splitlines()[-1])
    return MemoryRow(name, memory_mb, memory_mb / FULL_VCPU_MB,
                     statistics.median(figures["durations"]), figures["peak_rss_mb"],
                     figures["raw_mb"])  # fmt: skip


def worker(tasks: Path, raw_bytes: int, repeat: int) -> None:
    """In the child: build the event, warm up, join the cgroup, time the transform."""
    from transform_lambda.app import KinesisFirehoseEvent, process_event
    from transform_lambda.settings import TransformSettings

    raw = shapes.lines("fluentbit_mix", raw_bytes)
    evt = KinesisFirehoseEvent(firehose_event(shapes.records(raw, "zstd")))
    settings, no_limit = TransformSettings(), 2**40
    durations = []
    with contextlib.redirect_stdout(io.StringIO()):
        process_event(evt, settings, no_limit).asdict()
        tasks.write_text(str(os.getpid()))
        time.sleep(PERIOD_US / 1e6)  # start on a fresh period's quota
        for _ in range(repeat):
            start = time.perf_counter()
            process_event(evt, settings, no_limit).asdict()
            durations.append(time.perf_counter() - start)
            time.sleep(PERIOD_US / 1e6)  # a new invocation, as Firehose would send
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    raw_mb = sum(map(len, raw)) / 1e6
    print(json.dumps({"durations": durations, "peak_rss_mb": rss_mb, "raw_mb": raw_mb}))


def plot(rows: list[MemoryRow], path: Path) -> None:
    """Duration and $ per GB by memory size."""
    plt = plotting.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    labels = [str(memory) for memory in MEMORY_SIZES_MB]
    width = 0.8 / len(EVENTS)
    for k, name in enumerate(EVENTS):
        mine = [r for r in rows if r.event == name]
        x = [i + (k - (len(EVENTS) - 1) / 2) * width for i in range(len(mine))]
        left.bar(x, [r.duration_s / r.raw_mb * 1000 for r in mine], width, label=name)
        right.bar(x, [r.usd_per_gb * 1e6 for r in mine], width, label=name)
    for ax in (left, right):
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("Lambda memory (MB)")
        ax.legend()
    left.set_ylabel("ms per MB of logs (median)")
    right.set_ylabel("µ$ per GB of logs (arm64)")
    fig.suptitle("Transform handler under each memory size's CPU share")
    plotting.save(fig, path)


def main() -> int:
    """Measure every memory size, print the table, write JSON (and the plot)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG chart here")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.raw_bytes, args.repeat)
        return 0
    try:
        rows = [measure(name, memory, args.repeat) for name in EVENTS for memory in MEMORY_SIZES_MB]
    except CgroupUnavailableError as error:
        print(f"bench.lambda_memory needs root and a cgroup cpu controller: {error}",
              file=sys.stderr)  # fmt: skip
        return 2
    print("| event | memory | CPU share | ms per event | peak RSS MB | $ per GB of logs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.event} ({r.raw_mb:.1f} MB of lines) | {r.memory_mb:,} MB | "
              f"{r.cpu_share:.2f} | {r.duration_s * 1000:.0f} | {r.peak_rss_mb:.0f} | "
              f"${r.usd_per_gb:.6f} |")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "lambda_memory.json"
    payload = [asdict(r) | {"usd_per_gb": r.usd_per_gb} for r in rows]
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
