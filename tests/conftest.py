"""Shared fixtures: a Lambda context, and helpers to build Firehose events."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from devstack.lambda_context import LambdaContext
from tests.forwarder_testlib import Node

STREAM_ARN = "arn:aws:firehose:us-east-1:123456789012:deliverystream/podhose"


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
