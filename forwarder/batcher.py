"""Packing: lines of one file into records, put on the send queue of their stream."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from forwarder import limits, multiline_cut, partials, wire_encoder
from forwarder.acks import AckTracker
from forwarder.config import Config
from forwarder.pod_metadata import PodLookup
from forwarder.scan import FileKey
from forwarder.send_queue import Record, SendQueue
from forwarder.tail import Chunk
from podhose_wire import firehose_limits
from podhose_wire.header import K8S, with_field

# Memory a record costs beside its data (its bytes and Record objects, the queue's slot),
# counted in the buffer: with --one-line-per-record and short lines it is most of it
# (measured ~160 bytes; 780,000 records of 43 bytes took 169 MiB).
RECORD_MEMORY = 160


@dataclass
class OpenRecord:
    """Lines of one file waiting to become record(s)."""

    safe_offset: int
    stream: str  # the delivery stream its records go to
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    born: float = 0.0
    last_added: float = 0.0  # when lines were last appended (the multi-line flush timeout)

    def last_line(self) -> bytes:
        """The last complete line held (without its LF), b"" when empty."""
        tail = self.parts[-1] if self.parts else b""
        return tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 : -1]


class Batcher:
    """Accumulates lines per file and closes them into records when full or aged."""

    def __init__(
        self,
        cfg: Config,
        tracker: AckTracker,
        queues: Mapping[str, SendQueue],
        metadata: PodLookup | None = None,
        *,
        on_cut: Callable[[], None] | None = None,
        on_raw_limit: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_cut = on_cut  # called for each line cut because no record could hold it
        self.on_raw_limit = on_raw_limit  # called for each record closed by --max-raw-bytes
        self.raw: Counter[str] = Counter()  # bytes of lines in open records, per stream
        self.metadata = metadata
        self.tracker = tracker
        self.queues = queues  # by delivery stream
        self.encoder = wire_encoder.RecordEncoder(
            cfg.compression, cfg.gzip_level, cfg.zstd_level, cfg.max_record_bytes,
            cfg.zstd_catch_up_level,
        )  # fmt: skip
        self.open: dict[FileKey, OpenRecord] = {}
        self.headers: dict[FileKey, bytes] = {}
        self.sources: dict[FileKey, str] = {}
        self.streams: dict[FileKey, str] = {}
        self.last_safe: dict[FileKey, int] = {}
        self.records_made = 0
        multiline = cfg.multiline != "none"
        self.continues = (
            multiline_cut.continuation_test(cfg.multiline, cfg.multiline_start)
            if multiline
            else None
        )
        self.open_event = (
            multiline_cut.open_event_test(cfg.multiline, cfg.multiline_start) if multiline else None
        )

    def track(self, key: FileKey, src: str, offset: int, stream: str | None = None) -> None:
        """Start a file: its header, the offset its first record starts from, and the
        delivery stream its records go to (--delivery-stream when None)."""
        self.headers[key] = b"" if self.cfg.one_line_per_record else self.encoder.header(src)
        self.sources[key] = src
        self.streams[key] = stream or self.cfg.delivery_stream
        self.last_safe[key] = offset
        self.tracker.start(key, offset, self.streams[key])

    def untrack(self, key: FileKey) -> None:
        """Forget a closed file (after flush_file)."""
        self.headers.pop(key, None)
        self.sources.pop(key, None)
        self.streams.pop(key, None)
        self.last_safe.pop(key, None)

    def rekey(self, old: FileKey, new: FileKey) -> None:
        """A file's state under another key (after flush_file; AckTracker.rekey)."""
        for table in (self.headers, self.sources, self.streams, self.last_safe):
            if old in table:
                table[new] = table.pop(old)  # type: ignore[index]
        self.tracker.rekey(old, new)

    def capacity(self, key: FileKey) -> int:
        """Uncompressed payload bytes one record of this file may hold."""
        header = len(self.headers[key]) + self._metadata_reserve
        cap = self.cfg.max_record_bytes - header
        if self.cfg.compression == "none":
            cap = min(cap, firehose_limits.MAX_RECORD_BYTES - header)
        return cap

    def add(self, key: FileKey, chunk: Chunk, now: float) -> None:
        """Append a chunk of complete lines; close records as they fill."""
        if not chunk.data:  # only pieces of unfinished lines: the offset may move, no record
            self._move_offset(key, chunk.safe_offset, now)
            return
        data, pos, cap = chunk.data, 0, self.capacity(key)
        op = self._open(key, now)
        while len(data) - pos > cap - op.size:
            cut = data.rfind(b"\n", pos, pos + cap - op.size) + 1
            if cut > pos and self.continues is not None:
                # Not before a line that continues a multi-line event, if avoidable.
                shifted = multiline_cut.event_boundary(data, pos, cut, self.continues)
                cut = shifted if shifted > pos or op.size else cut
            if cut <= pos:
                if op.size:
                    self._close(key, op)
                    op = self._open(key, now)
                    continue
                # One line longer than a record (settings prevent it): cut into whole lines.
                cut = data.find(b"\n", pos) + 1
                *pieces, last = self._fit(data[pos:cut], cap)
                for piece in pieces:
                    self._append(op, piece)
                    self._close(key, op)
                    op = self._open(key, now)
                self._append(op, last)
                if chunk.start is not None:
                    op.safe_offset = chunk.start + cut
                pos = cut
                continue
            self._append(op, data[pos:cut])
            if chunk.start is not None:
                op.safe_offset = chunk.start + cut
            self._close(key, op)
            op = self._open(key, now)
            pos = cut
        if pos < len(data):
            self._append(op, data[pos:] if pos else data)
        op.safe_offset = chunk.safe_offset
        op.last_added = now
        self.last_safe[key] = chunk.safe_offset
        self._keep_raw_within_limit()

    def _append(self, op: OpenRecord, part: bytes) -> None:
        op.parts.append(part)
        op.size += len(part)
        self.raw[op.stream] += len(part)

    def _keep_raw_within_limit(self) -> None:
        """Close the largest open records while their lines exceed --max-raw-bytes: raw lines
        take ~14x the memory of their record, and with many files every file's open record
        could otherwise hold up to a full record of them."""
        while self.raw.total() > self.cfg.max_raw_bytes and self.open:
            largest = max(self.open, key=lambda k: self.open[k].size)
            if self.on_raw_limit is not None:
                self.on_raw_limit()
            self.flush_file(largest)

    def _fit(self, line: bytes, cap: int) -> list[bytes]:
        """`line` cut into whole lines of at most `cap` bytes (each cut counted)."""
        if len(line) <= cap:
            return [line]
        first, rest = self._cut(line)
        return self._fit(first, cap) + self._fit(rest, cap)

    def _cut(self, line: bytes) -> tuple[bytes, bytes]:
        """`line` cut in two whole lines (partials.cut_line), counted."""
        if self.on_cut is not None:
            self.on_cut()
        first, rest = partials.cut_line(line)
        if max(len(first), len(rest)) >= len(line):  # its head is over half of it: bytes only
            half = len(line) // 2
            first, rest = line[:half] + b"\n", line[half:]
        return first, rest

    def _move_offset(self, key: FileKey, safe_offset: int, now: float) -> None:
        op = self.open.get(key)
        if op is not None:
            op.safe_offset = safe_offset
        elif safe_offset != self.last_safe.get(key):
            self.tracker.mark(key, safe_offset, 0, now)  # settles when its turn comes
        self.last_safe[key] = safe_offset

    def held_bytes(self, stream: str | None = None) -> int:
        """Bytes of lines in records not closed yet: all, or those for `stream`."""
        return self.raw[stream] if stream is not None else self.raw.total()

    def restart_file(self, key: FileKey) -> None:
        """The file was truncated in place: close what was read before, start again at 0."""
        self.flush_file(key)
        self.last_safe[key] = 0

    def flush_aged(self, now: float) -> None:
        """Once a record's oldest line waited flush_interval, close every open record of its
        stream at that tick, and queue them together (with --multiline, not one whose last
        line may still be continued and came within the flush timeout).

        One tick per stream and interval, not one per file: closed one by one as each file's
        first line ages, records would go out in a call each (measured: 8 calls/s for a node
        of 30 quiet containers at --flush-interval 1, against the stream's calls/s quota);
        together they share one call. Younger lines go out early, never late.
        """
        deadline = now - self.cfg.flush_interval
        closable = [(k, op) for k, op in self.open.items() if not self._event_may_go_on(op, now)]
        due = {op.stream for _, op in closable if op.born <= deadline}
        for stream in due:
            self._close_together(stream, closable)

    def flush_stream(self, stream: str) -> None:
        """Close every open record of `stream` now, queued together (its lane is full of
        open records: nothing in flight could free room before the tick)."""
        self._close_together(stream, list(self.open.items()))
        self.queues[stream].hurry()

    def _close_together(self, stream: str, candidates: list[tuple[FileKey, OpenRecord]]) -> None:
        with self.queues[stream].holding():  # no sender takes a call until all are in
            for key, op in candidates:
                if op.stream == stream:
                    self._close(key, op)

    def _event_may_go_on(self, op: OpenRecord, now: float) -> bool:
        if self.open_event is None or now - op.last_added >= self.cfg.multiline_flush_timeout:
            return False
        return self.open_event(op.last_line())

    def flush_file(self, key: FileKey) -> None:
        """Close the open record of one file, if any."""
        op = self.open.get(key)
        if op is not None:
            self._close(key, op)

    def flush_all(self) -> None:
        """Close every open record."""
        for key in list(self.open):
            self.flush_file(key)

    def _open(self, key: FileKey, now: float) -> OpenRecord:
        op = self.open.get(key)
        if op is None:
            stream = self.streams[key]
            op = self.open[key] = OpenRecord(self.last_safe.get(key, 0), stream, born=now)
        return op

    def _close(self, key: FileKey, op: OpenRecord) -> None:
        del self.open[key]
        self.raw[op.stream] -= op.size
        payload = b"".join(op.parts)
        op.parts = []  # the pieces are garbage now, before encoding makes its own copies
        if not payload:
            datas: list[tuple[bytes, int]] = []
        elif self.cfg.one_line_per_record:
            datas = [(line + b"\n", 1) for line in payload.split(b"\n")[:-1]]
        else:
            head, without_metadata = self._header(key)
            datas = self._encode(head, payload)
            if without_metadata and self.metadata is not None:
                self.metadata.missing(len(datas))
        # A mark without records (only an offset move) settles as soon as its turn comes.
        held = len(payload) + RECORD_MEMORY * len(datas)
        mark = self.tracker.mark(key, op.safe_offset, len(datas), op.born, held)
        if datas:
            self.records_made += len(datas)
            self.queues[op.stream].put([Record(d, mark, lines) for d, lines in datas])

    @property
    def _metadata_reserve(self) -> int:
        return limits.METADATA_RESERVE if self.metadata is not None else 0

    def _header(self, key: FileKey) -> tuple[bytes, bool]:
        """(the file's header, with the pod's metadata as ``k8s=`` when that is on and
        known; True when it is on and not known)."""
        head = self.headers[key]
        if self.metadata is None or not head:
            return head, False
        found = self.metadata.header_field(self.sources[key])
        if found is None:
            return head, True
        return with_field(head, K8S, found), False

    def oldest_open(self) -> float | None:
        """Monotonic time the oldest line not yet closed into a record was read."""
        return min((op.born for op in self.open.values()), default=None)

    def _encode(self, head: bytes, payload: bytes) -> list[tuple[bytes, int]]:
        """(record, lines in it) for `payload`, split in two until each record fits: at the
        line boundary nearest the middle, or — for a single line that does not fit even
        alone (incompressible) — by cutting the line into two lines (partials.cut_line)."""
        data, lines = self.encoder.encode_counted(head, payload)
        if len(data) <= firehose_limits.MAX_RECORD_BYTES:
            return [(data, lines)]
        cut = line_boundary_near_middle(payload)
        if cut:
            first, rest = payload[:cut], payload[cut:]
        else:
            first, rest = self._cut(payload)
        return self._encode(head, first) + self._encode(head, rest)


def line_boundary_near_middle(payload: bytes) -> int:
    """The offset just after the line feed nearest the middle of `payload` (LF-terminated
    lines), or 0 when it holds a single line.

    >>> line_boundary_near_middle(b"a\\nbbbbbbbbbb\\nc\\n"), line_boundary_near_middle(b"one\\n")
    (13, 0)
    """
    half = len(payload) // 2
    before = payload.rfind(b"\n", 0, half)
    after = payload.find(b"\n", half, len(payload) - 1)
    if after < 0:
        return before + 1
    if before < 0 or after - half < half - before:
        return after + 1
    return before + 1
