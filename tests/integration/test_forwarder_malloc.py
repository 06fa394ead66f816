"""The glibc malloc settings the forwarder applies at start-up (forwarder/memory.py), read
from a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

from forwarder.memory import MALLOC_SETTINGS

PROBE = "from forwarder.memory import tune_malloc; print(','.join(tune_malloc()))"


def applied(env: dict[str, str]) -> list[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return [name for name in out.stdout.strip().split(",") if name]


def test_every_setting_is_applied_on_glibc() -> None:
    assert applied({}) == [name for _, name, _ in MALLOC_SETTINGS]


def test_a_setting_given_in_the_environment_is_left_alone() -> None:
    names = applied({"MALLOC_ARENA_MAX": "4"})
    assert "MALLOC_ARENA_MAX" not in names
    assert "MALLOC_MMAP_THRESHOLD_" in names
