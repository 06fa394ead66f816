"""Multi-line joining (PODHOSE_MULTILINE): Fluent Bit's own cases, and podhose's edges.

tests/cases/multiline_fluentbit.json holds the events Fluent Bit's multiline engine produces
for its java, python, go and custom-parser test inputs (from Fluent Bit's test suite); each
is replayed here as Docker json-file lines and as CRI lines through the transform.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from transform_lambda.settings import SettingsError, TransformSettings
from transform_lambda.transform import transform_record

CASES = json.loads((Path(__file__).parents[1] / "cases" / "multiline_fluentbit.json").read_text())
T = "2026-12-02T10:00:00.000000001Z"


def docker_record(lines: list[str]) -> bytes:
    return b"".join(
        json.dumps({"log": text, "stream": "stderr", "time": T}).encode() + b"\n" for text in lines
    )


def cri_record(lines: list[str]) -> bytes:
    return b"".join(f"{T} stderr F {text.rstrip(chr(10))}\n".encode() for text in lines)


def events(record: bytes, **settings: Any) -> list[Any]:
    result = transform_record(record, TransformSettings(**settings))
    return [json.loads(line) for line in result.data.splitlines()]


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["name"] for c in CASES["cases"]])
@pytest.mark.parametrize("runtime", ["docker", "cri"])
def test_fluent_bit_cases_join_as_fluent_bit_does(case: dict[str, Any], runtime: str) -> None:
    settings = {"multiline": case["mode"], "multiline_start": case.get("start", "")}
    if runtime == "docker":
        got = events(docker_record(case["lines"]), **settings)
        expected = case["events"]
    else:
        got = events(cri_record(case["lines"]), **settings)
        expected = [event.removesuffix("\n") for event in case["events"]]
    assert got == [{"log": event} for event in expected]


JAVA_TRACE = [
    "java.lang.IllegalStateException: boom\n",
    "\tat a.B.c(B.java:1)\n",
    "\tat a.B.main(B.java:2)\n",
]


def test_back_to_back_traces_are_two_events() -> None:
    # Fluent Bit would emit the second trace line by line; podhose tries it as a new start.
    got = events(docker_record(JAVA_TRACE + JAVA_TRACE), multiline="java")
    assert got == [{"log": "".join(JAVA_TRACE)}] * 2


def test_json_lines_around_a_trace_are_still_decoded_and_lifted() -> None:
    lines = ['{"level":"info","n":1}\n', *JAVA_TRACE, '{"level":"info","n":2}\n']
    got = events(docker_record(lines), multiline="java")
    assert got == [
        {"level": "info", "n": 1},
        {"log": "".join(JAVA_TRACE)},
        {"level": "info", "n": 2},
    ]


def test_an_event_reaching_max_bytes_is_continued_as_a_new_event() -> None:
    frames = [f"\tat a.B.m{i}(B.java:{i})\n" for i in range(100)]
    lines = ["java.lang.Error: deep\n", *frames]
    got = [
        e["log"] for e in events(docker_record(lines), multiline="java", multiline_max_bytes=600)
    ]
    assert "".join(got) == "".join(lines)  # nothing lost, nothing repeated
    assert all(len(event.encode()) <= 600 for event in got) and len(got) > 1
    assert got[0].startswith("java.lang.Error: deep\n")


def test_regex_mode_joins_lines_up_to_the_next_start() -> None:
    lines = [
        "2026-12-02 10:00:00 ERROR failed\n",
        "  detail 1\n",
        "detail 2\n",
        "2026-12-02 10:00:01 INFO ok\n",
    ]
    got = events(docker_record(lines), multiline="regex", multiline_start=r"^\d{4}-\d\d-\d\d ")
    assert got == [{"log": "".join(lines[:3])}, {"log": lines[3]}]


def test_a_group_is_closed_at_the_end_of_the_record() -> None:
    got = events(docker_record(JAVA_TRACE[:2]), multiline="java")
    assert got == [{"log": "".join(JAVA_TRACE[:2])}]


def test_off_by_default_each_line_is_its_own_event() -> None:
    assert len(events(docker_record(JAVA_TRACE))) == len(JAVA_TRACE)
    assert TransformSettings().is_seed_pipeline
    assert not TransformSettings(multiline="java").is_seed_pipeline


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PODHOSE_MULTILINE": "ruby"}, "unknown mode"),
        ({"PODHOSE_MULTILINE": "regex"}, "needs PODHOSE_MULTILINE_START"),
        ({"PODHOSE_MULTILINE": "regex", "PODHOSE_MULTILINE_START": "("}, "PODHOSE_MULTILINE_START"),
        ({"PODHOSE_MULTILINE_MAX_BYTES": "0"}, "must be >= 1"),
    ],
)
def test_bad_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        TransformSettings.from_env(env)
