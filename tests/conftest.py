"""Shared fixtures (a Lambda context, the local Firehose endpoint, a temp node layout) and
the kind marks: each test is marked with the name of its folder (tests/unit -> ``unit``, ...)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from devstack.lambda_context import LambdaContext
from testkit.forwarder import Node

TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its kind, the folder it is in: the kinds are the markers of
    pyproject.toml, so (strict markers) a test outside their folders fails collection."""
    for item in items:
        kind = item.path.resolve().relative_to(TESTS).parts[0]
        try:
            item.add_marker(kind)
        except pytest.fail.Exception:
            raise pytest.UsageError(f"{item.nodeid}: not in a folder of its kind") from None


@pytest.fixture(autouse=True)
def _no_metrics_left_behind() -> Iterator[None]:
    """Tests that call ``app.process_event`` (no ``log_metrics`` around it) leave metrics in
    Powertools' module-level set; clear them so a later handler call in the same worker
    does not flush them as its own."""
    yield
    app = sys.modules.get("transform_lambda.app")
    if app is not None:
        app.metrics.clear_metrics()


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def endpoint() -> Iterator[FirehoseEndpoint]:
    """podhose's local Firehose endpoint on 127.0.0.1 (faults on demand)."""
    with FirehoseEndpoint() as ep:
        yield ep


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A temp node layout: /var/log/containers symlinks into pods/ and docker/ dirs."""
    node = Node(tmp_path / "node")
    yield node
    shutil.rmtree(node.root, ignore_errors=True)  # backlogs are large: do not keep them
