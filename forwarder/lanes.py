"""Lanes: one per delivery stream — its queue of records, its sender threads and its share
of the buffer — so a stream that is throttled, missing or down holds back only its own files.

The rule for "buffer full" is the same for every lane: the lines of its files held in memory
(records in flight, records being filled, unfinished partial lines) reach its share,
`--max-buffer-bytes` divided evenly among the streams. Reading pauses for that lane's files
only; the other lanes' files are read on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from forwarder.acks import AckTracker
from forwarder.config import Config
from forwarder.metrics import Metrics
from forwarder.send_queue import SendQueue
from forwarder.sender import Sender, make_client


@dataclass
class Lane:
    """One delivery stream's queue, senders and share of the buffer."""

    stream: str
    queue: SendQueue
    sender: Sender
    share: int  # bytes of lines its files may hold in memory
    buffered: int = 0  # bytes of lines its files hold, as last computed
    stuck_since: float | None = None  # monotonic: full with nothing in flight, since

    def has_room(self, size: int) -> bool:
        """Reading `size` more bytes keeps the lane within its share (an empty lane may
        always read, so a share smaller than a read cannot stall it)."""
        return self.buffered == 0 or self.buffered + size <= self.share


def make_lanes(
    cfg: Config,
    streams: list[str],
    tracker: AckTracker,
    metrics: Metrics,
    hard_stop: threading.Event,
) -> dict[str, Lane]:
    """A lane per stream, all sending through one boto3 client."""
    client = make_client(cfg, len(streams))
    share = cfg.max_buffer_bytes // len(streams)
    lanes = {}
    for stream in streams:
        queue = SendQueue(cfg.flush_interval)
        sender = Sender(cfg, queue, tracker, metrics, hard_stop, stream=stream, client=client)
        lanes[stream] = Lane(stream, queue, sender, share)
        metrics.buffer_limit.labels(stream).set(share)
        metrics.buffered.labels(stream).set(0)
    return lanes
