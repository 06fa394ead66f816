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
