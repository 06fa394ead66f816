"""Every oracle case — Fluent Bit's corpus in ../shared and podhose's own — through the handler."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from testkit.events import firehose_event
from tests.oracle import OWN_CASES, SHARED_CASES, case_input, load_cases, output_matches
from transform_lambda.app import lambda_handler
from transform_lambda.decompress import decode_payload
from transform_lambda.path_choice import bulk_output, one_line_records_output
from transform_lambda.render import render_lines
from transform_lambda.settings import TransformSettings
from transform_lambda.transform import transform_record, transform_records
from transform_lambda.wire_decoder import split_header

CASES = load_cases(SHARED_CASES) + load_cases(OWN_CASES)
#: The cases whose lines are not all ordinary (docs/transform.md, "Bulk and per-line
#: paths"): the bulk path declines these, and only these.
LINE_BY_LINE_CASES = {
    "d049_docker_line_plain_text",  # not a Docker or CRI line
    "d051_log_is_number",  # `log` is not a string
    "d057_time_missing",  # not the fields dockerd writes
    "d085_blank_file_line",  # a blank line
    "d086_docker_leading_ws",  # not the JSON dockerd writes
    "d087_docker_trailing_garbage",
    "d088_docker_two_objects",
    "c023_bad_stream",  # a CRI line of another stream
    "c024_mixed_docker_then_cri",  # Docker and CRI lines in one record
    "p015_invalid_utf8_cri",  # invalid UTF-8
    "p016_invalid_utf8_in_json",
    "p017_multi_record_lines_docker_cri_text",  # Docker, CRI and text lines in one record
    "p019_docker_log_missing",  # no `log`
    "p020_crlf_lines",  # Docker lines ending in CR LF
    "p023_only_header",  # no line at all
    "p024_bom_like_text",  # text
}


def test_the_shared_corpus_is_read() -> None:
    ids = {case["id"] for case in load_cases(SHARED_CASES)}
    assert "d001_seed_app_json" in ids
    assert len(ids) >= 60


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case_through_the_handler(case: dict[str, Any], lambda_context: object) -> None:
    response = lambda_handler(firehose_event([case_input(case)]), lambda_context)
    [record] = response["records"]
    assert record["recordId"] == "record-00000"
    data = base64.b64decode(record["data"]) if record["data"] else b""
    expected_result = "Dropped" if case["accept"] == [[]] else "Ok"
    if [] in case["accept"] and record["result"] == "Dropped":
        expected_result = "Dropped"
    assert record["result"] == expected_result
    assert output_matches(data, case["accept"]), (case["id"], data[:500])


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bulk_and_line_by_line_paths_agree(case: dict[str, Any]) -> None:
    """The bulk path runs on every case of ordinary lines and emits exactly what the
    line-by-line path emits; the record's result is that output."""
    settings = TransformSettings()
    header, body = split_header(decode_payload(case_input(case)))
    in_bulk = bulk_output(body, settings)
    line_by_line = render_lines(body, settings, header)
    if case["id"] in LINE_BY_LINE_CASES:
        assert in_bulk is None, "the bulk path took a case it should decline"
    else:
        assert in_bulk is not None, "the bulk path declined"
        assert in_bulk == line_by_line
    result = transform_record(case_input(case), settings)
    assert (result.data, result.counts) == line_by_line


def _one_line(data: bytes) -> bool:
    return data.count(b"\n") == 1 and data.endswith(b"\n")


@pytest.mark.parametrize(
    ("fmt", "ordinary", "in_bulk"),
    [
        ("docker", True, True),
        ("cri", True, True),
        ("docker", False, False),
        ("cri", False, False),
        ("podhose", False, False),  # CRI and Docker lines in one batch
    ],
)
def test_one_line_records_in_bulk_match_record_by_record(
    fmt: str, ordinary: bool, in_bulk: bool, lambda_context
) -> None:
    """Many one-line records in one event take the bulk path together when every line is
    ordinary and of one runtime: the same bytes per record as record by record."""
    cases = [c for c in CASES if c["format"] == fmt and _one_line(case_input(c))]
    if ordinary:
        cases = [c for c in cases if c["id"] not in LINE_BY_LINE_CASES]
    datas = [case_input(c) for c in cases]
    datas += datas[:3]  # repeat a few so the batch is never a single record
    settings = TransformSettings()
    assert (one_line_records_output(datas, settings) is not None) is in_bulk
    expected = [transform_record(data, settings).data for data in datas]
    response = lambda_handler(firehose_event(datas), lambda_context)
    got = [base64.b64decode(r["data"]) if r["result"] == "Ok" else b"" for r in response["records"]]
    assert got == expected


def test_bulk_path_is_taken_for_plain_one_line_records() -> None:
    lines = [c for c in CASES if c["id"] in ("d001_seed_app_json", "d002_plain_text")]
    datas = [case_input(c) for c in lines] * 50
    assert one_line_records_output(datas, TransformSettings()) is not None
    results = transform_records(datas, TransformSettings()).results
    assert [r.data for r in results] == [
        transform_record(d, TransformSettings()).data for d in datas
    ]
    # The bulk path shares one zero LineCounts across the batch and carries totals once.
    assert results[0].counts.lines_in == len(datas)
    assert sum(r.counts.lines_out for r in results) == len(datas)
