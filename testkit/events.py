"""Firehose data-transformation events, as Firehose sends them to the transform Lambda.

>>> firehose_event([b"x"])["records"][0]["data"]
'eA=='
"""

from __future__ import annotations

import base64
from typing import Any

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
