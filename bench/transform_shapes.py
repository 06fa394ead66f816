"""The transform on realistic log shapes (testkit/shapes.py), beside the stdlib baseline.

Each shape: ~3 MB of runtime lines packed as the forwarder packs them (gzip level 1, 1 MiB
of lines per record, with the header), one Firehose event, the whole handler timed in CPU
seconds (base64, gunzip, parse, decode, dump, base64) for podhose and for
bench/baseline_blueprint.py, interleaved, best of --repeat. Outputs are checked equal (as
JSON values) first.

    python -m bench.transform_shapes --repeat 7 [--plot docs/images/transform-shapes.png]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import baseline_blueprint, plotting
from bench.transform import RESULTS, Handler, outputs
from devstack.lambda_context import LambdaContext
from testkit import shapes
from testkit.events import firehose_event
from transform_lambda.app import lambda_handler

EVENT_RAW_BYTES = 3_000_000


@dataclass
class ShapeRow:
    """One shape's result."""

    shape: str
    raw_mb: float
    lines: int
    records: int
    podhose_mb_per_cpu_s: float
    baseline_mb_per_cpu_s: float
    podhose_zstd_mb_per_cpu_s: float  # on the forwarder's default records (no baseline)

    @property
    def speedup(self) -> float:
        """podhose's throughput over the baseline's."""
        return self.podhose_mb_per_cpu_s / self.baseline_mb_per_cpu_s


def cpu_time(handler: Handler, evt: dict[str, Any]) -> float:
    """CPU seconds of one handler call (its logs discarded)."""
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.process_time()
        handler(evt, LambdaContext())
        return time.process_time() - start


def run_shape(shape: str, repeat: int) -> ShapeRow:
    """Time podhose and the baseline on one shape, interleaved; best of `repeat`."""
    raw_lines = shapes.lines(shape, EVENT_RAW_BYTES)
    records = shapes.records(raw_lines)
    evt = firehose_event(records)
    with contextlib.redirect_stdout(io.StringIO()):
        ours = outputs(lambda_handler(evt, LambdaContext()))
        theirs = outputs(baseline_blueprint.lambda_handler(evt, None))
    if ours != theirs:
        raise AssertionError(f"{shape}: podhose and the baseline disagree")
    zstd_evt = firehose_event(shapes.records(raw_lines, "zstd"))
    with contextlib.redirect_stdout(io.StringIO()):
        if outputs(lambda_handler(zstd_evt, LambdaContext())) != ours:
            raise AssertionError(f"{shape}: zstd and gzip records transform differently")
    ours_s, theirs_s, zstd_s = [], [], []
    for _ in range(repeat):
        ours_s.append(cpu_time(lambda_handler, evt))
        theirs_s.append(cpu_time(baseline_blueprint.lambda_handler, evt))
        zstd_s.append(cpu_time(lambda_handler, zstd_evt))
    raw_mb = sum(map(len, raw_lines)) / 1e6
    return ShapeRow(shape, raw_mb, len(raw_lines), len(records), raw_mb / min(ours_s),
                    raw_mb / min(theirs_s), raw_mb / min(zstd_s))  # fmt: skip


def plot(rows: list[ShapeRow], path: Path) -> None:
    """Bar chart of MB per CPU-second, podhose beside the baseline, per shape."""
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r.podhose_mb_per_cpu_s for r in rows], 0.4, label="podhose")
    ax.bar([i + 0.2 for i in x], [r.baseline_mb_per_cpu_s for r in rows], 0.4,
           label="stdlib baseline (AWS blueprint style)")  # fmt: skip
    for i, row in zip(x, rows, strict=True):
        ax.annotate(f"{row.speedup:.1f}x", (i - 0.2, row.podhose_mb_per_cpu_s), ha="center",
                    va="bottom")  # fmt: skip
    ax.set_xticks(list(x), [r.shape for r in rows])
    ax.set_ylabel("MB of log lines per CPU-second")
    ax.set_title("Transform Lambda handler on realistic shapes (gzip records, 3 MB per event)")
    ax.set_ylim(0, 1.3 * max(r.podhose_mb_per_cpu_s for r in rows))  # room for the legend
    ax.legend(loc="upper center", ncol=2)
    plotting.save(fig, path)


def main() -> None:
    """Run every shape, print the tables, write JSON (and the plot)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG bar chart here")
    args = parser.parse_args()
    rows = [run_shape(shape, args.repeat) for shape in shapes.SHAPES]
    print(f"{'shape':18} {'MB':>5} {'lines':>7} {'recs':>4} {'podhose MB/CPU-s':>17} "
          f"{'baseline MB/CPU-s':>18} {'speedup':>8} {'zstd-cols MB/CPU-s':>20}")  # fmt: skip
    for r in rows:
        print(f"{r.shape:18} {r.raw_mb:5.2f} {r.lines:7d} {r.records:4d} "
              f"{r.podhose_mb_per_cpu_s:17.1f} {r.baseline_mb_per_cpu_s:18.1f} "
              f"{r.speedup:7.2f}x {r.podhose_zstd_mb_per_cpu_s:20.1f}")  # fmt: skip
    geomean = math.exp(sum(math.log(r.speedup) for r in rows) / len(rows))
    print(f"geometric mean speedup: {geomean:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "transform_shapes.json"
    payload = {"rows": [asdict(r) | {"speedup": r.speedup} for r in rows], "geomean": geomean}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
