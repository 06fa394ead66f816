"""--zstd-catch-up-level: the encoder's two levels, and the real forwarder switching while it
falls behind a growing file, not on a plain backlog (the signal and the option:
tests/unit/test_forwarder_catch_up_signal.py)."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import zstandard

from devstack.firehose_endpoint import FirehoseEndpoint
from forwarder.wire_encoder import RecordEncoder, zstd_parameters
from testkit.forwarder import ForwarderProc, Node, decode, delivered, running, wait_for


def zstd_level_of(record: bytes, levels: tuple[int, ...] = (1, 6)) -> int | None:
    """Which of `levels` made this record (zstd is deterministic: compress it again)."""
    payload = zstandard.ZstdDecompressor().decompress(record)
    for level in levels:
        zstd = zstandard.ZstdCompressor(compression_params=zstd_parameters(level))
        stream = zstd.compressobj(size=len(payload))
        if stream.compress(payload) + stream.flush() == record:
            return level
    return None


def cri_lines(first: int, count: int) -> bytes:
    return b"".join(
        b'2024-05-01T10:00:%02d.%09dZ stdout F {"seq":%d,"msg":"request handled","ms":%d}\n'
        % (i // 100_000 % 60, i % 1_000_000_000, i, i * 7 % 1000)
        for i in range(first, first + count)
    )


def test_encoder_compresses_at_the_catch_up_level_while_catching_up() -> None:
    encoder = RecordEncoder("zstd", 1, 6, catch_up_level=1)
    lines = cri_lines(0, 5000)
    normal = encoder.encode(encoder.header("x.log"), lines)
    encoder.catching_up = True
    fast = encoder.encode(encoder.header("x.log"), lines)
    assert (zstd_level_of(normal), zstd_level_of(fast), encoder.level) == (6, 1, 1)
    assert decode(normal) == decode(fast)
    assert b"".join(decode(fast)[1]) == lines


def _duty_cycle(proc: ForwarderProc, done: threading.Event) -> None:
    """Let the forwarder run 20 ms in every 400 (SIGSTOP/SIGCONT): a CPU far too small
    for what is written, whatever this machine's speed."""
    while not done.is_set():
        proc.signal(signal.SIGCONT)
        time.sleep(0.02)
        proc.signal(signal.SIGSTOP)
        time.sleep(0.38)
    proc.signal(signal.SIGCONT)


def test_falls_behind_a_growing_file_switches_and_delivers_exactly_once(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    app = node.add("busy-1")
    proc = ForwarderProc(endpoint.url, node, tmp_path / "state" / "offsets.db")
    written = 0
    with running(proc):
        wait_for(proc.up, what="forwarder up")
        done = threading.Event()
        throttle = threading.Thread(target=_duty_cycle, args=(proc, done))
        throttle.start()
        try:
            deadline = time.monotonic() + 20
            switched_at = None
            # ~8 MB/s for as long as it takes to switch, and a second more.
            while time.monotonic() < deadline and (
                switched_at is None or time.monotonic() < switched_at + 1
            ):
                app.write(cri_lines(written, 8_000))
                written += 8_000
                time.sleep(0.1)
                if switched_at is None and "behind growing files" in proc.log():
                    switched_at = time.monotonic()
        finally:
            done.set()
            throttle.join()
        assert switched_at is not None, proc.log()[-2000:]
        wait_for(lambda: "caught up" in proc.log(), timeout=60, what="caught up")
        assert proc.metric("podhose_catch_ups_total") == 1
        assert proc.metric("podhose_zstd_level") == 6
        wait_for(lambda: sum(map(len, delivered(endpoint.received()).values())) >= written,
                 timeout=60, what="every line")  # fmt: skip
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    records = endpoint.received()
    got = delivered(records)[app.src]
    assert got == Counter(cri_lines(0, written).splitlines(keepends=True))  # once each
    levels = Counter(map(zstd_level_of, records))
    assert set(levels) == {1, 6} and levels[1] > 0, levels


def test_a_plain_backlog_stays_at_the_configured_level(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """A backlog (files that no longer grow) shrinks: however large, no catch-up level."""
    apps = [node.add(f"app-{i}") for i in range(3)]
    for n, app in enumerate(apps):
        app.write(cri_lines(n * 100_000, 100_000))  # ~7 MiB each, far above the floor
    proc = ForwarderProc(endpoint.url, node, tmp_path / "state" / "offsets.db", "--exit-on-eof")
    with running(proc):
        assert proc.wait(120) == 0
    assert "behind growing files" not in proc.log()
    records = endpoint.received()
    assert {zstd_level_of(r) for r in records} == {6}
    got = delivered(records)
    for n, app in enumerate(apps):
        assert got[app.src] == Counter(cri_lines(n * 100_000, 100_000).splitlines(keepends=True))
