"""Every sample event in events/ runs through `make invoke` and is what generate.py makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack import invoke
from events import generate

EVENTS = sorted(Path(generate.HERE).glob("*.json"))


def test_every_generated_event_is_committed() -> None:
    assert {path.stem for path in EVENTS} == set(generate.EVENTS)
    for name, records in generate.EVENTS.items():
        committed = json.loads((generate.HERE / f"{name}.json").read_text())
        assert committed == generate.event(records), f"events/{name}.json is stale"


@pytest.mark.parametrize("path", EVENTS, ids=[path.stem for path in EVENTS])
def test_make_invoke_runs_every_event(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke.main([str(path)]) == 0
    out = capsys.readouterr().out
    for record in json.loads(path.read_text())["records"]:
        assert f"== {record['recordId']}: " in out


def test_invoke_shows_results_and_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke.main([str(generate.HERE / "malformed.json")]) == 0
    out = capsys.readouterr().out
    assert out.count(": ProcessingFailed") == 4  # bad base64, gzip, zstd; unknown encoding
    assert ": Dropped" in out
    assert '{"log":"café and a stray byte:"}' in out


def test_invoke_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke.main([]) == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read it"),
        (b"", "not JSON"),
        (b"not json", "not JSON"),
        (b'{"records": [{"recordId": "a"}]}', 'no "data" string'),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_make_invoke_on_a_bad_event_says_so_in_one_line(
    content: bytes | None, said: str, tmp_path
) -> None:
    import subprocess
    import sys

    event = tmp_path / "event.json"
    if content is not None:
        event.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "devstack.invoke", str(event)], capture_output=True,
        text=True, timeout=60, check=False, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"invoke: error: {event}: ") and said in line
