"""The wire contract is defined once (podhose_wire) and both sides read it the same way: the
kubelet file name, the header keys, Firehose's limits, the PutRecordBatch call and its retries."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from devstack.firehose_endpoint import FirehoseEndpoint
from forwarder.pod_metadata import pod_of
from forwarder.routing import namespace_of
from podhose_redrive.redriver import Redriver
from podhose_wire import firehose_limits
from podhose_wire.firehose_limits import MAX_CALL_BYTES, MAX_RECORD_BYTES, MAX_RECORDS_PER_CALL
from podhose_wire.header import K8S, source_header, with_field
from podhose_wire.kubelet_name import KubeletName
from podhose_wire.put_batch import MALFORMED, put_record_batch, put_with_retries
from podhose_wire.retry_policy import Kind
from transform_lambda import reingest
from transform_lambda.wire_decoder import split_header

ID = "0123456789abcdef" * 4
NAMES = {
    # real kubelet names: the fields as kubelet wrote them
    f"web-7d9f-x2x9q_default_app-{ID}.log": ("web-7d9f-x2x9q", "default", "app"),
    f"kube-apiserver-ip-10-0-0-1.ec2.internal_kube-system_kube-apiserver-{ID}.log": (
        "kube-apiserver-ip-10-0-0-1.ec2.internal", "kube-system", "kube-apiserver"),
    f"etcd-node1_kube-system_etcd-{ID}.log": ("etcd-node1", "kube-system", "etcd"),
    f"web.v2-0_prod_side-car-{ID}.log": ("web.v2-0", "prod", "side-car"),
    f"0_a_b-{ID}.log": ("0", "a", "b"),
    # not what kubelet writes: no fields on either side
    f"Web-1_default_app-{ID}.log": None,  # upper case
    f"web-1_Default_app-{ID}.log": None,
    f"web-1_default_App-{ID}.log": None,
    f"web-1_prod.eu_app-{ID}.log": None,  # a namespace is a label: no dot
    f"web-1_default_side_car-{ID}.log": None,  # a container name holds no underscore
    f"web-1_default_side.car-{ID}.log": None,
    f"-web_default_app-{ID}.log": None,  # a name starts and ends alphanumeric
    f"web-_default_app-{ID}.log": None,
    f"web..1_default_app-{ID}.log": None,
    f"web@1_default_app-{ID}.log": None,
    f"web-1_default_app-{ID[:-1]}.log": None,  # the id is 64 hex digits
    f"web-1_default_app-{ID.upper()}.log": None,
    f"web-1_default_app-{ID}.log.1": None,
    "not-a-kubelet-name.log": None,
}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_the_forwarder_and_the_transform_read_a_file_name_the_same_way(name: str) -> None:
    parsed = KubeletName.parse(name)
    expected = NAMES[name]
    assert (parsed and (parsed.pod, parsed.namespace, parsed.container)) == expected
    # the forwarder: the pod's metadata and the route
    assert pod_of(name) == ((parsed.namespace, parsed.pod) if parsed else None)
    assert namespace_of(f"/var/log/containers/{name}") == (parsed.namespace if parsed else None)
    # the transform: the kubernetes object and the partition keys of a record from that file
    header, _ = split_header(source_header(name))
    assert header is not None
    assert header.source == parsed
    assert header.kubernetes() == (parsed.as_metadata() if parsed else None)


def test_the_metadata_field_the_forwarder_adds_is_the_one_the_transform_reads() -> None:
    metadata = {"pod_id": "u-1", "host": "node-1", "labels": {"app": "web"}}
    field = base64.urlsafe_b64encode(json.dumps(metadata).encode()).rstrip(b"=")
    head = with_field(source_header(f"web-1_default_app-{ID}.log"), K8S, field)
    header, body = split_header(head + b"line\n")
    assert header is not None and body == b"line\n"
    assert header.pod_metadata == metadata
    assert header.partition_value("label:app") == "web"


def test_the_endpoint_enforces_the_shared_limits() -> None:
    with FirehoseEndpoint() as endpoint:
        client = firehose_client(endpoint)
        for datas in (
            [b"x"] * MAX_RECORDS_PER_CALL,
            [b"x" * MAX_RECORD_BYTES] * (MAX_CALL_BYTES // MAX_RECORD_BYTES),
        ):
            assert put_record_batch(client, "s", datas).failed(datas) == []
        for datas in (
            [b"x"] * (MAX_RECORDS_PER_CALL + 1),
            [b"x" * (MAX_RECORD_BYTES + 1)],
            [b"x" * MAX_RECORD_BYTES] * (MAX_CALL_BYTES // MAX_RECORD_BYTES + 1),
        ):
            error = put_record_batch(client, "s", datas).error
            assert error and (error.code, error.kind) == ("InvalidArgumentException", Kind.INVALID)


def firehose_client(endpoint: FirehoseEndpoint) -> Any:
    """A boto3 client of the local endpoint, without botocore's retries."""
    return boto3.client("firehose", region_name="us-east-1", endpoint_url=endpoint.url,
                        aws_access_key_id="t", aws_secret_access_key="t",
                        config=Config(retries={"total_max_attempts": 1}))  # fmt: skip


class Recorder:
    """A Firehose client that accepts everything and keeps each call's records; `answers`
    are given first (an exception is raised)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[list[bytes]] = []

    def put_record_batch(self, DeliveryStreamName: str, Records: list[dict]) -> Any:  # noqa: N803
        datas = [r["Data"] for r in Records]
        self.calls.append(datas)
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer(datas) if callable(answer) else answer
        return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "x"} for _ in datas]}


def within_limits(calls: list[list[bytes]]) -> bool:
    return all(
        len(call) <= MAX_RECORDS_PER_CALL
        and sum(firehose_limits.call_cost(len(d)) for d in call) <= MAX_CALL_BYTES
        for call in calls
    )


def test_reingest_and_redrive_group_their_calls_within_the_shared_limits() -> None:
    records = [b"x"] * (MAX_RECORDS_PER_CALL + 1) + [b"y" * 900_000] * 5
    client = Recorder()
    reingest.put_records(client, "s", records)
    assert [len(c) for c in client.calls] == [500, 4, 2] and within_limits(client.calls)

    lines = b"".join(
        json.dumps({"rawData": base64.b64encode(r).decode()}).encode() + b"\n" for r in records
    )
    s3 = FakeS3({"errors/1": lines})
    redrive = Recorder()
    summary = Redriver(s3, redrive, "s", dry_run=False).run("b", "errors/")
    assert redrive.calls == client.calls
    assert (summary.sent, summary.unsent, s3.tagged) == (len(records), 0, ["errors/1"])


class FakeS3:
    """Enough of S3 for Redriver: objects to list, read and tag."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.tagged: list[str] = []

    def get_paginator(self, _: str) -> Any:
        contents = [{"Key": key} for key in self.objects]
        return type("P", (), {"paginate": lambda _self, **kw: [{"Contents": contents}]})()

    def get_object_tagging(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        return {"TagSet": []}

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        body = self.objects[Key]
        return {"ContentLength": len(body), "Body": io.BytesIO(body)}

    def put_object_tagging(self, Bucket: str, Key: str, Tagging: dict) -> None:  # noqa: N803
        self.tagged.append(Key)


def half_failed(datas: list[bytes]) -> dict:
    results = [{"ErrorCode": "ServiceUnavailableException"} if i % 2 else {"RecordId": "x"}
               for i in range(len(datas))]  # fmt: skip
    return {"FailedPutCount": len(datas) // 2, "RequestResponses": results}


def test_one_call_is_classified() -> None:
    throttled = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "slow"},
         "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutRecordBatch")  # fmt: skip
    missing = ClientError(
        {"Error": {"Code": "ResourceNotFoundException", "Message": "no"},
         "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutRecordBatch")  # fmt: skip
    datas = [b"a", b"b", b"c"]
    error = put_record_batch(Recorder(throttled), "s", datas).error
    assert error and (error.code, error.status, error.kind) == (
        "ThrottlingException",
        400,
        Kind.RETRY,
    )
    error = put_record_batch(Recorder(missing), "s", datas).error
    assert error and error.kind is Kind.PERMANENT and not error.unexpected
    error = put_record_batch(Recorder(EndpointConnectionError(endpoint_url="x")), "s", datas).error
    assert error and error.kind is Kind.RETRY and not error.unexpected and not error.answered
    error = put_record_batch(Recorder(ConnectionResetError()), "s", datas).error
    assert error and error.code == "ConnectionResetError" and not error.unexpected
    error = put_record_batch(Recorder(KeyError("x")), "s", datas).error
    assert error and error.unexpected and error.kind is Kind.RETRY
    for short in ({"RequestResponses": [{}]}, {"FailedPutCount": 0}, None):
        answer = put_record_batch(Recorder(short), "s", datas)
        assert answer.error and answer.error.code == MALFORMED and answer.error.answered
        assert answer.failed(datas) == datas and answer.accepted(datas) == []
    answer = put_record_batch(Recorder(half_failed), "s", datas)
    assert answer.error is None
    assert (answer.accepted(datas), answer.failed(datas)) == ([b"a", b"c"], [b"b"])


def test_the_retry_loop_resends_only_failed_records_and_gives_up() -> None:
    client = Recorder(half_failed, {"RequestResponses": []}, OSError("reset"))
    seen: list[tuple[int, int]] = []
    waits: list[float] = []
    left = put_with_retries(client, "s", [b"a", b"b", b"c", b"d"], attempts=5,
                            on_answer=lambda n, sent, _: seen.append((n, len(sent))),
                            sleep=waits.append)  # fmt: skip
    assert left == []
    assert client.calls == [[b"a", b"b", b"c", b"d"], [b"b", b"d"], [b"b", b"d"], [b"b", b"d"]]
    assert seen == [(0, 4), (1, 2), (2, 2), (3, 2)] and len(waits) == 3
    stuck = Recorder(*[OSError("down")] * 3)
    assert put_with_retries(stuck, "s", [b"a"], attempts=3, sleep=waits.append) == [b"a"]
    assert len(stuck.calls) == 3


def test_reingest_leaves_failed_calls_to_its_clients_retries() -> None:
    """The Lambda's client retries a failed call (botocore); reingest's loop resends only
    records a 200 answer failed, and a call that failed as a whole ends it at once, its
    error named."""
    denied = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "no"},
         "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutRecordBatch")  # fmt: skip
    client = Recorder(denied)
    with pytest.raises(reingest.ReingestError, match="AccessDeniedException"):
        reingest.put_records(client, "podhose", [b"x", b"y"])
    assert len(client.calls) == 1
    waits: list[float] = []
    client = Recorder(half_failed, OSError("reset"))
    left = put_with_retries(client, "s", [b"a", b"b"], attempts=5, sleep=waits.append,
                            retry_failed_calls=False)  # fmt: skip
    assert left == [b"b"] and client.calls == [[b"a", b"b"], [b"b"]] and len(waits) == 1


def test_the_devstack_gives_each_stack_a_fresh_lambda_client() -> None:
    """A second local stack in one process must not re-ingest to the first one's endpoint."""
    from devstack.pipeline import refresh_transform_module
    from transform_lambda import app

    app.firehose_client("us-east-1")
    assert app.firehose_client.cache_info().currsize == 1
    undo = refresh_transform_module()
    assert app.firehose_client.cache_info().currsize == 0
    app.firehose_client("us-east-1")
    undo()
    assert app.firehose_client.cache_info().currsize == 0


def test_reingest_raises_after_its_attempts_through_the_endpoint() -> None:
    with FirehoseEndpoint() as endpoint:
        endpoint.fail_records(every=1)
        client = firehose_client(endpoint)
        with pytest.raises(reingest.ReingestError, match="1 record"):
            reingest.put_records(client, "podhose", [b"x"])
        assert endpoint.stats.records == 0


def test_the_contract_imports_the_standard_library_only() -> None:
    code = (
        "import sys, pkgutil, importlib, podhose_wire\n"
        "for m in pkgutil.iter_modules(podhose_wire.__path__):\n"
        "    importlib.import_module('podhose_wire.' + m.name)\n"
        "import transform_lambda.transform, transform_lambda.reingest\n"
        "third = {n.split('.')[0] for n in sys.modules} - set(sys.stdlib_module_names)\n"
        "print(sorted(third))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    third = set(eval(out.stdout))
    assert not third & {"boto3", "botocore", "s3transfer", "urllib3"}, third
