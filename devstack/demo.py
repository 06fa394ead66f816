"""``make demo``: the whole podhose pipeline on one machine, no AWS account needed.

    python -m devstack.demo [--duration 20] [--containers 3] [--rate 5]

Simulated containers of the seed app write Docker json-file and CRI logs under a temporary
node root (with a log rotation half-way), the real forwarder tails them and sends records
with boto3 to a local Firehose endpoint, the local delivery stand-in runs the real transform
Lambda on them, and the results land in moto's S3. At the end the demo compares what the
containers wrote with what is in S3 and exits non-zero when they differ.

Everything it starts (threads, the forwarder process, servers, the temp dir) is stopped and
removed on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devstack import stack_config
from devstack.forwarder_process import ForwarderProcess
from devstack.kube_api import FakeKubeApi
from devstack.node import Workload, canonical
from devstack.pipeline import LocalPipeline
from devstack.polling import wait_for
from devstack.stack_config import StackConfig
from podhose_wire.firehose_limits import LARGE_REGION_QUOTA, SMALL_REGION_QUOTA, Quota

MIB = 1024 * 1024


def _quota(text: str) -> Quota:
    """small, large, or bytes=N,records=N,calls=N (Quota.parse)."""
    named = {"small": SMALL_REGION_QUOTA, "large": LARGE_REGION_QUOTA}
    try:
        return named.get(text) or Quota.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.demo", description=__doc__.split("\n")[0].replace("``", "")
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of logging (20)")
    parser.add_argument("--containers", type=int, default=3, help="simulated containers (3)")
    parser.add_argument("--rate", type=float, default=5.0, help="lines/s per container (5)")
    parser.add_argument(
        "--buffer-interval", type=float, default=1.0, help="processor buffer interval, s (1)"
    )
    parser.add_argument(
        "--buffer-mb", type=float, default=None, help="processor buffer, MB (template's)"
    )
    parser.add_argument(
        "--parameter-overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="template.yaml parameters, as for sam deploy (e.g. DynamicPartitioning=true)",
    )
    parser.add_argument("--no-rotate", action="store_true", help="skip the mid-run rotation")
    parser.add_argument(
        "--faults",
        action="store_true",
        help="every 2 s make the local Firehose throttle, fail records, 500 or drop a call",
    )
    parser.add_argument(
        "--multiline",
        action="store_true",
        help="apps also print Java stack traces; transform and forwarder join them (java mode)",
    )
    parser.add_argument(
        "--pod-labels",
        action="store_true",
        help="a local Kubernetes API serves the pods' labels; forwarder and transform add them",
    )
    parser.add_argument(
        "--routes",
        action="store_true",
        help=f"namespace {ROUTED_NAMESPACE!r} goes to a second stream with its own S3 prefix",
    )
    parser.add_argument(
        "--quota",
        type=_quota,
        default=None,
        metavar="SPEC",
        help="the local Firehose enforces a per-stream quota: small (1 MiB/s, 100,000 "
        "records/s, 1,000 calls/s), large (5 MiB/s, ...), or bytes=N,records=N,calls=N",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp node root")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.containers < 1 or args.rate <= 0:
        parser.error("--duration, --containers and --rate must be positive")
    if any("=" not in item for item in args.parameter_overrides):
        parser.error("--parameter-overrides takes KEY=VALUE items")
    args.parameters = dict(item.split("=", 1) for item in args.parameter_overrides)
    if args.multiline:
        args.parameters.setdefault("Multiline", "java")
    if args.pod_labels:
        args.parameters.setdefault("AddKubernetesMetadata", "true")
    problems = stack_config.parameter_problems(args.parameters)
    if args.buffer_mb is not None:  # the processor buffer, bounded as the template bounds it
        buffer = {"ProcessorBufferSizeMB": f"{args.buffer_mb:g}"}
        problems += [f"--buffer-mb {args.buffer_mb:g}: {p.split(': ', 1)[1]}"
                     for p in stack_config.parameter_problems(buffer)]  # fmt: skip
    if problems:
        parser.error("; ".join(problems))
    return args


@dataclass
class Outcome:
    written: int
    in_s3: int
    missing: int
    unexpected: int
    problems: list[str]
    expected_in_s3: int = -1  # events expected (a joined stack trace is one); -1: = written

    @property
    def ok(self) -> bool:
        expected = self.written if self.expected_in_s3 < 0 else self.expected_in_s3
        return (
            not self.problems and self.in_s3 == expected and not (self.missing or self.unexpected)
        )


def _short(line: bytes, width: int = 110) -> str:
    text = line.decode(errors="replace")
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} chars)"


def _progress(started: float, workload: Workload, pipe: LocalPipeline) -> str:
    assert pipe.delivery is not None
    stats = pipe.delivery.stats
    lines_s3 = len(pipe.output_lines())
    again = f" (+{pipe.reingested_records} re-ingested)" if pipe.reingested_records else ""
    return (
        f"[{time.monotonic() - started:5.1f}s] written {workload.written:5d} lines"
        f" | forwarder -> Firehose: {pipe.calls} calls, {pipe.records} records,"
        f" {pipe.lines} lines{again} | Lambda: {stats.invocations} invocations"
        f" | S3: {stats.objects} objects, {lines_s3} lines"
    )


_FAULTS = (
    ("throttle", "the next 2 calls get ServiceUnavailableException"),
    ("fail_records", "every 2nd record of the next call fails inside a 200 response"),
    ("server_error", "the next call gets HTTP 500"),
    ("drop_connections", "the next call's connection is dropped without a response"),
)


def _inject_fault(pipe: LocalPipeline, n: int) -> str:
    """Arm one of the endpoint's faults; the forwarder must retry without loss or duplicates."""
    name, what = _FAULTS[n % len(_FAULTS)]
    getattr(pipe.endpoint, name)(2 if name == "throttle" else 1)
    return f"fault injected: {what}"


def _banner(config: StackConfig, args: argparse.Namespace, root: Path) -> None:
    print(f"podhose demo: stream {config.stream_name!r} -> s3://{config.bucket_name}")
    print(f"  names and prefixes from {config.source}: s3://{config.bucket_name}/{config.prefix}")
    deployed = config.template_processor_hints or (1.0, 60.0)
    print(
        f"  processor buffer {config.processor_buffer_bytes / MIB:g} MB /"
        f" {config.processor_interval_s:g} s (deployed: {deployed[0]:g} MB / {deployed[1]:g} s)"
    )
    print(f"  node root {root}")
    print(
        f"  {args.containers} simulated containers x {args.rate:g} lines/s"
        f" + the seed app k8s/examples/app.py (1 line/s), for {args.duration:g} s"
    )


#: The simulated node's name (what spec.nodeName would be) with --pod-labels.
DEMO_NODE = "demo-node-1"
#: With --routes: the namespace sent to a second stream (another stack when deployed).
ROUTED_NAMESPACE = "shop"


def _routed_config(config: StackConfig) -> StackConfig:
    """The second stack of --routes: its own stream, its own S3 prefixes."""
    return dataclasses.replace(
        config,
        stream_name=f"{config.stream_name}-{ROUTED_NAMESPACE}",
        prefix=f"{ROUTED_NAMESPACE}/{config.prefix or 'logs/'}",
        error_prefix=f"{ROUTED_NAMESPACE}/{config.error_prefix or 'errors/'}",
    )


def run(args: argparse.Namespace, root: Path) -> Outcome:
    config = StackConfig.from_template(
        parameters=args.parameters,
        processor_interval_s=args.buffer_interval,
        processor_buffer_bytes=int(args.buffer_mb * MIB) if args.buffer_mb else None,
    )
    _banner(config, args, root)
    problems: list[str] = []
    with ExitStack() as stack:
        routed = (_routed_config(config),) if args.routes else ()
        pipe = stack.enter_context(
            LocalPipeline(config, routed=routed, endpoint_options={"quota": args.quota})
        )
        print(f"  Firehose endpoint {pipe.endpoint.url}, S3 (moto) {pipe.moto.url}")
        workload = Workload(root / "node", args.containers, rate=args.rate, traces=args.multiline)
        extra = (_pod_labels(stack, workload, root) if args.pod_labels else []) + _route_args(
            routed
        )
        forwarder = _forwarder(config, workload, pipe, root, extra)
        stack.callback(forwarder.terminate)
        forwarder.start()
        print(f"  forwarder: {' '.join(forwarder.args[1:])}")
        stack.callback(workload.stop)
        started = time.monotonic()

        def say(message: str) -> None:
            print(f"[{time.monotonic() - started:5.1f}s] {message}")

        workload.start(rotate_after_s=None if args.no_rotate else args.duration / 2)
        rotated_reported = False
        next_report = started + 2.0
        while time.monotonic() - started < args.duration:
            time.sleep(0.1)
            if not forwarder.running():
                problems.append(f"forwarder exited early: {forwarder.terminate()}")
                break
            if workload.rotations == len(workload.containers) and not rotated_reported:
                rotated_reported = True
                say(f"rotated {workload.rotations} log files (kubelet/dockerd style)")
            if time.monotonic() >= next_report:
                next_report += 2.0
                print(_progress(started, workload, pipe))
                if args.faults:
                    say(_inject_fault(pipe, round((next_report - started) / 2)))
        workload.stop()
        written = workload.written
        say(f"writers stopped after {written} lines; waiting for the forwarder")
        if not wait_for(lambda: pipe.lines >= written, timeout_s=15):
            problems.append(f"forwarder sent {pipe.lines} of {written} lines within 15 s")
        code = forwarder.terminate()
        say(f"forwarder stopped with SIGTERM, exit code {code}")
        if code != 0:
            problems.append(f"forwarder exit code {code}")
        if not pipe.drain(timeout_s=30):
            problems.append(f"delivery did not drain: {pipe.delivery.pending} records pending")
        print(_progress(started, workload, pipe))
        if problems or code != 0:
            print("--- forwarder log (tail) ---")
            print(forwarder.log_tail())
        outcome = _report(
            pipe, workload, problems, show_joined=args.multiline, labels=args.pod_labels
        )
        _query(pipe, root / "s3")
    return outcome


def _forwarder(
    config: StackConfig, workload: Workload, pipe: LocalPipeline, root: Path, extra: list[str]
) -> ForwarderProcess:
    """The forwarder for this stack; with the transform's multi-line mode when it has one."""
    mode = config.lambda_env.get("PODHOSE_MULTILINE", "")
    return ForwarderProcess.local(
        glob=workload.glob,
        stream=config.stream_name,
        endpoint_url=pipe.endpoint.url,
        db=root / "forwarder.db",
        log_path=root / "forwarder.log",
        extra_args=(["--multiline", mode] if mode else []) + extra,
    )


def _pod_labels(stack: ExitStack, workload: Workload, root: Path) -> list[str]:
    """Start the local Kubernetes API with the workload's pods; the forwarder's flags for it."""
    token = root / "serviceaccount-token"
    token.write_text("demo-token")
    api = stack.enter_context(FakeKubeApi(token="demo-token"))
    for container in workload.containers:
        labels = {"app": "fakenerd", "team": "payments" if container.namespace == "shop" else "web"}
        api.put_pod(container.namespace, container.pod, DEMO_NODE, labels=labels)
    print(f"  Kubernetes API (local) {api.url}: {len(workload.containers)} pods on {DEMO_NODE}")
    return ["--kubernetes-metadata", "--kubernetes-api", api.url, "--node-name", DEMO_NODE,
            "--kubernetes-token-file", str(token)]  # fmt: skip


def _labelled_check(pipe: LocalPipeline, problems: list[str]) -> Counter[str]:
    """Check every line carries its pod's labels; the lines without ``kubernetes``."""
    lines = [json.loads(line) for line in pipe.output_lines()]
    labelled = [line for line in lines if line.get("kubernetes", {}).get("labels")]
    print(f"\npod labels: {len(labelled)} of {len(lines)} lines carry kubernetes.labels")
    if labelled:
        print(f"  e.g. {json.dumps(labelled[-1]['kubernetes'], separators=(',', ':'))}")
    if len(labelled) != len(lines):
        problems.append(f"{len(lines) - len(labelled)} lines without their pod's labels")
    return Counter(canonical(json.dumps({k: v for k, v in line.items() if k != "kubernetes"}))
                   for line in lines)  # fmt: skip


def _route_args(routed: tuple[StackConfig, ...]) -> list[str]:
    """The forwarder's --route flags for the routed stacks (said in the banner)."""
    args = []
    for other in routed:
        args += ["--route", f"{ROUTED_NAMESPACE}={other.stream_name}"]
        print(f"  namespace {ROUTED_NAMESPACE!r} -> stream {other.stream_name!r} -> "
              f"s3://{other.bucket_name}/{other.data_root}")  # fmt: skip
    return args


def _routed_check(pipe: LocalPipeline, workload: Workload) -> tuple[Counter[str], Counter[str]]:
    """Expected and delivered lines, each keyed by the stream it belongs to / arrived in, so
    a line in the wrong stream counts as missing from one and unexpected in the other."""
    expected: Counter[str] = Counter()
    got: Counter[str] = Counter()
    print("\nrouting: each namespace's lines in its own stream's S3 prefix")
    main = workload.namespaces - {ROUTED_NAMESPACE}
    for config, namespaces in (
        (pipe.config, main),
        *((c, {ROUTED_NAMESPACE}) for c in pipe.routed),
    ):
        lines = [canonical(line) for line in pipe.output_lines(config)]
        print(f"  stream {config.stream_name!r} (namespaces {', '.join(sorted(namespaces))}): "
              f"{len(lines)} lines under s3://{config.bucket_name}/{config.data_root}")  # fmt: skip
        got.update(f"{config.stream_name} {line}" for line in lines)
        expected.update({f"{config.stream_name} {line}": n
                         for line, n in workload.expected(namespaces).items()})  # fmt: skip
    return expected, got


def _show_joined(pipe: LocalPipeline) -> None:
    """Print one stack trace as it arrived in S3: one event, its lines joined."""
    for line in pipe.output_lines():
        if b"\\tat " in line:
            print("\none stack trace in S3, a single event:")
            print("  " + line.decode())
            return
    print("\nno joined stack trace found in S3")


# The Athena example's shape (docs/operations.md, "Alarms and the Athena table"), over a
# local copy of the bucket: one VARCHAR column `line`, the partitions from the hive-style key names.
QUERY = """
SELECT {group}, count(*) AS lines,
       count(json_extract_string(line, '$.name')) AS seed_app_lines
FROM read_csv('{root}/logs/**/*', delim='\x01', header=false, quote='', escape='',
              columns={{'line': 'VARCHAR'}}, hive_partitioning=true)
GROUP BY {group} ORDER BY {group}
"""


def _query(pipe: LocalPipeline, root: Path) -> None:
    """Copy the data objects out of the local S3 and query them with DuckDB."""
    import duckdb

    keys = pipe.data_keys()
    if not keys:
        return
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        body = pipe.moto.s3.get_object(Bucket=pipe.config.bucket_name, Key=key)["Body"].read()
        path.write_bytes(body)
    group = "namespace, container" if pipe.config.dynamic_partitioning else "year, month, day, hour"
    sql = QUERY.format(group=group, root=root)
    rows = duckdb.connect().sql(sql).fetchall()
    print(f"\nDuckDB on the S3 output (the Athena table's SQL shape, lines per {group}):")
    for row in rows:
        print("  " + "  ".join(str(value) for value in row))


def _report(
    pipe: LocalPipeline,
    workload: Workload,
    problems: list[str],
    *,
    show_joined: bool = False,
    labels: bool = False,
) -> Outcome:
    assert pipe.delivery is not None
    stats = pipe.delivery.stats
    problems += [f"Lambda contract violation: {v}" for v in stats.violations]
    keys = sorted(pipe.data_keys(), key=lambda k: k.rsplit("/", 1)[-1])  # by time in the name
    errors = pipe.error_records()
    bucket = pipe.config.bucket_name
    print(f"\nS3 objects in s3://{bucket}/ ({len(keys)} data, {len(pipe.error_keys())} error):")
    shown = keys if len(keys) <= 8 else [*keys[:4], "...", *keys[-3:]]
    for key in shown:
        print(f"  {key}")
    if keys:
        newest = keys[-1]
        print(f"\nfirst lines of the newest object {newest}:")
        for line in pipe.read_object(newest)[:5]:
            print(f"  {_short(line)}")
    if show_joined:
        _show_joined(pipe)
    if errors:
        problems.append(f"{len(errors)} records in the processing-failed prefix")
    if pipe.routed:
        expected, got = _routed_check(pipe, workload)
    else:
        expected = workload.expected()
        got = _labelled_check(pipe, problems) if labels else pipe.output_counter()
    missing = sum((expected - got).values())
    unexpected = sum((got - expected).values())
    in_s3 = sum(got.values())
    print(
        f"\nLambda: {stats.invocations} invocations, {stats.ok} Ok, {stats.dropped} Dropped,"
        f" {stats.failed} ProcessingFailed; {workload.rotations} rotations"
    )
    stats_ = pipe.endpoint.stats
    if stats_.throttled_calls or stats_.partly_throttled_calls:
        print(f"quota: {stats_.throttled_calls} calls refused whole, "
              f"{stats_.partly_throttled_calls} with records over it (\"Slow down.\"), "
              f"{stats_.throttled_records} records retried")  # fmt: skip
    faults = pipe.endpoint.stats.faults
    if faults:
        print(f"faults the forwarder recovered from: {faults}")
    if missing or unexpected:
        print(f"content check: {missing} expected lines missing, {unexpected} unexpected/duplicate")
    else:
        print("content check: every line written is in S3 exactly once, as the transform emits it")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    events = " (a stack trace is one line in S3)" if workload.traces else ""
    print(f"lines written = {workload.written}, lines in S3 = {in_s3}{events}")
    return Outcome(workload.written, in_s3, missing, unexpected, problems, sum(expected.values()))


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # once: a second Ctrl-C must not cut the cleanup short and orphan the forwarder
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("\ninterrupted: stopping the writers, the forwarder and the servers", file=sys.stderr)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    previous = {
        sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    root = Path(tempfile.mkdtemp(prefix="podhose-demo-"))
    try:
        outcome = run(args, root)
        return 0 if outcome.ok else 1
    except KeyboardInterrupt:
        print("interrupted: everything stopped and removed", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
