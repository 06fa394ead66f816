"""The Lambda handler's contract: every recordId answered once, bad data never raises."""

from __future__ import annotations

import base64
import gzip
import json
import random

import pytest

from testkit.events import firehose_event
from tests.oracle import strict_json
from transform_lambda import transform
from transform_lambda.app import lambda_handler

SEED_LINE = (
    b'{"log":"{\\"name\\": \\"fakenerd\\", \\"time_ms\\": 1577622109635}\\n",'
    b'"stream":"stdout","time":"2019-12-28T08:19:53.704659587Z"}\n'
)


def emf_metrics(stdout: str) -> dict[str, float]:
    """Sum the EMF metric values printed by Powertools."""
    totals: dict[str, float] = {}
    for line in stdout.splitlines():
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for metric in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            values = blob[metric["Name"]]
            totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(
                values if isinstance(values, list) else [values]
            )
    return totals


def test_mixed_batch_answers_every_record_once_in_order(lambda_context, capsys) -> None:
    datas = [
        SEED_LINE,
        gzip.compress(SEED_LINE * 2),
        b"\x1f\x8b\x08\x00corrupt gzip",
        b"",
        b"\x1epodhose/1 src=a_b_c-" + b"0" * 64 + b".log\n",
        b"caf\xe9\n",
    ]
    event = firehose_event(datas)
    event["records"].append(dict(event["records"][0], recordId="bad-b64", data="@@not base64@@"))
    response = lambda_handler(event, lambda_context)
    ids = [record["recordId"] for record in response["records"]]
    assert ids == [record["recordId"] for record in event["records"]]
    results = [record["result"] for record in response["records"]]
    assert results == [
        "Ok",
        "Ok",
        "ProcessingFailed",
        "Dropped",
        "Dropped",
        "Ok",
        "ProcessingFailed",
    ]
    decoded = [
        base64.b64decode(r["data"]) if r["data"] and r["result"] == "Ok" else None
        for r in response["records"]
    ]
    assert decoded[0] == b'{"name":"fakenerd","time_ms":1577622109635}\n'
    assert decoded[1] == decoded[0] * 2
    assert decoded[5] == '{"log":"caf\ufffd"}\n'.encode()
    # ProcessingFailed carries the original data, untouched.
    assert response["records"][2]["data"] == event["records"][2]["data"]
    assert response["records"][6]["data"] == "@@not base64@@"
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["RecordsOk"] == 3
    assert metrics["RecordsDropped"] == 2
    assert metrics["RecordsProcessingFailed"] == 2
    assert metrics["LinesIn"] == metrics["LinesOut"] == 4
    assert metrics["InvalidUtf8Lines"] == 1


def test_decode_failures_are_counted_and_logged(lambda_context, capsys, caplog) -> None:
    line = b'{"log":"{\\"broken\\": \\n","stream":"stdout"}\n'
    response = lambda_handler(firehose_event([line]), lambda_context)
    assert base64.b64decode(response["records"][0]["data"]) == b'{"log":"{\\"broken\\": \\n"}\n'
    out = capsys.readouterr().out
    assert emf_metrics(out)["DecodeFailures"] == 1
    assert "lines kept as text or repaired" in caplog.messages


def test_a_bug_fails_only_the_record_that_meets_it(
    lambda_context, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = transform.transform_lines

    def buggy(lines: bytes, *args: object) -> object:
        if b"bug" in lines:
            raise RuntimeError("a bug")
        return real(lines, *args)

    monkeypatch.setattr(transform, "transform_lines", buggy)
    response = lambda_handler(firehose_event([SEED_LINE, b"bug\n", SEED_LINE]), lambda_context)
    assert [r["result"] for r in response["records"]] == ["Ok", "ProcessingFailed", "Ok"]
    assert base64.b64decode(response["records"][1]["data"]) == b"bug\n"
    assert "bulk transform failed; transforming record by record" in caplog.messages
    assert "unexpected error transforming a record" in caplog.messages


def random_blob(rng: random.Random) -> bytes:
    alphabet = b'{}[]":,\\ \t\r\nabcnulltrue0123456789.eE+-\x00\x1e\xff\xc3\xa9FPstdoutstderr'
    blob = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))
    kind = rng.randrange(4)
    if kind == 1:
        return gzip.compress(blob)
    if kind == 2:
        return gzip.compress(blob)[: rng.randrange(1, 20)]  # truncated gzip
    if kind == 3:
        return SEED_LINE[: rng.randrange(len(SEED_LINE))] + blob
    return blob


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_never_raise_and_every_line_is_strict_json(lambda_context, seed) -> None:
    rng = random.Random(seed)
    datas = [random_blob(rng) for _ in range(60)]
    response = lambda_handler(firehose_event(datas), lambda_context)
    assert len(response["records"]) == len(datas)
    for data, record in zip(datas, response["records"], strict=True):
        if record["result"] == "Ok":
            text = base64.b64decode(record["data"]).decode("utf-8")
            assert text.endswith("\n")
            for line in text.split("\n")[:-1]:
                assert isinstance(strict_json(line), dict)
        elif record["result"] == "ProcessingFailed":
            assert base64.b64decode(record["data"]) == data
        else:
            assert record["result"] == "Dropped"


@pytest.mark.parametrize("context", [None, object()], ids=["none", "bare-object"])
def test_handler_works_without_a_real_lambda_context(context: object) -> None:
    response = lambda_handler(firehose_event([SEED_LINE]), context)
    [record] = response["records"]
    assert record["result"] == "Ok"
    assert base64.b64decode(record["data"]) == b'{"name":"fakenerd","time_ms":1577622109635}\n'


def _outputs(event: dict, lambda_context) -> list[bytes]:
    response = lambda_handler(event, lambda_context)
    assert [r["result"] for r in response["records"]] == ["Ok"] * len(event["records"])
    return [base64.b64decode(r["data"]) for r in response["records"]]


def test_fargate_log_router_records_give_the_seed_output(lambda_context) -> None:
    """EKS on Fargate's log router (Fluent Bit's kinesis_firehose output): one JSON object per
    record, no newline, CRI fields and a kubernetes map. Same app lines, same S3 lines as the
    seed's Docker json-file records; the kubernetes map is dropped like every other key."""
    from events import generate

    seed = _outputs(generate.event(generate.EVENTS["docker_seed"]), lambda_context)
    fargate_event = generate.event(generate.EVENTS["fargate"])
    fargate = _outputs(fargate_event, lambda_context)
    assert fargate[:3] == seed
    assert fargate[0] == b'{"name":"fakenerd","time_ms":1577521193704}\n'
    assert fargate[3] == b'{"log":"plain text on stderr"}\n'
