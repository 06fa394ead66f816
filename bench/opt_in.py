"""What the opt-in features cost the transform: CPU and output bytes, off vs on, one run.

``python -m bench.opt_in`` (in ``make bench``), best of --repeat, records packed as the
forwarder packs them by default (zstd, envelope in columns):

- multi-line joining: ~3 MB of Docker lines per language (testkit/shapes.py's Java text logs
  with stack traces; Python logs with tracebacks; Go logs with panics), PODHOSE_MULTILINE
  off and with the language's mode;
- pod metadata: Fluent Bit's mix (testkit/shapes.py) with the seed's output, with the file
  name's ``kubernetes`` fields, and with labels, node and uid in the header as the
  forwarder's ``--kubernetes-metadata`` sends them (three labels).

Example::

    python -m bench.opt_in --repeat 5
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import time
from collections.abc import Callable

from podhose_wire.header import K8S, source_header, with_field
from testkit import shapes
from transform_lambda.settings import TransformSettings
from transform_lambda.transform import transform_records

EVENT_BYTES = 3_000_000


def python_text(rng: random.Random, count: int) -> list[str]:
    """Python logging lines; every 8th event is a 6-line traceback."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        i += 1
        out.append(
            f"2024-05-01 10:00:{i % 60:02d},{rng.randint(0, 999):03d} INFO app: job {i} done"
        )
        if i % 8 == 0:
            out += [
                "Traceback (most recent call last):",
                f'  File "/app/worker.py", line {rng.randint(10, 300)}, in run',
                "    result = handler(job)",
                f'  File "/app/handlers.py", line {rng.randint(10, 300)}, in handle',
                "    raise ValueError(f'bad job {job.id}')",
                f"ValueError: bad job {i}",
            ]
    return out[:count]


def go_text(rng: random.Random, count: int) -> list[str]:
    """Go log lines; every 20th event is a panic with one goroutine of 4 frames."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        i += 1
        out.append(f"2024/05/01 10:00:{i % 60:02d} handled request {i} in {rng.random():.3f}s")
        if i % 20 == 0:
            out += ["panic: runtime error: index out of range [3] with length 3", "",
                    "goroutine 1 [running]:"]  # fmt: skip
            for k in range(4):
                frame = f"main.step{k}(0xc000{rng.randint(1000, 9999)})"
                out += [frame, f"\t/app/main.go:{rng.randint(10, 200)} +0x{k + 16:x}"]
    return out[:count]


CASES: dict[str, tuple[str, Callable[[random.Random, int], list[str]]]] = {
    "java": ("java_text", shapes.java_text),
    "python": ("python_text", python_text),
    "go": ("go_text", go_text),
}


def docker_lines(make: Callable[[random.Random, int], list[str]]) -> list[bytes]:
    rng = random.Random(7)
    out, size, nanos = [], 0, shapes.START_NANOS
    for content in make(rng, EVENT_BYTES // 60):
        if size >= EVENT_BYTES:
            break
        nanos += rng.randint(1_000, 40_000)
        out.append(shapes.wrap(content, "docker", nanos))
        size += len(out[-1])
    return out


def measure(
    records: list[bytes], settings: TransformSettings, repeat: int
) -> tuple[float, int, int]:
    """(best CPU seconds, output bytes, output lines) of transforming the records."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        results = transform_records(records, settings).results
        best = min(best, time.process_time() - start)
    data = b"".join(r.data for r in results)  # type: ignore[union-attr]
    return best, len(data), data.count(b"\n")


POD_FIELD = base64.urlsafe_b64encode(json.dumps({
    "pod_id": "5b9c4616-3674-4ac5-894c-b25a532123b8", "host": "ip-10-0-1-23.ec2.internal",
    "labels": {"app": "checkout", "team": "payments", "app.kubernetes.io/version": "1.4.2"},
}, separators=(",", ":")).encode()).rstrip(b"=")  # fmt: skip


def pod_metadata_table(repeat: int) -> None:
    raw = shapes.lines("fluentbit_mix", EVENT_BYTES)
    mb = sum(map(len, raw)) / 1e6
    plain = shapes.records(raw, "zstd")
    head = source_header(shapes.SOURCE)
    labelled_head = with_field(head, K8S, POD_FIELD)
    labelled = shapes.records(raw, "zstd", labelled_head)
    base = measure(plain, TransformSettings(), repeat)
    names = measure(plain, TransformSettings(add_kubernetes_metadata=True), repeat)
    labels = measure(labelled, TransformSettings(add_kubernetes_metadata=True), repeat)
    header_bytes = (len(labelled_head) - len(head)) * len(labelled)
    print(f"\nPod metadata on fluentbit_mix ({len(raw):,} lines, {mb:.2f} MB):\n")
    print("| output | MB/CPU-s | CPU vs seed | output bytes vs seed |")
    print("|---|---|---|---|")
    for name, (cpu, out, _lines) in (("seed (default)", base), ("file-name fields", names),
                                      ("+ labels, host, pod_id", labels)):  # fmt: skip
        print(f"| {name} | {mb / cpu:.1f} | {cpu / base[0]:.2f}x | {out / base[1]:.2f}x |")
    share = header_bytes / (mb * 1e6)
    print(f"\nheader field: {len(POD_FIELD)} bytes per record, {header_bytes:,} bytes "
          f"uncompressed in {len(labelled)} records ({share:.4%} of the input)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    columns = ["shape", "lines in", "MB", "off: MB/CPU-s", "on: MB/CPU-s", "CPU on/off",
               "events off", "events on", "output bytes on/off"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, (name, make) in CASES.items():
        raw = docker_lines(make)
        records = shapes.records(raw, "zstd")
        mb = sum(map(len, raw)) / 1e6
        off = measure(records, TransformSettings(), args.repeat)
        on = measure(records, TransformSettings(multiline=mode), args.repeat)
        cells = [f"{name} (`{mode}`)", f"{len(raw):,}", f"{mb:.2f}", f"{mb / off[0]:.1f}",
                 f"{mb / on[0]:.1f}", f"{on[0] / off[0]:.2f}x", f"{off[2]:,}", f"{on[2]:,}",
                 f"{on[1] / off[1]:.3f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    pod_metadata_table(args.repeat)


if __name__ == "__main__":
    main()
