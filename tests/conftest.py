"""Shared fixtures: a Lambda context, the local Firehose endpoint, a temp node layout."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from devstack.lambda_context import LambdaContext
from testkit.forwarder import Node


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
