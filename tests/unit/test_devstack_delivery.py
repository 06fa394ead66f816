"""The local Firehose delivery stand-in (devstack/delivery.py) keeps Firehose's contract.

These use fake handlers and a fake S3 client; the end-to-end test runs the real ones.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import re
import time
from typing import Any

import pytest

from devstack.delivery import MAX_RESPONSE_BYTES, FirehoseDelivery
from devstack.polling import wait_for
from devstack.stack_config import StackConfig

KEY = re.compile(
    r"^(?P<prefix>.*)podhose-1-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-[0-9a-f-]{36}(?P<gz>\.gz)?$"
)


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> None:  # noqa: N803
        assert Bucket == "podhose-logs-local"
        self.objects[Key] = Body

    def lines(self, startswith: str) -> list[bytes]:
        out: list[bytes] = []
        for key in sorted(self.objects):
            if key.startswith(startswith):
                body = self.objects[key]
                out += (gzip.decompress(body) if key.endswith(".gz") else body).splitlines()
        return out


def respond(result: str = "Ok", transform: Any = None, **extra: Any) -> Any:
    """A handler answering every record with ``result`` (data upper-cased for Ok)."""

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert context.invoked_function_arn.endswith(":function:podhose-transform")
        records = []
        for r in event["records"]:
            data = base64.b64decode(r["data"])
            out = transform(data) if transform else data.upper()
            records.append(
                {
                    "recordId": r["recordId"],
                    "result": result,
                    "data": base64.b64encode(out).decode(),
                }
                | extra
            )
        return {"records": records}

    return handler


def run(config: StackConfig, handler: Any, batches: list[list[bytes]], **kw: Any) -> Any:
    s3 = FakeS3()
    delivery = FirehoseDelivery(config, s3, handler, interval_s=kw.pop("interval_s", 60), **kw)
    delivery.start()
    try:
        for batch in batches:
            delivery.sink(config.stream_name, batch)
        assert delivery.drain(10)
    finally:
        delivery.stop()
    return s3, delivery


def test_event_shape_and_ok_objects() -> None:
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        seen.append(event)
        return respond()(event, context)

    s3, delivery = run(StackConfig(), handler, [[b"a\n", b"b\n"], [b"c\n"]])
    (event,) = seen
    assert event["deliveryStreamArn"] == (
        "arn:aws:firehose:us-east-1:123456789012:deliverystream/podhose"
    )
    assert event["region"] == "us-east-1"
    assert len({r["recordId"] for r in event["records"]}) == 3
    assert all(
        abs(r["approximateArrivalTimestamp"] - time.time() * 1000) < 60_000
        for r in event["records"]
    )
    (key,) = s3.objects
    match = KEY.match(key)
    assert match
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\d\d/", match["prefix"])
    assert s3.objects[key] == b"A\nB\nC\n"
    assert (delivery.stats.ok, delivery.stats.objects, delivery.stats.violations) == (3, 1, [])


def test_dropped_writes_nothing_and_failed_goes_to_error_prefix() -> None:
    def handler(event: dict[str, Any], context: Any) -> Any:
        r1, r2 = event["records"]
        return {
            "records": [
                {"recordId": r1["recordId"], "result": "Dropped", "data": ""},
                {"recordId": r2["recordId"], "result": "ProcessingFailed", "data": r2["data"]},
            ]
        }

    s3, delivery = run(StackConfig(), handler, [[b"drop me\n", b"\x1f\x8bbad"]])
    (key,) = s3.objects
    assert key.startswith("processing-failed/")
    (line,) = s3.lines("processing-failed/")
    error = json.loads(line)
    assert set(error) == {
        "attemptsMade",
        "arrivalTimestamp",
        "errorCode",
        "errorMessage",
        "attemptEndingTimestamp",
        "rawData",
        "lambdaArn",
    }
    assert error["errorCode"] == "Lambda.ProcessingFailed"
    assert base64.b64decode(error["rawData"]) == b"\x1f\x8bbad"
    assert (delivery.stats.dropped, delivery.stats.failed, delivery.stats.violations) == (1, 1, [])


def test_template_prefixes_and_gzip_objects() -> None:
    config = StackConfig.from_template()
    s3, _ = run(config, respond(), [[b"x\n"]])
    (key,) = s3.objects
    match = KEY.match(key)
    assert match
    assert match["gz"] == ".gz"
    assert re.fullmatch(r"logs/year=\d{4}/month=\d\d/day=\d\d/hour=\d\d/", match["prefix"])
    assert s3.lines("logs/") == [b"X"]


def test_dynamic_partitioning_uses_partition_keys() -> None:
    config = StackConfig.from_template(parameters={"DynamicPartitioning": "true"})
    assert config.dynamic_partitioning

    def handler(event: dict[str, Any], context: Any) -> Any:
        out = respond()(event, context)
        for n, record in enumerate(out["records"]):
            keys = {"namespace": f"ns{n}", "container": "app"}
            record["metadata"] = {"partitionKeys": keys}
        return out

    s3, _ = run(config, handler, [[b"a\n", b"b\n"]])
    prefixes = sorted(KEY.match(k)["prefix"].split("/year=")[0] for k in s3.objects)  # type: ignore[index]
    assert prefixes == ["logs/namespace=ns0/container=app", "logs/namespace=ns1/container=app"]


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda rs: rs[:-1], "Lambda.MissingRecordId"),
        (lambda rs: [*rs, rs[0]], "Lambda.DuplicatedRecordId"),
        (lambda rs: [{**rs[0], "recordId": "nope"}, *rs[1:]], "Lambda.MissingRecordId"),
        (lambda rs: [{**rs[0], "result": "Fine"}, *rs[1:]], "Lambda.JsonProcessingException"),
        (lambda rs: [{**rs[0], "data": "%%%"}, *rs[1:]], "Lambda.JsonProcessingException"),
    ],
)
def test_contract_violations_are_loud_and_lose_nothing(mangle: Any, code: str) -> None:
    def handler(event: dict[str, Any], context: Any) -> Any:
        out = respond()(event, context)
        return {"records": mangle(out["records"])}

    s3, delivery = run(StackConfig(), handler, [[b"a\n", b"b\n"]])
    assert len(delivery.stats.violations) == 1
    assert delivery.stats.violations[0].startswith(code)
    errors = [json.loads(line) for line in s3.lines("processing-failed/")]
    assert sorted(base64.b64decode(e["rawData"]) for e in errors) == [b"a\n", b"b\n"]
    assert {e["errorCode"] for e in errors} == {code}
    assert not s3.lines("20")


def test_response_over_6mb_is_a_violation() -> None:
    big = b"x" * (MAX_RESPONSE_BYTES // 4 * 3 + 10)
    s3, delivery = run(StackConfig(), respond(transform=lambda _d: big), [[b"a\n"]])
    assert delivery.stats.violations
    assert "6000000" in delivery.stats.violations[0]
    assert len(s3.lines("processing-failed/")) == 1


def test_failing_invocation_is_retried_then_recorded() -> None:
    calls = 0

    def handler(event: dict[str, Any], context: Any) -> Any:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    config = dataclasses.replace(StackConfig(), lambda_retries=2)
    s3, delivery = run(config, handler, [[b"a\n"]])
    assert calls == 3
    assert delivery.stats.violations
    (line,) = s3.lines("processing-failed/")
    error = json.loads(line)
    assert (error["errorCode"], error["attemptsMade"]) == ("Lambda.FunctionError", 3)
    assert "boom" in error["errorMessage"]


def test_buffer_size_and_interval() -> None:
    sizes: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        sizes.append(len(event["records"]))
        return respond()(event, context)

    # size: 60-byte records in a 100-byte buffer travel one per invocation
    run(StackConfig(), handler, [[b"x" * 59 + b"\n"] * 3], buffer_bytes=100)
    assert sizes == [1, 1, 1]
    # interval: a record waits for the interval, not for drain()
    sizes.clear()
    s3 = FakeS3()
    delivery = FirehoseDelivery(StackConfig(), s3, handler, buffer_bytes=10**6, interval_s=0.3)
    delivery.start()
    try:
        delivery.sink("podhose", [b"a\n"])
        time.sleep(0.1)
        assert not s3.objects
        assert wait_for(lambda: bool(s3.objects), 5, 0.02)
    finally:
        delivery.stop()


def test_template_defaults_are_read() -> None:
    config = StackConfig.from_template()
    assert config.stream_name == "podhose"
    assert config.bucket_name == "podhose-logs-local"  # the template lets CloudFormation name it
    assert config.template_processor_hints is not None
    assert config.lambda_env.get("PODHOSE_PARSE_ENVELOPE") == "true"
    with pytest.raises(ValueError, match="NoSuchParameter"):
        StackConfig.from_template(parameters={"NoSuchParameter": "1"})
