"""End to end: simulated containers -> real forwarder -> local Firehose -> real transform -> S3.

The same stack as ``make demo`` (devstack/), shorter: every line the app wrote must be in S3
exactly once, exactly as the transform emits it, across a log rotation in the middle.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devstack import demo
from devstack.forwarder_process import ForwarderProcess
from devstack.moto_server import local_client
from devstack.node import Workload, canonical
from devstack.pipeline import LocalPipeline
from devstack.polling import wait_for
from devstack.stack_config import StackConfig

pytestmark = pytest.mark.timeout(120)

SEED_LINE = b'{"name":"fakenerd","time_ms":'


def _diff(expected: Counter[str], got: Counter[str]) -> str:
    missing = list((expected - got).elements())
    extra = list((got - expected).elements())
    return (
        f"{len(missing)} missing, {len(extra)} unexpected or duplicated;"
        f" missing e.g. {[m[:120] for m in missing[:3]]};"
        f" unexpected e.g. {[e[:120] for e in extra[:3]]}"
    )


def _no_children_left() -> list[Any]:
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()]


@pytest.fixture(params=["defaults", "DynamicPartitioning=true"])
def stack(request: pytest.FixtureRequest) -> Any:
    """The template's defaults, and with dynamic partitioning (keys from the transform)."""
    parameters = dict([request.param.split("=")]) if "=" in request.param else {}
    config = StackConfig.from_template(parameters=parameters, processor_interval_s=0.5)
    with LocalPipeline(config) as pipe:
        yield pipe
    assert not _no_children_left()


def _forwarder(
    pipe: LocalPipeline, workload: Workload, tmp_path: Path, *extra: str
) -> ForwarderProcess:
    return ForwarderProcess.local(
        glob=workload.glob,
        stream=pipe.config.stream_name,
        endpoint_url=pipe.endpoint.url,
        db=tmp_path / "offsets.db",
        log_path=tmp_path / "forwarder.log",
        extra_args=list(extra),
    )


def test_every_line_reaches_s3_once_across_a_rotation(stack: LocalPipeline, tmp_path: Path) -> None:
    pipe = stack
    assert pipe.delivery is not None
    workload = Workload(tmp_path / "node", containers=4, rate=8)
    forwarder = _forwarder(pipe, workload, tmp_path)
    try:
        forwarder.start()
        workload.start(rotate_after_s=3.0)
        rotated = wait_for(lambda: workload.rotations == len(workload.containers), timeout_s=15)
        assert rotated, "the containers did not rotate their logs"
        after_rotation = workload.written
        # keep writing into the new files for as long as before the rotation
        assert wait_for(lambda: workload.written >= 2 * after_rotation, timeout_s=15)
        assert forwarder.running(), forwarder.log_tail()
    finally:
        workload.stop()
        written = workload.written
        caught_up = wait_for(lambda: pipe.lines >= written, timeout_s=20)
        code = forwarder.terminate()
    log_tail = forwarder.log_tail()
    assert caught_up, f"forwarder sent {pipe.lines} of {written} lines\n{log_tail}"
    assert code == 0, log_tail
    assert pipe.delivery.drain(30), f"not drained: {pipe.delivery.stats}"

    stats = pipe.delivery.stats
    assert stats.violations == []
    assert pipe.error_keys() == []
    assert stats.failed == 0

    for container in workload.containers:  # the rotation happened with lines on both sides
        (old,) = container.rotated_to
        assert old.stat().st_size > 0
        assert container.log_path.stat().st_size > 0

    seed_app = workload.seed_container  # k8s/examples/app.py itself, run as a container
    assert seed_app is not None
    assert seed_app.written >= 3
    assert all(line.startswith(SEED_LINE.decode()) for line in seed_app.expected)

    expected = workload.expected()
    got = pipe.output_counter()
    assert sum(expected.values()) == written
    assert got == expected, _diff(expected, got)

    lines = pipe.output_lines()
    # the seed app's line comes out byte for byte as Fluent Bit printed it: compact, in order
    seed = [line for line in lines if line.startswith(SEED_LINE) and b"blob" not in line]
    assert seed
    assert all(
        line == json.dumps(json.loads(line), separators=(",", ":")).encode() for line in seed
    )
    kinds = Counter(
        "docker-text"
        if line.startswith(b'{"log":') and line.endswith(b'\\n"}')
        else "cri-text"
        if line.startswith(b'{"log":')
        else "long"
        if b"blob" in line
        else "seed"
        for line in lines
    )
    assert set(kinds) == {"seed", "docker-text", "cri-text", "long"}, kinds

    keys = pipe.data_keys()
    assert keys
    assert all(k.endswith(".gz") for k in keys), keys[:3]
    if not pipe.config.dynamic_partitioning:
        assert all(k.startswith("logs/year=") for k in keys), keys[:3]
        return
    _check_partitions(pipe, workload, keys)


def _check_partitions(pipe: LocalPipeline, workload: Workload, keys: list[str]) -> None:
    """Each namespace's partition holds exactly the lines of that namespace's containers."""
    for namespace in {c.namespace for c in workload.containers}:
        prefix = f"logs/namespace={namespace}/container=app/year="
        got = Counter(
            canonical(line)
            for key in keys
            if key.startswith(prefix)
            for line in pipe.read_object(key)
        )
        expected = Counter(
            canonical(line)
            for c in workload.containers
            if c.namespace == namespace
            for line in c.expected
        )
        assert got == expected, _diff(expected, got)


def _access_log(rnd: random.Random, target_bytes: int) -> list[str]:
    """CRI lines of a web server's access log (~13x gzip ratio, like real logs)."""
    paths = ["/api/v1/items", "/api/v1/users", "/healthz", "/api/v2/orders", "/static/app.js"]
    users = ["alice", "bob", "carol", "dave", "erin", "frank"]
    lines: list[str] = []
    size = 0
    while size < target_bytes:
        line = (
            f"2026-01-01T00:00:00.000000000Z stdout F GET {rnd.choice(paths)}/"
            f"{rnd.randrange(10**4)} status={rnd.choice([200, 200, 404, 500])}"
            f' user="{rnd.choice(users)}" took={rnd.randrange(1000)}ms'
        )
        lines.append(line)
        size += len(line) + 1
    return lines


def test_overflowing_response_is_reingested_through_the_endpoint() -> None:
    """A record whose output would not fit the 6 MB response goes back through PutRecordBatch
    (the Lambda's own boto3 client, to this endpoint) and still lands exactly once."""
    config = StackConfig.from_template(processor_interval_s=0.5)  # template's 0.25 MB buffer
    rnd = random.Random(5)
    with LocalPipeline(config) as pipe:
        assert pipe.delivery is not None
        expected: Counter[str] = Counter()
        records = []
        for _ in range(2):
            lines = _access_log(rnd, 7_500_000)  # ~570 KB gzip, ~7 MB of base64 output
            payload = b"\x1epodhose/1 src=web-0_default_app-" + b"c" * 64 + b".log\n"
            payload += "".join(line + "\n" for line in lines).encode()
            records.append({"Data": gzip.compress(payload)})
            expected.update(canonical(json.dumps({"log": line.split(" ", 3)[3]})) for line in lines)
        firehose = local_client("firehose", pipe.endpoint.url)
        response = firehose.put_record_batch(DeliveryStreamName=config.stream_name, Records=records)
        assert response["FailedPutCount"] == 0
        stats = pipe.delivery.stats
        reingested = wait_for(lambda: stats.records_in > len(records), timeout_s=60)
        assert reingested, f"nothing came back through the endpoint: {stats}"
        assert pipe.delivery.drain(60), f"not drained: {stats}"
        assert stats.violations == []
        assert stats.dropped >= 1  # the overflow was answered Dropped and re-ingested ...
        assert pipe.reingested_records > 0  # ... through the endpoint, by its boto3 client
        assert pipe.error_keys() == []
        got = pipe.output_counter()
        assert got == expected, _diff(expected, got)


@pytest.fixture
def run_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[[list[str]], str]]:
    """`python -m devstack.demo ARGS`: its output, once it exited 0; afterwards nothing it
    started or wrote is left behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def run(args: list[str]) -> str:
        code = demo.main(args)
        out = capsys.readouterr().out
        assert code == 0, out
        return out

    yield run
    assert list(tmp_path.iterdir()) == []
    assert not _no_children_left()


def test_demo_runs_reports_and_cleans_up(run_demo: Callable[[list[str]], str]) -> None:
    """`make demo` itself, short and with faults: exit 0, equal counts, nothing left behind."""
    out = run_demo(["--duration", "4.5", "--containers", "2", "--rate", "4", "--faults"])
    match = re.search(r"^lines written = (\d+), lines in S3 = (\d+)$", out, re.MULTILINE)
    assert match, out
    assert match[1] == match[2]
    assert int(match[1]) > 10
    assert '{"name":"fakenerd","time_ms":' in out
    faults = re.search(r"^faults the forwarder recovered from: (.*)$", out, re.MULTILINE)
    assert faults, out
    assert "'server_error': 1" in faults[1]  # armed at 2 s (and 'drop' at 4 s)
    # it ends with DuckDB's query over the S3 output: the hour's row counts every line
    query = out.split("DuckDB on the S3 output", 1)[1].splitlines()[1:]
    assert sum(int(row.split()[4]) for row in query if row.strip()) == int(match[2])


def test_stack_traces_arrive_as_one_event_each_with_multiline(tmp_path: Path) -> None:
    """Multiline=java in the template and --multiline java: each trace is one S3 line."""
    config = StackConfig.from_template(parameters={"Multiline": "java"}, processor_interval_s=0.5)
    assert config.lambda_env["PODHOSE_MULTILINE"] == "java"
    with LocalPipeline(config) as pipe:
        assert pipe.delivery is not None
        workload = Workload(tmp_path / "node", containers=2, rate=30, seed_app=False, traces=True)
        forwarder = _forwarder(pipe, workload, tmp_path, "--multiline", "java")
        try:
            forwarder.start()
            workload.start(rotate_after_s=2.0)
            assert wait_for(lambda: workload.written >= 300, timeout_s=20)
        finally:
            workload.stop()
            written = workload.written
            caught_up = wait_for(lambda: pipe.lines >= written, timeout_s=20)
            code = forwarder.terminate()
        assert caught_up and code == 0, forwarder.log_tail()
        assert pipe.delivery.drain(30)
        expected = workload.expected()
        got = pipe.output_counter()
        assert got == expected, _diff(expected, got)
        traces = [line for line in pipe.output_lines() if b"IllegalStateException" in line]
        assert traces and all(json.loads(t)["log"].count("\tat ") == 3 for t in traces)
        assert sum(got.values()) < written  # six lines became one event, per trace


def test_demo_with_pod_labels_and_multiline(run_demo: Callable[[list[str]], str]) -> None:
    """`make demo DEMO_ARGS="--pod-labels --multiline"`: labels on every line, traces joined."""
    out = run_demo(
        ["--duration", "4", "--containers", "2", "--rate", "8", "--pod-labels", "--multiline"]
    )
    labelled = re.search(r"^pod labels: (\d+) of (\d+) lines carry kubernetes.labels$", out, re.M)
    assert labelled and labelled[1] == labelled[2] and int(labelled[1]) > 10, out
    assert '"labels":{"app":"fakenerd"' in out
    assert "one stack trace in S3, a single event:" in out
    assert "content check: every line written is in S3 exactly once" in out


def test_demo_with_routes(run_demo: Callable[[list[str]], str]) -> None:
    """`make demo DEMO_ARGS=--routes`: namespace shop in its own stream and S3 prefix only
    (the check counts a line in the wrong stream as missing there and unexpected here)."""
    out = run_demo(["--duration", "4", "--containers", "2", "--rate", "8", "--routes"])
    per_stream = dict(
        re.findall(r"^  stream '([\w-]+)' \(namespaces [\w, ]+\): (\d+) lines", out, re.M)
    )
    assert set(per_stream) == {"podhose", "podhose-shop"}, out
    assert all(int(n) > 10 for n in per_stream.values()), out
    assert "/shop/logs/" in out
    assert "content check: every line written is in S3 exactly once" in out


def test_demo_at_a_quota(run_demo: Callable[[list[str]], str]) -> None:
    """`make demo DEMO_ARGS="--quota bytes=400,calls=1"`: the local Firehose says "Slow down."
    (whole calls and records); every line still arrives exactly once."""
    out = run_demo(["--duration", "5", "--containers", "2", "--quota", "bytes=400,calls=1"])
    throttled = re.search(
        r"^quota: (\d+) calls refused whole, (\d+) with records over it", out, re.M
    )
    assert throttled and int(throttled[1]) + int(throttled[2]) > 0, out
    assert "content check: every line written is in S3 exactly once" in out
