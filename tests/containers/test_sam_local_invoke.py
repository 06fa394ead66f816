"""``sam local invoke`` on every events/*.json answers what ``make invoke`` prints.

The function is built by ``sam build`` from template.yaml with ``TransformArchitecture=x86_64``
(and ``LAMBDA_PLATFORM=manylinux2014_x86_64`` for deploy/lambda/Makefile), because this
machine is x86_64: running the arm64 build would need QEMU user emulation for every Python
instruction of the Lambda, while the arm64 artifact itself is already built and checked in
``make deploy-check`` (every .so is aarch64). SAM runs it on the local stand-in for
``public.ecr.aws/lambda/python:3.13-x86_64`` with its own Runtime Interface Emulator, on the
host network (tests/containers/sam_on_host_network.py says why and how).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from devstack.invoke import describe
from tests.containers.engine import DockerEngine
from tests.containers.images import ensure_lambda_base_image

REPO = Path(__file__).resolve().parents[2]
SAM = REPO / ".tools" / "sam" / "bin" / "sam"
SAM_PYTHON = REPO / ".tools" / "sam" / "bin" / "python"
LAUNCHER = REPO / "tests" / "containers" / "sam_on_host_network.py"
EVENTS = sorted((REPO / "events").glob("*.json"))
ARCHITECTURE = ("TransformArchitecture=x86_64",)


@pytest.fixture(scope="module")
def lambda_base(engine: DockerEngine, base_image: str, verified: list[str]) -> str:
    tag = ensure_lambda_base_image(engine, base_image)
    verified.append(f"Lambda base stand-in {tag}: awslambdaric on {base_image}")
    return tag


@pytest.fixture(scope="module")
def built_template(engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    result = engine.run(
        [
            str(SAM),
            "build",
            "--template-file",
            str(REPO / "template.yaml"),
            "--build-dir",
            str(build_dir),
            "--parameter-overrides",
            *ARCHITECTURE,
        ],
        cwd=REPO,
        extra_env={"LAMBDA_PLATFORM": "manylinux2014_x86_64", "SAM_CLI_TELEMETRY": "0"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shared_objects = list((build_dir / "TransformFunction").rglob("*.so"))
    assert shared_objects
    assert all(p.name.endswith("x86_64-linux-gnu.so") for p in shared_objects), shared_objects
    return build_dir / "template.yaml"


def make_invoke(event: Path) -> str:
    result = subprocess.run(
        ["make", "--silent", "--no-print-directory", "invoke", f"EVENT={event}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Powertools logs and metrics (JSON lines) go to stdout too; keep describe()'s lines:
    # "== <recordId>: <result>" and the record's text indented by three spaces.
    lines = result.stdout.splitlines()
    return "\n".join(line for line in lines if line.startswith(("== ", "   ")))


@pytest.mark.parametrize("event", EVENTS, ids=[e.stem for e in EVENTS])
def test_sam_local_invoke_matches_make_invoke(
    engine: DockerEngine,
    lambda_base: str,
    built_template: Path,
    event: Path,
    verified: list[str],
) -> None:
    result = engine.run(
        [
            str(SAM_PYTHON),
            str(LAUNCHER),
            "local",
            "invoke",
            "TransformFunction",
            "--template",
            str(built_template),
            "--event",
            str(event),
            "--skip-pull-image",
            "--parameter-overrides",
            *ARCHITECTURE,
        ],
        cwd=REPO,
        extra_env={"SAM_CLI_TELEMETRY": "0", "SAM_CLI_CONTAINER_CONNECTION_TIMEOUT": "120"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    response = json.loads(result.stdout)
    assert describe(response) == make_invoke(event)
    answered = len(response["records"])
    assert answered == len(json.loads(event.read_text())["records"])
    verified.append(f"sam local invoke {event.name}: {answered} records, same as make invoke")
