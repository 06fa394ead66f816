"""The 6 MB response limit: highly compressible records at the largest processor buffer.

Re-ingesting goes over real HTTP with real boto3 to podhose's local Firehose endpoint
(devstack/firehose_endpoint.py) on 127.0.0.1; nothing in boto3 is patched.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator

import orjson
import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from testkit.events import STREAM_ARN, firehose_event
from transform_lambda import app
from transform_lambda.settings import TransformSettings
from transform_lambda.wire_decoder import split_header

LAMBDA_RESPONSE_LIMIT = 6_000_000
PROCESSOR_BUFFER_MAX = 3 * 1024 * 1024  # Firehose's largest Lambda processor buffer
SOURCE = "fakenerd-7d4b9c8f6-x2x9q_default_app-" + "ab" * 32 + ".log"


def seed_line(ms: int) -> bytes:
    log = json.dumps({"name": "fakenerd", "time_ms": ms}) + "\n"
    entry = {"log": log, "stream": "stdout", "time": "2019-12-28T08:19:53.704659587Z"}
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def compressible_records(budget: int) -> tuple[list[bytes], list[bytes]]:
    """Gzip records of ~1 MiB of lines each, until their compressed sizes fill ``budget``."""
    records, expected, ms = [], [], 1577521193704
    header = f"\x1epodhose/1 src={SOURCE}\n".encode()
    while True:
        lines = [seed_line(ms + i) for i in range(8000)]
        record = gzip.compress(header + b"".join(lines), compresslevel=9)
        if sum(map(len, records)) + len(record) > budget:
            return records, expected
        records.append(record)
        expected += [b'{"name":"fakenerd","time_ms":%d}\n' % (ms + i) for i in range(8000)]
        ms += 8000


@pytest.fixture
def stream_endpoint(
    endpoint: FirehoseEndpoint, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FirehoseEndpoint]:
    """The local endpoint, as the Lambda's boto3 client will find it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_FIREHOSE", endpoint.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    app.firehose_client.cache_clear()
    yield endpoint
    app.firehose_client.cache_clear()


def buffered(records: list[bytes], limit: int) -> Iterator[list[bytes]]:
    """Group records as Firehose's processor buffer does: up to ``limit`` input bytes."""
    batch: list[bytes] = []
    for record in records:
        if batch and sum(map(len, batch)) + len(record) > limit:
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


def ok_lines(response: dict) -> list[bytes]:
    return [
        line
        for record in response["records"]
        if record["result"] == "Ok"
        for line in base64.b64decode(record["data"]).splitlines(keepends=True)
    ]


def test_largest_buffer_of_compressible_records_fits_and_loses_nothing(
    stream_endpoint: FirehoseEndpoint, lambda_context: object
) -> None:
    records, expected = compressible_records(PROCESSOR_BUFFER_MAX)
    raw_output = sum(map(len, expected))
    assert raw_output * 4 / 3 > 4 * LAMBDA_RESPONSE_LIMIT  # far too big for one response

    response = app.lambda_handler(firehose_event(records), lambda_context)
    assert len(orjson.dumps(response)) < LAMBDA_RESPONSE_LIMIT
    assert [r["recordId"] for r in response["records"]] == [
        f"record-{i:05d}" for i in range(len(records))
    ]
    results = {r["result"] for r in response["records"]}
    assert results == {"Ok", "Dropped"}
    delivered = ok_lines(response)

    chunks = stream_endpoint.received("podhose")
    assert chunks
    for chunk in chunks:
        assert len(chunk) <= 1_000 * 1024
        header, body = split_header(chunk)
        assert header is not None
        assert header.attempt == 1
        assert header.source_file == SOURCE
        assert len(body) <= 256 * 1024
    # Firehose buffers the re-ingested chunks into later invocations by input size: they
    # all fit, nothing goes around again.
    for batch in buffered(chunks, PROCESSOR_BUFFER_MAX):
        again = app.lambda_handler(firehose_event(batch), lambda_context)
        assert {r["result"] for r in again["records"]} == {"Ok"}
        delivered += ok_lines(again)
    assert len(stream_endpoint.received("podhose")) == len(chunks)
    assert sorted(delivered) == sorted(expected)


def test_a_record_that_went_around_too_often_fails_with_its_data(
    stream_endpoint: FirehoseEndpoint,
) -> None:
    settings = TransformSettings(max_reingest_attempts=2)
    tired = gzip.compress(b"\x1epodhose/1 n=2\n" + seed_line(1) * 5000)
    fresh = seed_line(2) * 10
    event = app.KinesisFirehoseEvent(firehose_event([tired, fresh]))
    response = app.process_event(event, settings, budget=50_000).asdict()
    failed, ok = response["records"]
    assert failed["result"] == "ProcessingFailed"
    assert base64.b64decode(failed["data"]) == tired
    assert ok["result"] == "Ok"
    assert stream_endpoint.received() == []


def test_reingest_outage_fails_records_with_their_data(stream_endpoint: FirehoseEndpoint) -> None:
    stream_endpoint.throttle()
    big = gzip.compress(seed_line(1) * 5000)
    event = app.KinesisFirehoseEvent(firehose_event([big, seed_line(2)]))
    response = app.process_event(event, TransformSettings(), budget=50_000).asdict()
    results = [r["result"] for r in response["records"]]
    assert results == ["ProcessingFailed", "Ok"]
    assert base64.b64decode(response["records"][0]["data"]) == big


def test_reingest_outage_with_no_room_raises_for_a_firehose_retry(
    stream_endpoint: FirehoseEndpoint,
) -> None:
    stream_endpoint.throttle()
    records = [gzip.compress(seed_line(i) * 3000) for i in range(3)]
    event = app.KinesisFirehoseEvent(firehose_event(records))
    original_bytes = sum(len(r["data"]) for r in event["records"])
    with pytest.raises(app.ResponseTooLargeError):
        app.process_event(event, TransformSettings(), budget=original_bytes // 2)


def test_the_stream_is_the_one_the_event_names() -> None:
    assert app.reingest.stream_name_from_arn(STREAM_ARN) == "podhose"


def firehose_record_id(i: int) -> str:
    """A record id as long as Firehose's (56 digits)."""
    return f"{49546986683135544286507457936321625675700192471156785154 + i}"


@pytest.mark.parametrize("with_header", [False, True])
def test_partition_keys_count_against_the_6_mb_response(
    with_header: bool, stream_endpoint: FirehoseEndpoint
) -> None:
    """DynamicPartitioning on, one short line per record, a full 3 MB processor buffer,
    Firehose-length record ids: each record's partitionKeys metadata (up to ~240 bytes with
    63-character names) counts against the response limit."""
    settings = TransformSettings(partition_keys=("namespace", "container"))
    name = "n" * 63
    header = f"\x1epodhose/1 src=p_{name}_{'c' * 63}-{'ab' * 32}.log\n".encode()
    records, expected, request_bytes = [], [], 0
    # Firehose invokes with up to 3 MB of data, and within Lambda's 6 MB request limit.
    while sum(map(len, records)) < PROCESSOR_BUFFER_MAX - 400:
        text = f"GET /health {len(records)}"
        line = f"2024-05-01T10:00:00Z stdout F {text}\n".encode()
        data = (header if with_header else b"") + line
        request_bytes += len(firehose_record_id(0)) + len(base64.b64encode(data)) + 80
        if request_bytes > LAMBDA_RESPONSE_LIMIT:
            break
        records.append(data)
        expected.append(orjson.dumps({"log": text}) + b"\n")
    raw = firehose_event(records)
    for i, record in enumerate(raw["records"]):
        record["recordId"] = firehose_record_id(i)
    assert len(json.dumps(raw)) <= LAMBDA_RESPONSE_LIMIT
    response = app.process_event(app.KinesisFirehoseEvent(raw), settings).asdict()
    # The Lambda runtime writes the response with json.dumps' default separators.
    assert len(json.dumps(response)) < LAMBDA_RESPONSE_LIMIT
    assert [r["recordId"] for r in response["records"]] == [
        firehose_record_id(i) for i in range(len(records))
    ]
    ok = [r for r in response["records"] if r["result"] == "Ok"]
    keys = ok[0]["metadata"]["partitionKeys"]
    assert keys == ({"namespace": name, "container": "c" * 63} if with_header else
                    {"namespace": "unknown", "container": "unknown"})  # fmt: skip
    delivered = ok_lines(response)
    for batch in buffered(stream_endpoint.received("podhose"), PROCESSOR_BUFFER_MAX):
        again = app.process_event(app.KinesisFirehoseEvent(firehose_event(batch)), settings)
        assert {r.result for r in again.records} == {"Ok"}
        delivered += ok_lines(again.asdict())
    assert sorted(delivered) == sorted(expected)
