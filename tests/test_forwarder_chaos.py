"""The chaos suite: mixed-rate containers, every rotation style, finished pods deleted, a
Firehose that cycles through outages, throttling, partial failures, dropped connections and
slow answers, SIGKILL and restart mid-outage, a 256 KiB buffer — nothing may be lost.

`make soak` runs the same scenario for minutes to hours (bench/soak.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.chaos import BUFFER_BYTES, Chaos

# A SIGKILL re-sends what was unacknowledged (<= the buffer) plus what was acknowledged after
# the last offset save (every 0.2 s): a generous bound on that second part.
RESEND_PER_KILL = BUFFER_BYTES + 2 * 1024 * 1024


def test_nothing_is_lost_under_rotation_faults_and_kills(tmp_path: Path) -> None:
    result = Chaos(tmp_path, seconds=45).run()
    print(result)
    assert result.kills >= 1
    assert result.deleted_jobs >= 1
    assert result.written > 20_000
    assert {"server_error", "throttle", "fail_records", "drop"} <= set(result.faults)
    assert result.lost == 0, result
    assert result.corrupt == 0, result
    assert result.duplicated_bytes <= result.kills * RESEND_PER_KILL, result
