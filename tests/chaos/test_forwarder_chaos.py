"""The chaos suite: mixed-rate containers, every rotation style, finished pods deleted, a
Firehose that cycles through outages, throttling, partial failures, dropped connections,
malformed and slow answers, SIGKILL and restart mid-outage — nothing may be lost.

The run must also produce the conditions of testkit/chaos.py (inode reuse while files await
acknowledgement, progress bars stuck mid-line while stderr logs on, incompressible pairs of
lines near the record size, kills while drained files are unacknowledged): each is asserted
to have happened, so the suite cannot silently stop producing them.

`make soak` runs the same scenario for minutes to hours (bench/soak.py).
"""

from __future__ import annotations

from pathlib import Path

from testkit.chaos import BUFFER_BYTES, STUCK_SECONDS, Chaos, filesystem

# A SIGKILL re-sends what was unacknowledged (<= the buffer) plus what was acknowledged after
# the last offset save (every 0.2 s): a generous bound on that second part.
RESEND_PER_KILL = BUFFER_BYTES + 2 * 1024 * 1024
# No whole line waits this long for delivery: fault phases last seconds, a kill and restart
# a few more (up to ~18 s measured on a quiet machine, 28.7 s beside the container tests in
# make test). A forwarder that stops reading while a progress bar is stuck mid-line
# (STUCK_SECONDS) makes lines wait until the bar goes on (~40 s), or for ever.
MAX_WAIT_S = 32.0
assert STUCK_SECONDS > MAX_WAIT_S + 10


def test_nothing_is_lost_under_rotation_faults_and_kills(tmp_path: Path) -> None:
    result = Chaos(tmp_path, seconds=45).run(drain_timeout=60)
    print(result)
    assert result.lost == 0, result
    assert result.corrupt == 0, result
    assert result.kills >= 1
    assert result.deleted_jobs >= 1
    assert result.written > 20_000
    assert {"server_error", "throttle", "fail_records", "drop", "malformed"} <= set(result.faults)
    if filesystem(tmp_path) == "ext4":  # tmpfs, for one, does not reuse inode numbers soon
        assert result.reused_inodes >= 1, result
    assert result.stuck_pieces >= 1, result
    assert result.incompressible_pairs >= 1, result
    assert result.kills_with_unacked_drained_files >= 1, result
    assert result.duplicated_bytes <= result.kills * RESEND_PER_KILL, result
    assert result.max_wait_s <= MAX_WAIT_S, result
