"""When to compress at the faster catch-up level (--zstd-catch-up-level).

The forwarder is *behind* when the bytes not yet read of its files stayed above a floor for
a whole window and grew over it: lines arrive faster than it reads them. Reading pauses
while a lane's buffer share is full (Firehose throttled, down, or slow), so that growth is
taken for CPU only while every lane has room: compressing faster would add bytes exactly
when bytes are scarce. A backlog that shrinks (a restart after an outage, files that no
longer grow) never counts, however large. It has *caught up* once the unread bytes stayed
under the floor for `hold` seconds (not at the first dip: that would flap).

    >>> signal = CatchUp(floor=10, window=2.0, hold=1.0)
    >>> [signal.update(t, unread, room=True) for t, unread in [(0, 20), (1, 30), (2, 40)]]
    [False, False, True]
    >>> [signal.update(t, unread, room=True) for t, unread in [(3, 5), (3.5, 4), (4, 3)]]
    [True, True, False]
"""

from __future__ import annotations

from collections import deque

FLOOR = 4 * 1024 * 1024  # unread bytes below which the forwarder counts as caught up
WINDOW = 2.5  # seconds the unread bytes must stay above the floor and grow
HOLD = 5.0  # seconds under the floor before going back to the configured level


class CatchUp:
    """The catch-up state, updated with each offset commit (every 0.2 s)."""

    def __init__(self, floor: int = FLOOR, window: float = WINDOW, hold: float = HOLD) -> None:
        self.floor = floor
        self.window = window
        self.hold = hold
        self.behind = False
        self._samples: deque[tuple[float, int]] = deque()  # (time, unread), oldest first
        self._under_since: float | None = None

    def update(self, now: float, unread: int, room: bool) -> bool:
        """Record the unread bytes at `now` (`room`: every lane has room to read); True
        while the forwarder is behind."""
        self._remember(now, unread)
        if self.behind:
            self.behind = not self._caught_up(now, unread)
        else:
            self.behind = room and self._growing(now)
        return self.behind

    def _remember(self, now: float, unread: int) -> None:
        self._samples.append((now, unread))
        # Keep one sample at least `window` old: the one the growth is measured against.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def _growing(self, now: float) -> bool:
        first_time, first = self._samples[0]
        return (
            now - first_time >= self.window
            and all(unread > self.floor for _, unread in self._samples)
            and self._samples[-1][1] > first
        )

    def _caught_up(self, now: float, unread: int) -> bool:
        if unread >= self.floor:
            self._under_since = None
            return False
        if self._under_since is None:
            self._under_since = now
        if now - self._under_since < self.hold:
            return False
        self._under_since = None
        return True
