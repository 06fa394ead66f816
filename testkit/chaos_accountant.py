"""The chaos harness's loss accountant: every line the endpoint accepted, against every line
the writers wrote (testkit/chaos_lines.py says what is accepted for each).

lost: a whole line never arrived, or a physical piece of a line in pieces is in no line that
arrived. corrupt: a line arrived that was never written (a half, a garbled or an extra line),
or a record could not be decoded. duplicated: lines (or pieces) that arrived more than once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from testkit.chaos_lines import LONG_LINE, Piece, Writer, key
from testkit.forwarder import decode

SAMPLES = 10


@dataclass
class Tally:
    """What the accountant found."""

    written: int = 0  # logical lines
    delivered: int = 0  # lines accepted by the endpoint (duplicates and parts included)
    lost: int = 0
    corrupt: int = 0
    duplicated: int = 0
    duplicated_bytes: int = 0
    lost_sample: list[str] = field(default_factory=list)  # which writer, where
    corrupt_sample: list[str] = field(default_factory=list)  # length and first bytes


class Accountant:
    """Counts accepted lines (the endpoint's sink) and compares them with the writers'."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: Counter[bytes] = Counter()
        self.long_heads: dict[bytes, str] = {}  # digest key -> what the long line looked like
        self.undecodable: list[str] = []

    def on_records(self, stream: str, datas: list[bytes]) -> None:
        """The endpoint's sink: count the lines of accepted records."""
        del stream
        keys: list[bytes] = []
        for data in datas:
            try:
                lines = decode(data)[1]
            except Exception as exc:  # a record the transform cannot read is corrupt
                with self.lock:
                    self.undecodable.append(f"record of {len(data)} bytes: {exc!r}"[:200])
                continue
            for line in lines:
                k = key(line)
                keys.append(k)
                if len(line) > LONG_LINE and k not in self.long_heads:
                    self.long_heads[k] = describe(line)
        with self.lock:
            self.received.update(keys)

    def delivered_count(self) -> int:
        """Lines accepted so far (duplicates included)."""
        with self.lock:
            return self.received.total()

    def all_in(self, keys: Iterable[bytes]) -> bool:
        """Every one of `keys` arrived."""
        with self.lock:
            return all(self.received[k] for k in keys)

    def piece_in(self, piece: Piece) -> bool:
        """Every physical piece of a line in pieces arrived (joined or not)."""
        covered = [False] * len(piece.texts)
        with self.lock:
            if self.received[piece.joined_key]:
                return True
            for k, (lo, hi) in piece.accepted.items():
                if self.received[k]:
                    covered[lo:hi] = [True] * (hi - lo)
        return all(covered)

    def oldest_wait(self, writers: Iterable[Writer], now: float) -> float:
        """Seconds the oldest whole line not yet delivered has waited (0: none waits)."""
        oldest = now
        with self.lock:
            for w in writers:
                while w.lag_cursor < len(w.expected) and self.received[w.expected[w.lag_cursor]]:
                    w.lag_cursor += 1
                if w.lag_cursor < len(w.times):
                    oldest = min(oldest, w.times[w.lag_cursor])
        return now - oldest

    def tally(self, writers: list[Writer]) -> Tally:
        """Compare everything written with everything accepted."""
        with self.lock:
            have = Counter(self.received)
            undecodable = list(self.undecodable)
        t = Tally(delivered=have.total(), corrupt=len(undecodable))
        t.corrupt_sample += undecodable[:SAMPLES]
        wanted = self._whole_lines(writers, have, t)
        unknown = Counter({k: n for k, n in have.items() if k not in wanted})
        cover = self._cover([p for w in writers for p in w.pieces], unknown)
        t.corrupt += unknown.total()
        for k, n in list(unknown.items())[: max(0, SAMPLES - len(t.corrupt_sample))]:
            t.corrupt_sample.append(f"x{n} " + self.long_heads.get(k, describe(k)))
        for w in writers:
            for piece in w.pieces:
                self._piece(w, piece, cover.get(piece.ident, [0] * len(piece.texts)), t)
        return t

    @staticmethod
    def _cover(pieces: list[Piece], unknown: Counter[bytes]) -> dict[str, list[int]]:
        """How often each physical piece arrived, per line in pieces; the keys that are
        (parts of) such lines are taken out of `unknown`."""
        cover: dict[str, list[int]] = {}

        def add(piece: Piece, lo: int, hi: int, n: int) -> None:
            counts = cover.setdefault(piece.ident, [0] * len(piece.texts))
            for i in range(lo, hi):
                counts[i] += n

        joined = {p.joined_key: p for p in pieces}
        for k in [k for k in unknown if k in joined]:
            add(joined[k], 0, len(joined[k].texts), unknown.pop(k))
        if unknown:  # parts: rare, and costly to list
            parts = {k: (p, lo, hi) for p in pieces for k, (lo, hi) in p.accepted.items()}
            for k in [k for k in unknown if k in parts]:
                add(*parts[k], unknown.pop(k))
        return cover

    @staticmethod
    def _whole_lines(writers: list[Writer], have: Counter[bytes], t: Tally) -> set[bytes]:
        """Account whole lines; return their keys."""
        wanted: set[bytes] = set()
        for w in writers:
            t.written += len(w.expected) + len(w.pieces)
            wanted.update(w.expected)
            for i, k in enumerate(w.expected):
                n = have[k]
                if not n:
                    t.lost += 1
                    if len(t.lost_sample) < SAMPLES:
                        t.lost_sample.append(f"{where(w)} line {i + 1} of {len(w.expected)}")
                elif n > 1:
                    t.duplicated += n - 1
                    t.duplicated_bytes += (n - 1) * (int(k[1 : k.index(b":")])
                                                     if k.startswith(b"#") else len(k))  # fmt: skip
        return wanted

    @staticmethod
    def _piece(w: Writer, piece: Piece, counts: list[int], t: Tally) -> None:
        """Account one line in pieces from how often each piece arrived."""
        missing = [i for i, n in enumerate(counts) if not n]
        if missing:
            t.lost += 1
            if len(t.lost_sample) < SAMPLES:
                t.lost_sample.append(f"{where(w)} {piece.ident}: pieces {missing} missing")
        extra = [n - 1 for n in counts if n > 1]
        if extra:
            t.duplicated += max(extra)
            t.duplicated_bytes += sum(
                (n - 1) * len(text.encode()) for n, text in zip(counts, piece.texts, strict=True)
                if n > 1
            )  # fmt: skip


def where(w: Writer) -> str:
    """A writer, for samples."""
    return f"{w.name} ({w.kind}, {w.container.runtime}, {w.rotation})"


def describe(line: bytes) -> str:
    """A line for samples: its length and first bytes."""
    return f"{len(line)} bytes: {line[:100]!r}"
