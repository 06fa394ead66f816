"""`make invoke` (python -m devstack.invoke) as a process: a bad event is one line."""

from __future__ import annotations

from pathlib import Path

import pytest


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
        text=True, timeout=60, check=False, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"invoke: error: {event}: ") and said in line
