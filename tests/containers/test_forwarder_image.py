"""The forwarder image, run the way the DaemonSet runs it, ships every line of a simulated node.

The docker run options come from the rendered k8s/ manifests (tests/containers/daemonset_run.py)
with the Docker Engine component on, so both runtimes' layouts are read: containerd's
``/var/log/pods/.../0.log`` and Docker's ``/var/lib/docker/containers/<id>/<id>-json.log``,
behind kubelet's absolute symlinks in ``/var/log/containers``, every file ``root:root 0640``
in ``0750`` directories. The image reaches the local Firehose endpoint on 127.0.0.1 over the
host network; the transform decodes what arrives into local S3.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.node import canonical, expected_output, runtime_lines
from devstack.pipeline import LocalPipeline
from devstack.polling import wait_for
from devstack.stack_config import LOCAL_CREDENTIALS, REGION, StackConfig
from testkit.forwarder import free_port, healthy, http_get, metric
from tests.containers.daemonset_run import DaemonSetRun
from tests.containers.engine import DockerEngine

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".tools" / "k8s" / "bin" / "kubectl"


def render_with_docker_component(tmp_path: Path) -> list[dict[str, Any]]:
    """k8s/ plus components/docker-engine-nodes, rendered by the pinned kubectl."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = Path(os.path.relpath(REPO / "k8s", overlay))
    kustomization = {
        "resources": [str(base)],
        "components": [str(base / "components" / "docker-engine-nodes")],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@dataclass
class NodeContainer:
    """One container's log on the simulated node, written as its runtime would."""

    runtime: str  # "cri" or "docker"
    path: Path  # the real file, on this machine
    expected: list[str]

    def write(self, content: str, stream: str = "stdout") -> None:
        with self.path.open("ab") as fh:
            fh.write(runtime_lines(self.runtime, stream, content))
        self.expected.append(expected_output(self.runtime, content))


def add_container(node: Path, runtime: str, pod: str, namespace: str = "default") -> NodeContainer:
    """A kubelet layout for one container; symlinks are absolute, valid inside the pod."""
    container_id = secrets.token_hex(32)
    pod_dir = f"/var/log/pods/{namespace}_{pod}_{uuid.uuid4()}/app"
    pod_log = f"{pod_dir}/0.log"
    _private_dir(node / pod_dir.lstrip("/"))
    if runtime == "docker":
        docker_dir = f"/var/lib/docker/containers/{container_id}"
        real = node / docker_dir.lstrip("/") / f"{container_id}-json.log"
        _private_dir(real.parent)
        (node / pod_log.lstrip("/")).symlink_to(f"{docker_dir}/{container_id}-json.log")
    else:
        real = node / pod_log.lstrip("/")
    real.touch()
    os.chown(real, 0, 0)
    real.chmod(0o640)  # what kubelet and the runtimes create
    link = node / "var/log/containers" / f"{pod}_{namespace}_app-{container_id}.log"
    link.symlink_to(pod_log)
    return NodeContainer(runtime, real, [])


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for part in [path, *path.parents]:
        if part.name in ("var", ""):
            break
        part.chmod(0o750)


@pytest.fixture
def pipeline() -> Iterator[LocalPipeline]:
    with LocalPipeline(StackConfig.from_template(processor_interval_s=0.5)) as pipe:
        yield pipe


@dataclass
class RunningForwarder:
    engine: DockerEngine
    name: str
    port: int

    def logs(self) -> str:
        result = self.engine.docker("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def state(self) -> dict[str, Any]:
        out = self.engine.docker("inspect", "--format", "{{json .State}}", self.name).stdout
        return json.loads(out)


def start_forwarder(
    engine: DockerEngine,
    image: str,
    run: DaemonSetRun,
    pipe: LocalPipeline,
    *,
    arch: str = "amd64",
    start_timeout_s: float = 60,
) -> RunningForwarder:
    port = free_port()
    overrides = {
        "PODHOSE_ENDPOINT_URL": pipe.endpoint.url,  # the local Firehose on 127.0.0.1
        "PODHOSE_HTTP_PORT": str(port),  # host network: a free port instead of 2020
        "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": REGION,
    }
    name = f"podhose-forwarder-test-{secrets.token_hex(4)}"
    platform = ("--platform", f"linux/{arch}")
    engine.docker("run", "--detach", "--name", name, *platform, *run.docker_args(overrides), image)
    forwarder = RunningForwarder(engine, name, port)
    assert wait_for(lambda: healthy(port), start_timeout_s), forwarder.logs()
    return forwarder


def stop_forwarder(forwarder: RunningForwarder, grace_s: int) -> tuple[int, float]:
    started = time.monotonic()
    forwarder.engine.docker("stop", "--time", str(grace_s), forwarder.name, timeout=grace_s + 60)
    return forwarder.state()["ExitCode"], time.monotonic() - started


def simulated_node(tmp_path: Path) -> tuple[Path, list[NodeContainer], DaemonSetRun]:
    """A node with CRI and Docker containers, and the DaemonSet's run options for it."""
    node = tmp_path / "node"
    for directory in ("var/log/containers", "var/log/pods"):
        _private_dir(node / directory)
    _private_dir(node / "var/lib/docker/containers")
    containers = [
        add_container(node, "cri", "web-1"),
        add_container(node, "cri", "api-1", "shop"),
        add_container(node, "docker", "legacy-1"),
    ]
    run = DaemonSetRun.from_objects(
        render_with_docker_component(tmp_path), node_root=node, pod_name="podhose-forwarder-x1"
    )
    return node, containers, run


#: Under qemu the interpreter starts ~10x slower than natively (imports of boto3, botocore).
ARM64_START_TIMEOUT_S = 240


def test_arm64_image_ships_lines_under_emulation(
    engine: DockerEngine,
    forwarder_image_arm64: str,
    pipeline: LocalPipeline,
    tmp_path: Path,
    verified: list[str],
) -> None:
    """The arm64 image, run under qemu with the DaemonSet's options: a short run."""
    arch = engine.docker(
        "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", forwarder_image_arm64
    ).stdout.strip()
    assert arch == "linux/arm64"
    _, containers, run = simulated_node(tmp_path)
    for i in range(100):  # a backlog, then lines while it runs
        for n, c in enumerate(containers):
            c.write(json.dumps({"name": "fakenerd", "arch": "arm64", "seq": i, "c": n}))
    started = time.monotonic()
    forwarder = start_forwarder(
        engine,
        forwarder_image_arm64,
        run,
        pipeline,
        arch="arm64",
        start_timeout_s=ARM64_START_TIMEOUT_S,
    )
    took_to_start = time.monotonic() - started
    try:
        machine = engine.docker(
            "exec", forwarder.name, "/opt/podhose/bin/python3", "-c",
            "import platform; print(platform.machine())",
        ).stdout.strip()  # fmt: skip
        assert machine == "aarch64"
        for i in range(100, 150):
            for n, c in enumerate(containers):
                c.write(json.dumps({"name": "fakenerd", "arch": "arm64", "seq": i, "c": n}))
        expected = Counter(canonical(line) for c in containers for line in c.expected)
        assert wait_for(lambda: pipeline.output_counter() == expected, 180), (
            f"{sum(pipeline.output_counter().values())} of {sum(expected.values())} lines in "
            f"S3\n{forwarder.logs()}"
        )
        code, took = stop_forwarder(forwarder, run.grace_period_s)
        assert code == 0, forwarder.logs()
    finally:
        engine.docker("rm", "--force", forwarder.name, check=False)
    verified.append(
        f"arm64 image ({machine} under qemu) run with the DaemonSet's options: healthy after "
        f"{took_to_start:.0f}s, {sum(expected.values())} lines from CRI and Docker files each "
        f"in S3 once; docker stop (SIGTERM) exited 0 in {took:.1f}s"
    )


def test_image_runs_as_the_daemonset_and_ships_every_line(
    engine: DockerEngine,
    forwarder_image: str,
    pipeline: LocalPipeline,
    tmp_path: Path,
    verified: list[str],
) -> None:
    node, containers, run = simulated_node(tmp_path)
    args = run.docker_args()
    for flag in ("--read-only", "--cap-drop=ALL", "no-new-privileges", "0:0"):
        assert flag in args, f"{flag} missing from the DaemonSet's run options: {args}"

    def write(round_: int, count: int) -> None:
        for i in range(count):
            for n, c in enumerate(containers):
                c.write(json.dumps({"name": "fakenerd", "round": round_, "seq": i, "c": n}))
            if i % 50 == 7:
                containers[0].write("plain text, not JSON " + str(i), "stderr")
                containers[2].write(json.dumps({"blob": "x" * 40000, "seq": i}))  # split in pieces

    def all_read(total: int) -> bool:
        try:
            return metric(forwarder.port, "podhose_lines_read_total") >= total
        except OSError:  # not answering (yet, or any more): the wait reports the logs
            return False

    write(0, 200)  # before the forwarder starts: a backlog
    forwarder = start_forwarder(engine, forwarder_image, run, pipeline)
    try:
        status, body = http_get(forwarder.port, "/metrics")
        assert status == 200 and "podhose_lines_read_total" in body
        write(1, 200)  # while it runs: tailing
        total = sum(len(c.expected) for c in containers)
        assert wait_for(lambda: all_read(total), 60), forwarder.logs()
        write(2, 30)  # just before SIGTERM: read, maybe not yet sent
        total = sum(len(c.expected) for c in containers)
        assert wait_for(lambda: all_read(total), 60), forwarder.logs()
        code, took = stop_forwarder(forwarder, run.grace_period_s)
        assert code == 0, forwarder.logs()
        assert took < run.grace_period_s, f"docker stop took {took:.1f}s"

        # Restarted on the same node: resumes from the offsets DB, sends nothing twice.
        before_restart = total
        forwarder.engine.docker("rm", forwarder.name)
        forwarder = start_forwarder(engine, forwarder_image, run, pipeline)
        write(3, 50)
        total = sum(len(c.expected) for c in containers)
        assert wait_for(lambda: all_read(total - before_restart), 60), forwarder.logs()
        expected = Counter(canonical(line) for c in containers for line in c.expected)
        assert wait_for(lambda: pipeline.output_counter() == expected, 90), (
            f"{sum(pipeline.output_counter().values())} of {total} lines in S3\n{forwarder.logs()}"
        )
        code, took = stop_forwarder(forwarder, run.grace_period_s)
        assert code == 0, forwarder.logs()
    finally:
        engine.docker("rm", "--force", forwarder.name, check=False)
    assert (node / "var/lib/podhose/offsets.db").exists()
    security = [a for a in args if a in ("--read-only", "--cap-drop=ALL", "no-new-privileges")]
    verified.append(
        f"forwarder image run with the DaemonSet's options ({', '.join(security)}, uid 0, "
        f"root:root 0640 logs mounted read-only): {total} lines from CRI and Docker files, "
        "written before, during and after a restart, each in S3 once; /healthz and /metrics "
        f"answered; docker stop (SIGTERM) exited 0 in {took:.1f}s (grace {run.grace_period_s}s)"
    )


def test_image_rss_in_steady_state_meets_the_memory_goal(
    engine: DockerEngine, forwarder_image: str, tmp_path: Path, verified: list[str]
) -> None:
    """The image itself, measured as `python -m bench.memory --image` measures it: 10
    containers logging 10 lines a second each, every line delivered, the median RSS of the
    forwarder's process (the container's PID, from the host) within the memory goal, with
    the Firehose-only botocore data of the image's build."""
    out = tmp_path / "memory"
    result = engine.run(
        [sys.executable, "-m", "bench.memory", "--image", forwarder_image, "--scenarios",
         "steady", "--steady-seconds", "30", "--settings", "tuned", "--out", str(out)],
        cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    (run,) = summary["runs"]
    assert run["lines_delivered"] == run["lines_written"] > 1000
    assert run["botocore_data"] == "/opt/podhose/botocore-data"
    goal = summary["goals"]["steady"]
    assert run["steady_mb"] <= goal, f"steady RSS {run['steady_mb']} MiB over the goal {goal}"
    verified.append(
        f"forwarder image in steady state (bench.memory --image, 10 files, 30 s): median RSS "
        f"{run['steady_mb']} MiB, peak {run['peak_mb']} MiB (goal {goal}), "
        f"{run['lines_delivered']} lines delivered, Firehose-only botocore data"
    )


def test_image_sbom_lists_every_pinned_package(
    engine: DockerEngine, forwarder_image: str, verified: list[str]
) -> None:
    """`make sbom-image`: CycloneDX of the packages installed in the image, every pin of
    deploy/forwarder/requirements.txt at its version (deploy/sbom.py checks, this re-reads)."""
    result = engine.run(
        ["make", "--no-print-directory", "sbom-image", f"IMAGE={forwarder_image}", "ARCH=amd64"],
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    sbom = json.loads((REPO / "build/sbom/forwarder-image-amd64.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {c["name"].lower().replace("_", "-"): c["version"] for c in sbom["components"]}
    lock = (REPO / "deploy/forwarder/requirements.txt").read_text()
    for name in ("boto3", "botocore", "zstandard"):
        assert f"{name}=={listed[name]}" in lock
    verified.append(
        f"make sbom-image: CycloneDX {sbom['specVersion']} of the image, "
        f"{len(listed)} Python packages, every pin of deploy/forwarder/requirements.txt"
    )
