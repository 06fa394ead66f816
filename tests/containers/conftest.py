"""Fixtures of `make container-test`: one Docker engine and the images, for the whole session.

These tests run only through `make container-test` (part of `make test`); `make unit`
leaves this directory out. Each test adds what it verified to ``verified``; the list is
printed at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.containers.engine import DockerEngine
from tests.containers.images import build_forwarder_image, ensure_base_image

FORWARDER_TAG = "podhose-forwarder:container-test"
VERIFIED: list[str] = []


@pytest.fixture(scope="session")
def verified() -> list[str]:
    return VERIFIED


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    with DockerEngine.acquire() as engine:
        how = "started here" if engine.started else "already running"
        VERIFIED.append(f"Docker engine: {how} ({engine.env.get('DOCKER_HOST', 'default socket')})")
        yield engine


@pytest.fixture(scope="session")
def base_image(engine: DockerEngine) -> str:
    tag = ensure_base_image(engine)
    version = engine.docker("run", "--rm", "--network", "none", tag, "python3", "--version")
    VERIFIED.append(f"base image {tag}: debootstrap trixie, {version.stdout.strip()}")
    return tag


@pytest.fixture(scope="session")
def forwarder_image(engine: DockerEngine, base_image: str) -> str:
    build_forwarder_image(engine, base_image, FORWARDER_TAG)
    VERIFIED.append(f"make image on {base_image}: {FORWARDER_TAG} built with no network")
    return FORWARDER_TAG


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if VERIFIED:
        terminalreporter.section("container-test verified")
        for line in VERIFIED:
            terminalreporter.write_line(f"- {line}")
