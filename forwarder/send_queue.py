"""The send queue: closed records waiting for a sender, handed out as calls within the API limits.

The batcher puts records in file order; each sender takes a call when it is full or its oldest
line waited --flush-interval, and puts back what it could not finish:

    >>> from forwarder.acks import AckTracker
    >>> tracker = AckTracker()
    >>> tracker.start((1, 1), 0)
    >>> queue = SendQueue(flush_interval=0.0)
    >>> queue.put([Record(b"a line", tracker.mark((1, 1), 7, 1, born=0.0), lines=1)])
    >>> [record.data for record in queue.take()]
    [b'a line']
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator

from forwarder.acks import Mark
from podhose_wire import firehose_limits

# A call goes out once it holds this much (base64) data: well under the 4 MiB limit, because
# botocore holds ~4 copies of a request body while sending it (base64 strings, the JSON
# text, its bytes). 512 KiB (~7 records of 1 MiB of lines) measured 0.8-2 MB less peak RSS
# than 1 MiB at the same CPU (issue 22); live traffic sends smaller calls every
# --flush-interval anyway.
CALL_TARGET_BYTES = 512 * 1024


class Record:
    """One Firehose record as sent, the mark it acknowledges, how many lines it holds, and
    whether it is done (acknowledged or skipped)."""

    __slots__ = ("data", "done", "lines", "mark")

    def __init__(self, data: bytes, mark: Mark, lines: int) -> None:
        self.data = data
        self.mark = mark
        self.lines = lines
        self.done = False


class SendQueue:
    """Closed records waiting for a sender; hands out calls that respect the API limits."""

    def __init__(self, flush_interval: float) -> None:
        self.flush_interval = flush_interval
        self._cv = threading.Condition()
        self._queue: deque[Record] = deque()
        self._cost = 0
        self._flushing = False
        self._hurry = False  # what is queued goes now (flush_stream), then waits as usual
        self._closed = False

    def put(self, records: list[Record]) -> None:
        """Enqueue records (in file order)."""
        with self._cv:
            self._queue.extend(records)
            self._cost += sum(firehose_limits.call_cost(len(r.data)) for r in records)
            self._cv.notify()

    def put_back(self, records: list[Record]) -> None:
        """Return records a sender could not finish to the head of the queue."""
        with self._cv:
            self._queue.extendleft(reversed(records))
            self._cost += sum(firehose_limits.call_cost(len(r.data)) for r in records)
            self._cv.notify()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Records put meanwhile are taken together: no sender takes a call until the end."""
        with self._cv:
            yield

    def hurry(self) -> None:
        """Send what is queued now, without waiting for full calls or its flush interval."""
        with self._cv:
            self._hurry = True
            self._cv.notify_all()

    def flush(self) -> None:
        """From now on send whatever is queued without waiting for full calls."""
        with self._cv:
            self._flushing = True
            self._cv.notify_all()

    def close(self) -> None:
        """Wake and stop every sender."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._queue)

    def take(self) -> list[Record] | None:
        """Block until a call is due (full, or its oldest line waited flush_interval)."""
        with self._cv:
            while not self._closed:
                timeout = self._due_in()
                if timeout <= 0:
                    return self._pop_call()
                self._cv.wait(timeout)
            return None

    def _due_in(self) -> float:
        if not self._queue:
            return 60.0
        full = (
            len(self._queue) >= firehose_limits.MAX_RECORDS_PER_CALL
            or self._cost >= CALL_TARGET_BYTES
        )
        if full or self._flushing or self._hurry:
            return 0.0
        return self._queue[0].mark.born + self.flush_interval - time.monotonic()

    def _pop_call(self) -> list[Record]:
        call: list[Record] = []
        budget = CALL_TARGET_BYTES  # a single larger record still goes (<= 4 MiB limit)
        while self._queue and len(call) < firehose_limits.MAX_RECORDS_PER_CALL:
            cost = firehose_limits.call_cost(len(self._queue[0].data))
            if call and cost > budget:
                break
            budget -= cost
            self._cost -= cost
            call.append(self._queue.popleft())
        if self._queue:
            self._cv.notify()  # more is due: wake another sender
        else:
            self._hurry = False
        return call
