"""podhose-redrive as a subprocess against moto's S3 server and the local Firehose endpoint,
both on 127.0.0.1, with real boto3."""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from devstack.moto_server import MotoS3
from devstack.stack_config import StackConfig
from testkit.forwarder import REPO

STREAM = "podhose"
PREFIX = "errors/processing-failed/year=2026/"


@pytest.fixture
def s3() -> Iterator[MotoS3]:
    with MotoS3(StackConfig()) as moto:
        yield moto


def error_object(records: list[bytes]) -> bytes:
    """Firehose's error-record JSON lines for `records`."""
    lines = [
        json.dumps({"attemptsMade": 4, "arrivalTimestamp": 1, "errorCode": "Lambda.Failed",
                    "errorMessage": "ProcessingFailed", "attemptEndingTimestamp": 2,
                    "rawData": base64.b64encode(r).decode(), "lambdaArn": "arn:x"})
        for r in records
    ]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def put_failed_records(moto: MotoS3, count: int) -> list[bytes]:
    """`count` records over several objects, half gzip, a few of ~900 KiB."""
    rng = random.Random(9)
    records = [rng.randbytes(rng.choice([40, 300, 4000])) for _ in range(count)]
    for i in range(0, count, 50):
        records[i] = rng.randbytes(900 * 1024)
    for n, start in enumerate(range(0, count, 150)):
        body = error_object(records[start : start + 150])
        key = f"{PREFIX}podhose-1-2026-12-02-{n:03d}"
        if n % 2:
            body, key = gzip.compress(body), key + ".gz"
        moto.s3.put_object(Bucket=moto.config.bucket_name, Key=key, Body=body)
    return records


def redrive(moto: MotoS3, endpoint: FirehoseEndpoint, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(REPO)}  # fmt: skip
    cmd = [sys.executable, "-m", "podhose_redrive", f"s3://{moto.config.bucket_name}/{PREFIX}",
           "--delivery-stream", STREAM, "--s3-endpoint-url", moto.url,
           "--firehose-endpoint-url", endpoint.url, *extra]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def tags(moto: MotoS3) -> dict[str, Any]:
    bucket = moto.config.bucket_name
    keys = [o["Key"] for o in moto.s3.list_objects_v2(Bucket=bucket)["Contents"]]
    return {k: moto.s3.get_object_tagging(Bucket=bucket, Key=k)["TagSet"] for k in keys}


def test_failed_records_are_sent_exactly_once(s3: MotoS3, endpoint: FirehoseEndpoint) -> None:
    records = put_failed_records(s3, 1200)
    dry = redrive(s3, endpoint, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert endpoint.received() == []
    assert "would send 1200" in dry.stdout
    assert all(t == [] for t in tags(s3).values())  # a dry run tags nothing

    endpoint.fail_records(5, every=3)  # some entries fail and are resent
    endpoint.throttle(2)
    first = redrive(s3, endpoint)
    assert first.returncode == 0, first.stderr
    assert Counter(endpoint.received(STREAM)) == Counter(records)
    assert endpoint.stats.rejected_calls == 0  # within 500 records / 4 MiB / 1,000 KiB
    assert all(t == [{"Key": "podhose-redrive", "Value": "done"}] for t in tags(s3).values())
    assert "sent 1200" in first.stdout

    second = redrive(s3, endpoint)
    assert second.returncode == 0, second.stderr
    assert len(endpoint.received()) == 1200  # nothing twice
    assert "8 done before" in second.stdout


def test_an_unreadable_object_is_reported_and_left_in_place(
    s3: MotoS3, endpoint: FirehoseEndpoint
) -> None:
    records = put_failed_records(s3, 150)
    bad = f"{PREFIX}not-an-error-object"
    s3.s3.put_object(Bucket=s3.config.bucket_name, Key=bad, Body=b"\x1f\x8bnot gzip")
    result = redrive(s3, endpoint)
    assert result.returncode == 3
    assert bad in result.stderr and "unreadable" in result.stderr
    assert Counter(endpoint.received()) == Counter(records)
    assert tags(s3)[bad] == []


def test_records_firehose_keeps_refusing_leave_their_object_for_a_later_run(
    s3: MotoS3, endpoint: FirehoseEndpoint
) -> None:
    put_failed_records(s3, 20)
    endpoint.server_error()
    result = redrive(s3, endpoint)
    assert result.returncode == 1
    assert "still failing" in result.stderr
    assert all(t == [] for t in tags(s3).values())
    endpoint.clear_faults()
    again = redrive(s3, endpoint)
    assert again.returncode == 0
    assert len(endpoint.received()) == 20


def test_bad_lines_bombs_and_empty_records_are_reported_and_the_run_goes_on(
    s3: MotoS3, endpoint: FirehoseEndpoint
) -> None:
    bucket = s3.config.bucket_name
    good = [b"first", b"second"]
    deep = b'{"rawData": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    mixed = error_object(good[:1]) + deep + b"\n" + error_object(good[1:])
    s3.s3.put_object(Bucket=bucket, Key=f"{PREFIX}a-mixed", Body=mixed)
    packer = zlib.compressobj(9, wbits=31)  # 1 GiB of zeros: a gzip bomb of ~1 MB
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(1024)) + packer.flush()
    s3.s3.put_object(Bucket=bucket, Key=f"{PREFIX}b-bomb.gz", Body=bomb)
    s3.s3.put_object(Bucket=bucket, Key=f"{PREFIX}c-empty", Body=error_object([b"", b"third"]))
    result = redrive(s3, endpoint)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "a-mixed: line 2: RecursionError" in result.stderr
    assert "b-bomb.gz" in result.stderr and "over" in result.stderr
    assert "1 empty record(s) skipped" in result.stderr and "over 1024000" not in result.stderr
    assert Counter(endpoint.received()) == Counter([*good, b"third"])
    marks = tags(s3)
    assert marks[f"{PREFIX}a-mixed"] == [] and marks[f"{PREFIX}b-bomb.gz"] == []
    assert marks[f"{PREFIX}c-empty"] == [{"Key": "podhose-redrive", "Value": "done"}]


@pytest.mark.parametrize(
    "args", [["--endpoint-url", "notaurl"], ["--region", "not a region"], ["s3:/nope"]]
)
def test_bad_arguments_exit_2_in_one_line(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "podhose_redrive", "--delivery-stream", STREAM]
    if args[0].startswith("--"):
        cmd.append("s3://bucket/prefix/")
    result = subprocess.run([*cmd, *args], env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("podhose-redrive: error:")
