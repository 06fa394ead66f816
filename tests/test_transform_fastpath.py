"""The bulk path stays exact and in bulk when a few lines hold long digit runs."""

from __future__ import annotations

import json

import pytest

from tests.forwarder_testlib import cri_line, docker_line
from transform_lambda import transform
from transform_lambda.settings import TransformSettings
from transform_lambda.transform import _general_output, split_lines, transform_record

SEED = '{"name": "fakenerd", "time_ms": 1577521193704}\n'
TRICKY = [
    '{"request_id": "a81234567890123456789012cafe", "duration": 0.25}\n',  # digits in a string
    '{"id": 123456789012345678901234567890}\n',  # beyond 64 bits: must stay exact
    '{"balance": -1234567890123456789012, "ok": true}\n',
    '{"nanos": 1577521193704659587123}\n',
]


@pytest.mark.parametrize("runtime", ["docker", "cri"])
def test_long_digit_lines_go_line_by_line_and_the_rest_in_bulk(
    runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [SEED] * 500
    for i, tricky in enumerate(TRICKY):
        texts[40 + i * 100] = tricky
    if runtime == "docker":
        body = b"".join(docker_line(t) for t in texts)
    else:
        body = b"".join(cri_line(t.rstrip("\n")) for t in texts)
    rendered = []
    real_render = transform._render
    monkeypatch.setattr(transform, "_render", lambda *a: rendered.append(1) or real_render(*a))
    result = transform_record(body, TransformSettings())
    assert len(rendered) == len(TRICKY)  # only those went line by line
    monkeypatch.setattr(transform, "_render", real_render)
    general, _ = _general_output(split_lines(body), TransformSettings(), None)
    assert result.data == general
    assert result.counts.lines_in == result.counts.lines_out == 500
    lines = result.data.splitlines()
    assert json.loads(lines[140]) == {"id": 123456789012345678901234567890}
    assert json.loads(lines[240]) == {"balance": -1234567890123456789012, "ok": True}
    assert lines[340] == b'{"nanos":1577521193704659587123}'


def test_a_long_digit_line_that_is_a_partial_piece_takes_the_general_path() -> None:
    body = (
        cri_line("first 123456789012345678901234 ", tag="P")
        + cri_line("second")
        + cri_line(SEED.rstrip("\n"))
    )
    result = transform_record(body, TransformSettings())
    assert result.data.splitlines() == [
        b'{"log":"first 123456789012345678901234 second"}',
        b'{"name":"fakenerd","time_ms":1577521193704}',
    ]


def test_an_entry_without_log_is_dropped_not_written_as_an_empty_object() -> None:
    body = docker_line(SEED) + b'{"stream":"stdout","time":"2024-05-01T10:00:00Z"}\n'
    result = transform_record(body, TransformSettings())
    assert result.data == b'{"name":"fakenerd","time_ms":1577521193704}\n'
    assert result.counts.lines_in == 2
    assert result.counts.lines_out == 1
    assert result.counts.without_kept_keys == 1


def test_decode_failures_are_counted_on_both_paths_of_a_mixed_record() -> None:
    body = docker_line('{"broken": 12345678901234567890123,\n') + docker_line('{"also": broken}\n')
    body += docker_line(SEED) * 10
    result = transform_record(body, TransformSettings())
    _, general = _general_output(split_lines(body), TransformSettings(), None)
    assert result.counts.decode_failures == general.decode_failures == 2
