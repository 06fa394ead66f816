"""The bulk path stays exact, and in bulk, on integers beyond 64 bits and long digit runs."""

from __future__ import annotations

import json
import random

import pytest

from forwarder.wire_encoder import RecordEncoder
from testkit.lines import cri_line, docker_line
from transform_lambda import bulk
from transform_lambda.path_choice import bulk_output
from transform_lambda.render import render_lines
from transform_lambda.settings import TransformSettings
from transform_lambda.transform import transform_record

SEED = '{"name": "fakenerd", "time_ms": 1577521193704}\n'
TRICKY = [
    '{"request_id": "a81234567890123456789012cafe", "duration": 0.25}\n',  # digits in a string
    '{"id": 123456789012345678901234567890}\n',  # beyond 64 bits: must stay exact
    '{"balance": -1234567890123456789012, "ok": true}\n',
    '{"nanos": 1577521193704659587123}\n',
]


@pytest.mark.parametrize("runtime", ["docker", "cri"])
def test_long_digit_lines_stay_in_bulk_and_exact(runtime: str) -> None:
    texts = [SEED] * 500
    for i, tricky in enumerate(TRICKY):
        texts[40 + i * 100] = tricky
    if runtime == "docker":
        body = b"".join(docker_line(t) for t in texts)
    else:
        body = b"".join(cri_line(t.rstrip("\n")) for t in texts)
    in_bulk = bulk_output(body, TransformSettings())
    assert in_bulk is not None  # no line goes through the per-line path
    result = transform_record(body, TransformSettings())
    general, _ = render_lines(body, TransformSettings(), None)
    assert result.data == in_bulk[0] == general
    assert result.counts.lines_in == result.counts.lines_out == 500
    lines = result.data.splitlines()
    assert json.loads(lines[140]) == {"id": 123456789012345678901234567890}
    assert json.loads(lines[240]) == {"balance": -1234567890123456789012, "ok": True}
    assert lines[340] == b'{"nanos":1577521193704659587123}'


def test_a_partial_piece_with_long_digits_is_joined_exactly() -> None:
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
    _, general = render_lines(body, TransformSettings(), None)
    assert result.counts.decode_failures == general.decode_failures == 2


# Contents that each stress one rule the bulk path must follow exactly as the general path.
ODD_CONTENTS = [
    SEED.rstrip("\n"),
    '  {"after": "spaces"}',  # spaces before an object: decoded
    '\t{"after": "tab"}',  # a tab: stays text
    '{"n": 1e400}',  # beyond a double: stays text
    '{"n": 1E+308, "f": 1e16, "g": -0.0, "h": 5e-324}',
    '{"n": -' + "9" * 4300 + "}",  # msgspec refuses it; the stdlib reads it exactly
    '{"n": ' + "9" * 4301 + "}",  # beyond Python's digit limit: stays text
    '{"raw": "tab\there"}',  # a raw control character: Fluent Bit decodes it
    '{"dup": 1, "dup": 2}',
    '{"deep": ' + "[" * 600 + "]" * 600 + "}",
    '{"deep": ' + "[" * 1100 + "]" * 1100 + "}",
    '{"s": "\\ud800"}',  # a lone surrogate: stays text
    '{"emoji": "\\ud83d\\ude00 é"}',
    "plain text é",
    "",
    "{not json",
    '{"a": 1} trailing',
    '["an", "array"]',
    '{"nested": {"list": [1, 2.5, true, null, "x"]}}',
]


def _odd_body(seed: int, runtime: str) -> bytes:
    """A record's lines: ODD_CONTENTS at random, some cut into pieces, on both streams."""
    rng = random.Random(seed)
    body = b""
    for _ in range(rng.randint(1, 40)):
        content = rng.choice(ODD_CONTENTS)
        stream = rng.choice(["stdout", "stderr"])
        cut = rng.random() < 0.2 and len(content) > 1  # a partial piece, then the rest
        pieces = [content[:5], content[5:]] if cut else [content]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if runtime == "docker":
                body += docker_line(piece + "\n" if last else piece, stream)
            else:
                body += cri_line(piece, stream, tag="F" if last else "P")
    if rng.random() < 0.3:  # a piece left open at the end of the record
        opened = '{"open": "piece'
        body += docker_line(opened) if runtime == "docker" else cri_line(opened, tag="P")
    if runtime == "cri-crlf":
        body = body.replace(b"\n", b"\r\n")
    return body


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("runtime", ["docker", "cri", "cri-crlf"])
def test_bulk_and_line_by_line_paths_agree_on_odd_contents(seed: int, runtime: str) -> None:
    body = _odd_body(seed, runtime)
    in_bulk = bulk_output(body, TransformSettings())
    assert in_bulk is not None
    result = transform_record(body, TransformSettings())  # so: the bulk path's output
    general, counts = render_lines(body, TransformSettings(), None)
    assert result.data == in_bulk[0] == general
    assert result.counts == in_bulk[1] == counts


def test_the_bulk_path_takes_ordinary_records_with_odd_contents() -> None:
    """Odd contents that are still ordinary lines do not send a record line by line."""
    odd = ['{"n": 1e400}', '{"n": 123456789012345678901234567890}', "{not json", "text"]
    body = b"".join(docker_line(c + "\n") for c in [*odd, SEED.rstrip("\n")] * 20)
    in_bulk = bulk_output(body, TransformSettings())
    assert in_bulk is not None
    result = transform_record(body, TransformSettings())
    assert result.data == in_bulk[0]
    assert result.counts.decode_failures == 40
    assert b'{"n":123456789012345678901234567890}\n' in result.data


@pytest.mark.parametrize("runtime", ["docker", "cri"])
def test_one_invalid_json_log_sends_only_its_chunk_line_by_line(
    runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [SEED.rstrip("\n")] * 2000
    texts[1234] = "{'a python': 'dict repr'}"
    if runtime == "docker":
        body = b"".join(docker_line(t + "\n") for t in texts)
    else:
        body = b"".join(cri_line(t) for t in texts)
    one_by_one = []
    real = bulk.decode_object
    monkeypatch.setattr(bulk, "decode_object", lambda log: one_by_one.append(1) or real(log))
    result = transform_record(body, TransformSettings())
    assert 0 < len(one_by_one) <= bulk.RETRY_CHUNK_LINES
    general, counts = render_lines(body, TransformSettings(), None)
    assert result.data == general
    assert result.counts == counts
    assert result.counts.decode_failures == 1


def test_a_character_split_between_cri_pieces_is_joined_not_replaced() -> None:
    """The runtime cuts long lines at a byte count; the pieces' bytes are joined first."""
    text = ("é" * 10).encode()
    body = (
        b"2024-05-01T10:00:00Z stdout P " + text[:5] + b"\n"
        b"2024-05-01T10:00:00Z stdout F " + text[5:] + b"\n"
    )
    result = transform_record(body, TransformSettings())
    assert result.data == b'{"log":"' + text + b'"}\n'
    assert result.counts.invalid_utf8 == 0


@pytest.mark.parametrize("runtime", ["docker", "cri"])
def test_partial_pieces_are_joined_in_bulk(runtime: str) -> None:
    """A line over 16 KiB, cut by the runtime, does not send its record line by line."""
    long = '{"payload": "' + "x" * 40_000 + '"}'
    pieces = [long[i : i + 16384] for i in range(0, len(long), 16384)]
    if runtime == "docker":
        cut = [docker_line(p, "stderr") for p in pieces[:-1]]
        body = docker_line(SEED) + b"".join(cut) + docker_line(pieces[-1] + "\n", "stderr")
    else:
        cut = [cri_line(p, "stderr", tag="P") for p in pieces[:-1]]
        body = cri_line(SEED.rstrip("\n")) + b"".join(cut) + cri_line(pieces[-1], "stderr")
    body += body  # and again, interleaved with the other stream
    in_bulk = bulk_output(body, TransformSettings())
    assert in_bulk is not None
    result = transform_record(body, TransformSettings())
    assert result.data == in_bulk[0]
    assert result.counts.lines_in == 2 * (len(pieces) + 1)
    assert result.counts.lines_out == 4
    assert [json.loads(line) for line in result.data.splitlines()] == [
        json.loads(SEED),
        json.loads(long),
    ] * 2


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("runtime", ["docker", "cri"])
def test_column_records_transform_as_their_lines(seed: int, runtime: str) -> None:
    """The forwarder's default records (zstd, envelope in columns) read straight from the
    columns give what the per-line path gives on the lines."""
    body = _odd_body(seed, runtime)
    encoder = RecordEncoder("zstd", 1, 1)
    record = encoder.encode(encoder.header("app_default_app-" + "ab" * 32 + ".log"), body)
    result = transform_record(record, TransformSettings())
    general, counts = render_lines(body, TransformSettings(), None)
    assert result.data == general
    assert result.counts == counts
