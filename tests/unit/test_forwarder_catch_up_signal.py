"""--zstd-catch-up-level: the signal that says the forwarder is behind (forwarder/catch_up.py),
and the option."""

from __future__ import annotations

import pytest

from forwarder.catch_up import CatchUp
from forwarder.config import parse_config

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


def test_catch_up_level_option() -> None:
    assert parse_config(["--delivery-stream", "s"], {}).zstd_catch_up_level == 1
    env = {"PODHOSE_ZSTD_CATCH_UP_LEVEL": "3"}
    assert parse_config(["--delivery-stream", "s"], env).zstd_catch_up_level == 3
    for bad in ("0", "20", "x"):
        with pytest.raises(SystemExit):
            parse_config(["--delivery-stream", "s", "--zstd-catch-up-level", bad], {})
