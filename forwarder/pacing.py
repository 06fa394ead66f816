"""Pacing at the stream's quota: the send rate cut on "Slow down.", probed up between; one
pacer per stream, shared by its sender threads.

A Firehose stream takes so many bytes, records and calls per second; over that it answers
"Slow down." (ServiceUnavailableException) for a whole call or per record. Retrying with
backoff alone drains a backlog at the quota but wastes most calls on throttles (each one a
request against the calls quota and node CPU). The pacer instead:

- sends unpaced until the first throttle: `wait` returns at once (one attribute read);
- on a throttled call or throttled records, cuts the rate to DECREASE x the last call's
  rate (the first time: the rate Firehose accepted from this forwarder over the last WINDOW
  seconds; if it accepted nothing yet, the refused call's cost per BLIND seconds), and holds
  the next call back while a jittered share (JITTER) of the refused part is paid for, so a
  fleet throttled at the same moment does not come back at the same moment. Calls sent
  before a cut do not cut again: one cut per round of calls in flight;
- between throttles a call waits until its cost is paid at the rate, which grows per call:
  at most 1 + k x STEP times the previous call's rate, k the calls accepted whole since the
  last cut (1.2x, 1.4x, 1.6x...), and at most doubling every DOUBLING seconds. Per call, not
  per second: a forwarder whose share of the quota pays for one call every few seconds
  would otherwise overshoot on every call;
- while paced, a call holds only the records the rate pays for in CALL_SECONDS (`portion`;
  one at least): a small share goes as many small calls spread out, not a few large ones
  that collide (the records stay as large; only the calls are smaller);
- pacing stops RELEASE seconds after the last throttle. When nothing was accepted for QUIET
  seconds (the stream is down or at a tiny quota, not shared), a call waits at most about
  PROBE seconds, as the retries of an unpaced stream do, and the first call accepted whole
  after that stops pacing: a stream back from an outage catches up at once.

The rate is one number, in bytes per second of a call's cost: its bytes plus a share per
record and per call, from the ratios of the quotas, so whichever quota binds is paced.
See docs/forwarder.md "Pacing at the quota" for the constants and the measurements.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

DECREASE = 0.7  # a throttle cuts the rate to 70 %
DOUBLING = 2.0  # seconds without a throttle in which the rate doubles...
STEP = 0.2  # ...and per call at most 1 + k * STEP, k: calls accepted whole since the cut
WINDOW = 3.0  # seconds of accepted traffic that measure the rate at the first throttle
MIN_SPAN = 1.0  # ...measured over at least this long
BLIND = 2.0  # nothing accepted yet at the first throttle: the refused call's cost per 2 s
JITTER = (0.5, 1.5)  # after a cut, the next call waits until this share of the refused part is paid
RELEASE = 10.0  # seconds without a throttle after which pacing stops
QUIET = 10.0  # nothing accepted for this long while paced: an outage (see PROBE)...
PROBE = 3.0  # ...calls then wait at most ~this long (the retry backoff's cap)
CALL_SECONDS = 0.5  # a paced call holds what the rate pays for in this long (a record at least)
FLOOR = 2048.0  # the lowest rate, in cost per second: a call of 1 KiB every second
# A call's cost, in bytes: its bytes, plus a share for each record and for the call itself,
# from the quotas' ratios (1 MiB/s : 100,000 records/s : 1,000 calls/s outside the three big
# regions, 5 MiB/s : 500,000 : 2,000 in them), so a rate in cost paces whichever quota binds:
# the bytes quota for ordinary calls, the calls quota for a fleet of tiny ones.
RECORD_COST = 10
CALL_COST = 1024

# Error codes that mean "over the stream's quota" (Firehose says ServiceUnavailableException
# "Slow down."; the others are the AWS-wide throttling codes botocore knows).
THROTTLE_CODES = frozenset({
    "ServiceUnavailableException", "ThrottlingException", "Throttling", "ThrottledException",
    "LimitExceededException", "SlowDown", "RequestLimitExceeded", "TooManyRequestsException",
})  # fmt: skip


def cost(nbytes: int, nrecords: int) -> int:
    """What a call of `nbytes` in `nrecords` takes of the stream's quota, in bytes."""
    return nbytes + nrecords * RECORD_COST + CALL_COST


@dataclass(frozen=True)
class Ticket:
    """A call let go by `Pacer.wait`: when, and its cost."""

    at: float
    cost: int
    records: int


class Pacer:
    """The pace of one stream's calls; thread-safe. `wait` before a call, `after` it."""

    def __init__(
        self,
        enabled: bool = True,
        on_rate: Callable[[float], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self._on_rate = on_rate  # told the rate (0: unpaced) when it is cut or released
        self._on_wait = on_wait  # told each time a call is held back, how long
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._cut: float | None = None  # the rate set at the last cut; None: unpaced
        self._cut_at = 0.0
        self._last = 0.0  # the rate the last call was paced at (STEP grows from it)
        self._streak = 0  # calls accepted whole since the last cut
        self._next = 0.0  # when the next call may go
        self._first: float | None = None  # when the first call went
        self._accepted: deque[tuple[float, int]] = deque()  # (when, cost) of accepted parts
        self._accepted_at = -math.inf  # when an answer last accepted something

    @property
    def paced(self) -> bool:
        """A throttle was seen less than RELEASE seconds ago."""
        return self._cut is not None

    def rate(self, now: float | None = None) -> float | None:
        """The rate the next call would be paced at, in cost (bytes) per second; None when
        unpaced: the rate cut to, doubled every DOUBLING seconds since, at most STEP times the
        last call's."""
        cut = self._cut
        if cut is None:
            return None
        since = (self._clock() if now is None else now) - self._cut_at
        step = 1.0 + STEP * max(1, self._streak)
        return min(cut * 2.0 ** (max(0.0, since) / DOUBLING), step * self._last)

    def portion(self, sizes: Sequence[int]) -> int:
        """How many of the records of `sizes` (bytes each) the next call should hold: all when
        unpaced; paced, those the rate pays for in CALL_SECONDS, one at least, so a small
        share of the quota goes as many small calls spread out, not few large ones."""
        rate = self.rate()
        if rate is None:
            return len(sizes)
        budget = rate * CALL_SECONDS - CALL_COST
        n = 0
        for size in sizes:
            budget -= size + RECORD_COST
            if n and budget < 0:
                break
            n += 1
        return n

    def wait(self, nbytes: int, nrecords: int) -> Ticket:
        """Hold a call of `nbytes` in `nrecords` back until the rate allows it; returns the
        call's ticket for `after`."""
        price = cost(nbytes, nrecords)
        if self._cut is None:  # the normal case: never throttled, nothing to do
            now = self._clock()
            if self._first is None:
                self._first = now
            return Ticket(now, price, nrecords)
        with self._lock:
            now = self._clock()
            if self._release(now) is None:
                return Ticket(now, price, nrecords)
            start = max(now, self._next)
            if -math.inf < self._accepted_at < now - QUIET:  # an outage: probe as retries do
                start = min(start, now + random.uniform(*JITTER) * PROBE / JITTER[1])
            rate = self.rate(start)
            assert rate is not None
            self._last = rate
            self._next = start + min(price / rate, PROBE)  # one huge record: no longer
        if start > now:
            if self._on_wait is not None:
                self._on_wait(start - now)
            self._sleep(start - now)
        return Ticket(start, price, nrecords)

    def after(self, ticket: Ticket, failed: Sequence[int], code: str) -> None:
        """The call of `ticket` came back: records of sizes `failed` were not accepted, `code`
        is its (worst) error code ("" when every record was accepted)."""
        now = self._clock()
        rate: float | None = None
        with self._lock:
            if len(failed) < ticket.records:
                quiet = -math.inf < self._accepted_at < ticket.at - QUIET
                if not failed and self._cut is not None and quiet:
                    self._cut = None  # back from an outage: catch up unpaced
                    rate = 0.0
                self._accepted.append((now, ticket.cost - sum(failed) - len(failed) * RECORD_COST))
                self._accepted_at = now
                if not failed and ticket.at > self._cut_at:
                    self._streak += 1
            while self._accepted and self._accepted[0][0] < now - WINDOW:
                self._accepted.popleft()
            if self.enabled and code in THROTTLE_CODES and ticket.at > self._cut_at:
                rate = self._throttled(now, failed)
        if rate is not None and self._on_rate is not None:
            self._on_rate(rate)

    def _throttled(self, now: float, failed: Sequence[int]) -> float:
        """Cut the rate after a throttle (lock held); the new rate."""
        refused = cost(sum(failed), len(failed))
        base = self._last if self._release(now) is not None else None  # the last call's rate
        if base is None:  # the first throttle: what got through lately...
            base = self._measured(now) or refused / BLIND  # ...or a guess from the refused
        self._cut = self._last = max(FLOOR, DECREASE * base)
        self._cut_at = now
        self._streak = 0
        hold = random.uniform(*JITTER) * min(refused / self._cut, PROBE / JITTER[1])
        self._next = max(self._next, now + hold)
        return self._cut

    def _release(self, now: float) -> float | None:
        """The current rate; stops pacing RELEASE seconds after the last cut (lock held)."""
        if self._cut is not None and now - self._cut_at > RELEASE:
            self._cut = None
            if self._on_rate is not None:
                self._on_rate(0.0)
        return self.rate(now)

    def _measured(self, now: float) -> float:
        """Cost per second Firehose accepted from us over the last WINDOW (lock held)."""
        span = max(MIN_SPAN, min(WINDOW, now - (self._first or now)))
        return sum(c for _, c in self._accepted) / span
