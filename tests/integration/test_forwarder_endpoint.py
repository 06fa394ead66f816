"""The local Firehose endpoint speaks enough of the protocol for boto3 and enforces limits."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.firehose_endpoint import FirehoseEndpoint
from testkit.forwarder import REPO, free_port, wait_for


@pytest.fixture
def endpoint() -> Iterator[FirehoseEndpoint]:
    seen: list[tuple[str, list[bytes]]] = []
    with FirehoseEndpoint(sink=lambda name, records: seen.append((name, records))) as ep:
        ep.seen = seen  # type: ignore[attr-defined]
        yield ep


def client(url: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "firehose",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_protocol_operations_and_sink(endpoint: FirehoseEndpoint) -> None:
    fh = client(endpoint.url)
    resp = fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"a\n"}, {"Data": b"b"}])
    assert resp["FailedPutCount"] == 0 and len(resp["RequestResponses"]) == 2
    assert fh.put_record(DeliveryStreamName="s", Record={"Data": b"c"})["RecordId"]
    assert endpoint.received() == [b"a\n", b"b", b"c"]
    assert endpoint.seen == [("s", [b"a\n", b"b"]), ("s", [b"c"])]  # type: ignore[attr-defined]
    desc = fh.describe_delivery_stream(DeliveryStreamName="s")["DeliveryStreamDescription"]
    assert desc["DeliveryStreamStatus"] == "ACTIVE"
    assert fh.list_delivery_streams()["DeliveryStreamNames"] == ["s"]
    assert endpoint.stats.billed_bytes == 3 * 5120


def test_limits_are_enforced(endpoint: FirehoseEndpoint) -> None:
    fh = client(endpoint.url)
    for records in (
        [{"Data": b"x"}] * 501,
        [{"Data": b"x" * 1_024_001}],
        [{"Data": b"x" * 1_000_000}] * 5,
    ):
        with pytest.raises(ClientError) as exc:
            fh.put_record_batch(DeliveryStreamName="s", Records=records)
        assert exc.value.response["Error"]["Code"] == "InvalidArgumentException"
    fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"x" * 1_024_000}] * 4)
    assert endpoint.stats.rejected_calls == 3


def test_faults(endpoint: FirehoseEndpoint) -> None:
    fh = client(endpoint.url)
    endpoint.throttle(1)
    with pytest.raises(ClientError) as exc:
        fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"x"}])
    assert exc.value.response["Error"]["Code"] == "ServiceUnavailableException"
    endpoint.server_error(1)
    with pytest.raises(ClientError) as exc:
        fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"x"}])
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    endpoint.fail_records(1, every=2)
    resp = fh.put_record_batch(
        DeliveryStreamName="s", Records=[{"Data": b"%d" % i} for i in range(4)]
    )
    assert resp["FailedPutCount"] == 2
    assert [("ErrorCode" in r) for r in resp["RequestResponses"]] == [True, False, True, False]
    endpoint.drop_connections(1)
    with pytest.raises(Exception, match=r"(?i)connection|closed|endpoint"):
        fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"dropped"}])
    assert endpoint.received() == [b"1", b"3"]  # nothing from the faulty calls but the ok ones
    resp = fh.put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"ok"}])
    assert resp["FailedPutCount"] == 0


def test_runs_as_a_module() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "devstack.firehose_endpoint", "--port", str(port), "--count-only"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(url + "/stats", timeout=2):
                    return True
            except OSError:
                return False

        wait_for(up, 20, "endpoint")
        client(url).put_record_batch(DeliveryStreamName="s", Records=[{"Data": b"z"}])
        with urllib.request.urlopen(url + "/stats", timeout=2) as resp:
            assert b'"records":1' in resp.read()
    finally:
        proc.terminate()
        proc.wait(10)
