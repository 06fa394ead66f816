"""--zstd-catch-up-level: the signal (forwarder/catch_up.py) and the encoder's two levels."""

from __future__ import annotations

import zstandard

from forwarder.catch_up import CatchUp
from forwarder.wire_encoder import RecordEncoder, zstd_parameters
from tests.forwarder_testlib import decode

MIB = 1024 * 1024


def feed(signal_: CatchUp, samples: list[tuple[float, int]], room: bool = True) -> list[bool]:
    return [signal_.update(t, unread, room) for t, unread in samples]


def test_growing_unread_above_the_floor_for_a_window_is_behind() -> None:
    signal_ = CatchUp(floor=4 * MIB, window=2.5, hold=5.0)
    growing = [(i * 0.5, (5 + i) * MIB) for i in range(7)]  # 5 MiB -> 11 MiB over 3 s
    assert feed(signal_, growing) == [False] * 5 + [True, True]  # from t=2.5 on


def test_a_shrinking_backlog_is_never_behind() -> None:
    signal_ = CatchUp(floor=4 * MIB, window=2.5)
    shrinking = [(i * 0.2, (500 - i) * MIB) for i in range(100)]
    assert not any(feed(signal_, shrinking))


def test_growth_while_a_lane_is_full_is_not_behind() -> None:
    """Reading paused for delivery (throttled, down): faster compression would add bytes."""
    signal_ = CatchUp(floor=4 * MIB, window=2.5)
    growing = [(i * 0.2, (5 + i) * MIB) for i in range(40)]
    assert not any(feed(signal_, growing, room=False))
    assert signal_.update(8.0, 50 * MIB, room=True)  # room again, still growing: behind


def test_a_short_burst_is_not_behind() -> None:
    """Above the floor for less than the window, or back under it inside the window."""
    signal_ = CatchUp(floor=4 * MIB, window=2.5)
    burst = [(0, 0), (0.5, 20 * MIB), (1.0, 30 * MIB), (1.5, 3 * MIB), (2.0, 8 * MIB),
             (2.5, 9 * MIB), (3.0, 10 * MIB)]  # fmt: skip
    assert not any(feed(signal_, burst))


def test_caught_up_after_hold_seconds_under_the_floor() -> None:
    signal_ = CatchUp(floor=4 * MIB, window=2.5, hold=5.0)
    assert feed(signal_, [(0, 10 * MIB), (1, 20 * MIB), (2.5, 30 * MIB)])[-1]
    # Under the floor, over it again (the hold restarts), then under it for 5 s.
    after = [(3, MIB), (5, MIB), (6, 5 * MIB), (7, MIB), (11.9, MIB), (12, MIB)]
    assert feed(signal_, after) == [True] * 5 + [False]


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
