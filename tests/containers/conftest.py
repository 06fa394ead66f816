"""Fixtures of `make container-test`: one Docker engine and the images, for the whole session.

These tests run only through `make container-test` (part of `make test`); `make unit`
leaves this directory out. Each test adds what it verified to ``verified``; the list is
printed at the end of the run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from tests.containers.engine import DockerEngine, ensure_arm64_emulation
from tests.containers.images import build_forwarder_image, ensure_base_image

FORWARDER_TAG = "podhose-forwarder:container-test"
FORWARDER_ARM64_TAG = "podhose-forwarder:container-test-arm64"
VERIFIED: list[str] = []


@pytest.fixture(scope="session")
def verified() -> list[str]:
    return VERIFIED


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    with DockerEngine.acquire() as engine:
        how = "started here" if engine.started else "already running"
        VERIFIED.append(f"Docker engine: {how} ({engine.env.get('DOCKER_HOST', 'default socket')})")
        arm64 = _start_arm64_build(engine) if _ARM64_WANTED else None
        try:
            yield engine
        finally:
            if arm64 is not None and not arm64.done():  # dockerd stops next: let it finish
                arm64.exception(timeout=1800)


_ARM64: dict[str, Future[str]] = {}
_ARM64_WANTED: list[bool] = []  # non-empty when a collected test needs the arm64 image


def _start_arm64_build(engine: DockerEngine) -> Future[str]:
    """Build the arm64 image in the background while the amd64 tests run: under qemu it is
    CPU-bound on one core for minutes; the amd64 tests mostly wait."""
    future: Future[str] = Future()

    def build() -> None:
        try:
            future.set_result(_build_arm64(engine))
        except BaseException as exc:  # handed to the test that needs the image
            future.set_exception(exc)

    threading.Thread(target=build, name="arm64-image", daemon=True).start()
    _ARM64["image"] = future
    return future


def _build_arm64(engine: DockerEngine) -> str:
    how = ensure_arm64_emulation()
    base = ensure_base_image(engine, "arm64")
    version = engine.docker(
        "run", "--rm", "--network", "none", "--platform", "linux/arm64", base,
        "python3", "-c", "import platform, sys; print(platform.machine(), sys.version.split()[0])",
    ).stdout.strip()  # fmt: skip
    VERIFIED.append(f"arm64 base image {base}: debootstrap --arch=arm64 trixie ({how}): {version}")
    build_forwarder_image(engine, base, FORWARDER_ARM64_TAG, arch="arm64")
    VERIFIED.append(f"make image ARCH=arm64 on {base}: {FORWARDER_ARM64_TAG} built with no network")
    return FORWARDER_ARM64_TAG


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


@pytest.fixture(scope="session")
def forwarder_image_arm64(engine: DockerEngine) -> str:
    """``make image ARCH=arm64`` on an arm64 Debian base (its build steps under qemu),
    started in the background with the engine."""
    return _ARM64["image"].result(timeout=1800)


@pytest.hookimpl(trylast=True)  # after -k and -m deselected
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The arm64 tests last: their image is built meanwhile."""

    def wants_arm64(item: pytest.Item) -> bool:
        return "forwarder_image_arm64" in getattr(item, "fixturenames", ())

    items.sort(key=wants_arm64)
    if any(map(wants_arm64, items)):
        _ARM64_WANTED.append(True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if VERIFIED:
        terminalreporter.section("container-test verified")
        for line in VERIFIED:
            terminalreporter.write_line(f"- {line}")
