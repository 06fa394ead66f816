"""Pacing at the stream's quota: the send rate cut on "Slow down.", probed up between; one
pacer per stream, shared by its sender threads.

A Firehose stream takes so many bytes, records and calls per second; over that it answers
"Slow down." (ServiceUnavailableException) for a whole call or per record. Retrying with
backoff alone drains a backlog at the quota but wastes most calls on throttles (each one a
request against the calls quota and node CPU). The pacer instead:

- sends unpaced until the first throttle: `wait` returns at once (one attribute read);
- on a throttled call or throttled records, cuts the rate to DECREASE x the current rate
  (the first time: the rate Firehose accepted from this forwarder over the last WINDOW
  seconds; if it accepted nothing yet, only the retry's backoff applies until it has), and
  holds the next call back while a jittered share (JITTER) of the refused part is paid for,
  so a fleet throttled at the same moment does not come back at the same moment. Calls sent
  before a cut do not cut again: one cut per round of calls in flight;
- between throttles the rate doubles every DOUBLING seconds (a call waits until the growing
  rate has paid for it), and pacing stops RELEASE seconds after the last throttle.

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
DOUBLING = 2.0  # seconds without a throttle in which the rate doubles
WINDOW = 3.0  # seconds of accepted traffic that measure the rate at the first throttle
MIN_SPAN = 1.0  # ...measured over at least this long
JITTER = (0.5, 1.5)  # after a cut, the next call waits until this share of the refused part is paid
RELEASE = 10.0  # seconds without a throttle after which pacing stops (rate 32x the cut)
FLOOR = 2048.0  # the lowest rate, in cost per second: a call of 1 KiB every second
# A call's cost, in bytes: its bytes, plus a share for each record and for the call itself,
# from the quotas' ratios (1 MiB/s : 100,000 records/s : 1,000 calls/s outside the three big
# regions, 5 MiB/s : 500,000 : 2,000 in them), so a rate in cost paces whichever quota binds:
# the bytes quota for ordinary calls, the calls quota for a fleet of tiny ones.
RECORD_COST = 10
LN2 = math.log(2.0)
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
        self._next = 0.0  # when the next call may go
        self._first: float | None = None  # when the first call went
        self._accepted: deque[tuple[float, int]] = deque()  # (when, cost) of accepted parts

    @property
    def paced(self) -> bool:
        """A throttle was seen less than RELEASE seconds ago."""
        return self._cut is not None

    def rate(self, now: float | None = None) -> float | None:
        """The current rate in cost (bytes) per second; None when unpaced."""
        cut = self._cut
        if cut is None:
            return None
        since = (self._clock() if now is None else now) - self._cut_at
        return cut * 2.0 ** (max(0.0, since) / DOUBLING)

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
            rate = self._rate_or_release(now)
            if rate is None:
                return Ticket(now, price, nrecords)
            start = max(now, self._next)
            self._next = self._paid(start, price)
        if start > now:
            if self._on_wait is not None:
                self._on_wait(start - now)
            self._sleep(start - now)
        return Ticket(start, price, nrecords)

    def after(self, ticket: Ticket, failed: Sequence[int], code: str) -> None:
        """The call of `ticket` came back: records of sizes `failed` were not accepted, `code`
        is its (worst) error code ("" when every record was accepted)."""
        now = self._clock()
        with self._lock:
            if len(failed) < ticket.records:
                self._accepted.append((now, ticket.cost - sum(failed) - len(failed) * RECORD_COST))
            while self._accepted and self._accepted[0][0] < now - WINDOW:
                self._accepted.popleft()
            if not self.enabled or code not in THROTTLE_CODES or ticket.at <= self._cut_at:
                return
            base = self._rate_or_release(now)
            if base is None:  # the first throttle: what got through lately...
                base = self._measured(now)
                if not base:  # ...nothing yet: the retry's backoff only, pace once measured
                    return
            self._cut = max(FLOOR, DECREASE * base)
            self._cut_at = now
            hold = random.uniform(*JITTER) * cost(sum(failed), len(failed))
            self._next = max(self._next, self._paid(now, hold))
            rate = self._cut
        if self._on_rate is not None:
            self._on_rate(rate)

    def _paid(self, start: float, price: float) -> float:
        """When the rate, growing from `start` on, has paid for `price` (lock held): the
        integral of cut * 2^((t - cut_at) / DOUBLING) from start to the answer is `price`."""
        assert self._cut is not None
        grown = 2.0 ** ((start - self._cut_at) / DOUBLING)
        return self._cut_at + DOUBLING * math.log2(grown + price * LN2 / (self._cut * DOUBLING))

    def _rate_or_release(self, now: float) -> float | None:
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
