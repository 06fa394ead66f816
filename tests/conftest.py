"""Shared fixtures (a Lambda context, helpers to build Firehose events) and the kind marks:
each test is marked with the name of its folder (tests/unit -> ``unit``, ...)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localaws.firehose_endpoint import FirehoseEndpoint
from tests.forwarder_testlib import Node
from transform_lambda.invoke import LocalContext

STREAM_ARN = "arn:aws:firehose:us-east-1:123456789012:deliverystream/podhose"
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


def firehose_event(datas: list[bytes], stream_arn: str = STREAM_ARN) -> dict[str, Any]:
    """A data-transformation event as Firehose sends it, one record per data blob."""
    return {
        "invocationId": "test-invocation",
        "deliveryStreamArn": stream_arn,
        "region": "us-east-1",
        "records": [
            {
                "recordId": f"record-{i:05d}",
                "approximateArrivalTimestamp": 1577521193704,
                "data": base64.b64encode(data).decode(),
            }
            for i, data in enumerate(datas)
        ],
    }


@pytest.fixture
def lambda_context() -> LocalContext:
    return LocalContext()


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
