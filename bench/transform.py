"""Benchmark the transform Lambda against the standard-library baseline, same inputs.

Run: ``make bench`` or ``python -m bench.transform [--repeat 5]``. Each scenario builds a
Firehose event in memory and times the whole handler (base64 in -> base64 out, metrics
and logging included) for podhose and for bench/baseline_blueprint.py, interleaved, and
reports the best of ``--repeat`` runs. Outputs are checked equal before timing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import baseline_blueprint
from devstack.lambda_context import LambdaContext
from testkit.events import firehose_event
from testkit.lines import cri_line, docker_line
from transform_lambda.app import lambda_handler

TIME = "2019-12-28T08:19:53.704659587Z"
RESULTS = Path(__file__).parent / "results"
PACKED_RECORD_BYTES = 256 * 1024
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def app_lines(rng: random.Random, count: int, text_share: float) -> list[str]:
    """What apps print: the seed's line, request logs of varying size, some plain text."""
    paths = ["/api/v1/items", "/healthz", "/api/v1/users/42/orders", "/static/app.js"]
    lines = []
    for i in range(count):
        ms = 1577521193704 + i
        if rng.random() < text_share:
            lines.append(f"INFO worker-{i % 7} processed batch {i} in {rng.randint(1, 900)} ms")
        elif i % 3 == 0:
            lines.append(json.dumps({"name": "fakenerd", "time_ms": ms}))
        else:
            entry = {
                "level": rng.choice(["info", "warn", "error"]),
                "ts": ms,
                "msg": "request served",
                "path": rng.choice(paths),
                "status": rng.choice([200, 200, 201, 404, 500]),
                "duration_ms": round(rng.uniform(0.1, 250), 3),
                "user": {"id": rng.randint(1, 10**6), "agent": "Mozilla/5.0 (X11; Linux x86_64)"},
            }
            lines.append(json.dumps(entry))
    return lines


def docker_entry(content: str) -> bytes:
    return docker_line(content + "\n", when=TIME)


def cri_entry(content: str) -> bytes:
    return cri_line(content, when=TIME)


def make_lines(fmt: str, total_bytes: int, text_share: float, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    encode = docker_entry if fmt == "docker" else cri_entry
    lines: list[bytes] = []
    size = 0
    while size < total_bytes:
        for content in app_lines(rng, 1000, text_share):
            line = encode(content)
            lines.append(line)
            size += len(line)
            if size >= total_bytes:
                break
    return lines


def pack(lines: list[bytes], packed: bool) -> list[bytes]:
    if not packed:
        return lines
    records, current, size = [], [], 0
    for line in lines:
        if size + len(line) > PACKED_RECORD_BYTES and current:
            records.append(b"".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        records.append(b"".join(current))
    return records


def outputs(response: dict[str, Any]) -> list[Any]:
    return [
        [json.loads(line) for line in base64.b64decode(r["data"]).splitlines()]
        for r in response["records"]
    ]


def best_time(handler: Handler, evt: dict[str, Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            handler(evt, LambdaContext())
            times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class Row:
    scenario: str
    mb: float
    lines: int
    records: int
    podhose_mb_s: float
    baseline_mb_s: float

    @property
    def speedup(self) -> float:
        return self.podhose_mb_s / self.baseline_mb_s


@dataclass(frozen=True)
class Scenario:
    name: str
    fmt: str
    mb: float
    packed: bool
    text_share: float


def run_scenario(scenario: Scenario, repeat: int) -> Row:
    name = scenario.name
    lines = make_lines(scenario.fmt, int(scenario.mb * 1_000_000), scenario.text_share)
    records = pack(lines, scenario.packed)
    evt = firehose_event(records)
    with contextlib.redirect_stdout(io.StringIO()):
        ours = lambda_handler(evt, LambdaContext())
        theirs = baseline_blueprint.lambda_handler(evt, None)
    if outputs(ours) != outputs(theirs):
        raise AssertionError(f"{name}: podhose and baseline disagree")
    raw_mb = sum(map(len, lines)) / 1e6
    podhose = best_time(lambda_handler, evt, repeat)
    baseline = best_time(baseline_blueprint.lambda_handler, evt, repeat)
    return Row(name, raw_mb, len(lines), len(records), raw_mb / podhose, raw_mb / baseline)


SCENARIOS = [
    # name, format, MB, packed, share of plain-text lines
    Scenario("docker 1MB packed", "docker", 1, True, 0.0),
    Scenario("docker 3MB packed", "docker", 3, True, 0.0),
    Scenario("cri 1MB packed", "cri", 1, True, 0.0),
    Scenario("cri 3MB packed", "cri", 3, True, 0.0),
    Scenario("docker 3MB packed, 10% text", "docker", 3, True, 0.1),
    Scenario("docker 1MB one line/record", "docker", 1, False, 0.0),
    Scenario("docker 3MB one line/record", "docker", 3, False, 0.0),
    Scenario("cri 1MB one line/record", "cri", 1, False, 0.0),
    Scenario("cri 3MB one line/record", "cri", 3, False, 0.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = [run_scenario(scenario, args.repeat) for scenario in SCENARIOS]
    header = f"{'scenario':32} {'MB':>5} {'lines':>7} {'recs':>6} {'podhose MB/s':>13} "
    header += f"{'lines/s':>10} {'baseline MB/s':>14} {'speedup':>8}"
    print(header)
    for row in rows:
        lines_s = row.lines / (row.mb / row.podhose_mb_s)
        print(
            f"{row.scenario:32} {row.mb:5.2f} {row.lines:7d} {row.records:6d} "
            f"{row.podhose_mb_s:13.1f} {lines_s:10.0f} {row.baseline_mb_s:14.1f} "
            f"{row.speedup:7.1f}x"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "transform.json"
    out.write_text(json.dumps([row.__dict__ | {"speedup": row.speedup} for row in rows], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
