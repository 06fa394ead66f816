"""Every oracle case — Fluent Bit's corpus in ../shared and podhose's own — through the handler."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import firehose_event
from tests.oracle import OWN_CASES, SHARED_CASES, case_input, load_cases, output_matches
from transform_lambda.app import lambda_handler
from transform_lambda.settings import TransformSettings
from transform_lambda.transform import (
    _general_output,
    split_lines,
    transform_record,
    transform_records,
)

CASES = load_cases(SHARED_CASES) + load_cases(OWN_CASES)


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
    """The bulk fast path must emit exactly what the general, line-by-line path emits."""
    settings = TransformSettings()
    result = transform_record(case_input(case), settings)
    general, counts = _general_output(split_lines(result.body), settings, None)
    assert result.data == general
    assert result.counts.lines_in == counts.lines_in


def _one_line(data: bytes) -> bool:
    return data.count(b"\n") == 1 and data.endswith(b"\n")


@pytest.mark.parametrize("fmt", ["docker", "cri", "podhose"])
def test_one_line_records_in_bulk_match_record_by_record(fmt: str, lambda_context) -> None:
    """Many one-line records in one event take the bulk path: same bytes per record."""
    datas = [case_input(c) for c in CASES if c["format"] == fmt and _one_line(case_input(c))]
    datas += datas[:3]  # repeat a few so the batch is never a single record
    settings = TransformSettings()
    expected = [transform_record(data, settings).data for data in datas]
    response = lambda_handler(firehose_event(datas), lambda_context)
    got = [base64.b64decode(r["data"]) if r["result"] == "Ok" else b"" for r in response["records"]]
    assert got == expected


def test_bulk_path_is_taken_for_plain_one_line_records() -> None:
    lines = [c for c in CASES if c["id"] in ("d001_seed_app_json", "d002_plain_text")]
    datas = [case_input(c) for c in lines] * 50
    results = transform_records(datas, TransformSettings())
    assert [r.data for r in results] == [
        transform_record(d, TransformSettings()).data for d in datas
    ]
    # The bulk path shares one zero LineCounts across the batch and carries totals once.
    assert results[0].counts.lines_in == len(datas)
    assert sum(r.counts.lines_out for r in results) == len(datas)
