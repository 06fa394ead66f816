"""The tailer model (issue 20): seeded random walks of writes, partial pieces, rotations,
copytruncate, deletions, new pods reusing freed inodes, SIGKILLs and Firehose faults against
the real forwarder; every written byte must arrive exactly once (testkit/tailer_model.py).

A failing walk is reduced to a short list of steps, printed as a `replay([...])` call.
PODHOSE_MODEL_REDUCE_SECONDS sets the reduction budget (0: no reduction). Long runs:
`python -m testkit.tailer_model --minutes 30 --steps 400`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit.tailer_model import check

STEPS = 60
REDUCE_SECONDS = float(os.environ.get("PODHOSE_MODEL_REDUCE_SECONDS", "120"))
WALKS = [(1, "small"), (2, "small"), (3, "small"), (4, "big")]


@pytest.mark.timeout(240 + REDUCE_SECONDS)
@pytest.mark.parametrize(("seed", "profile"), WALKS)
def test_every_line_arrives_exactly_once(seed: int, profile: str, tmp_path: Path) -> None:
    outcome = check(seed, STEPS, profile, REDUCE_SECONDS, root=tmp_path)
    print(outcome.result.report())
    assert outcome.ok, outcome.message(seed)
