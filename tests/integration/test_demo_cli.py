"""`make demo` (python -m devstack.demo) as a process refuses what the template would."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--parameter-overrides", "DynamicPartitioning=maybe"], "DynamicPartitioning=maybe"),
        (["--parameter-overrides", "NoSuchParameter=1"], "no parameter NoSuchParameter"),
        (["--parameter-overrides", "TransformMemorySize=64"], "below the minimum 128"),
        (["--buffer-mb", "100"], "--buffer-mb 100"),
    ],
)
def test_the_demo_refuses_what_the_template_would(args: list[str], said: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "devstack.demo", *args], capture_output=True, text=True,
        timeout=60, check=False, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.returncode == 2
    assert said in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
