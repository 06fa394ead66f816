"""Model-based test of the forwarder's tailer (issue 20): a seeded random walk of operations
on a temp node — writes, partial pieces, rotations, copytruncate, deletions, new pods (reusing
freed inodes), SIGKILL and restart, Firehose faults — against the real `python -m forwarder`
and the local Firehose endpoint; then a final drain and an exact account of every byte.

The model. Every physical line written is a *piece* with a unique id, carried in its
timestamp (`2024-05-01T10:00:00.<id>Z`). A logical line is one piece (a complete line) or
pieces on one stream of one container ended by a last piece (Docker: `log` ending with the
`\\n` escape; CRI: tag `F`). The forwarder may ship a logical line whole or in consecutive
runs of pieces (an unfinished piece shipped when its file is drained, or after waiting too
long), each run with the head of its first piece (forwarder/partials.py):
    Docker: {"log":"<the runs' log strings>","stream":"<s>","time":"<first piece's>"}
    CRI:    <first piece's time> <s> F <the runs' texts>
Each delivered line is matched to the run of pieces it must be; every piece must be covered
exactly once: more only after a SIGKILL, within what it can leave unacknowledged.

Only what the forwarder could have seen is demanded: a pod is deleted, a rotated file pruned
and a live file rotated only once each file was delivered, or the running forwarder held it
open (/proc/PID/fd), or could find it by its glob for a second (a file created and rotated
within one scan interval is a documented limit); what a copytruncate cut before the forwarder
shipped it, and what a SIGKILL left undelivered in deleted files, is excused (it may arrive).

A failing walk is reduced (prefix bisection, then delta debugging of the recorded steps) and
printed as a `replay([...])` call.

    python -m testkit.tailer_model --seed 1 --steps 2000            # one long walk
    python -m testkit.tailer_model --minutes 30 --steps 400         # walks until time is up
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.firehose_endpoint import FOREVER, FirehoseEndpoint
from testkit.forwarder import ForwarderProc, Node
from testkit.lines import cri_line, docker_line
from transform_lambda.decompress import decode_payload
from transform_lambda.wire_decoder import split_header

TIME_PREFIX = b"2024-05-01T10:00:00."
TIME_LEN = len(TIME_PREFIX) + 10  # nine digits of id, then Z
DOCKER_LOG = b'{"log":"'
DOCKER_STREAM = b'","stream":"'
DOCKER_TIME = b'","time":"'
DOCKER_TAIL = len(DOCKER_TIME) + TIME_LEN + 3  # ","time":"<time>"}\n
KEEP_ROTATED = 2  # rotated files kept per container: small, so pruning frees inodes often
HOLD_WAIT = 2.0  # seconds a delete/rotate waits for the forwarder to hold the files open
# A file the running forwarder could find by its glob this long (5 scan intervals) must have
# been opened: losing sight of it then is the forwarder's fault, not a documented limit.
FINDABLE = 1.0
MAX_EXCUSED = 50  # pieces a copytruncate may cut before they were shipped (else it waits)
PIECE_SPLIT = 16384  # the runtimes' piece size for long lines
FAULTS = ("throttle", "server_error", "drop", "fail_records")
MALFORMED = ("missing", "short", "garbage")
STREAMS = ("stdout", "stderr")
# Printable ASCII without '"' and '\\': needs no JSON escaping, ~6.5 bits of entropy a byte.
NOISE = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')
NOISE_TABLE = bytes(NOISE[i % len(NOISE)] for i in range(256))


# ----- settings


@dataclass(frozen=True)
class Profile:
    """Forwarder limits and the sizes of the model's writes."""

    name: str
    buffer_bytes: int
    line_bytes: int
    record_bytes: int
    bulk_bytes: tuple[int, int]  # a bulk write (to fill the buffer)
    big_bytes: tuple[int, int]  # one incompressible line

    def flags(self) -> tuple[str, ...]:
        """The forwarder's flags."""
        return (
            "--max-buffer-bytes", str(self.buffer_bytes), "--max-line-bytes",
            str(self.line_bytes), "--max-record-bytes", str(self.record_bytes),
            "--send-concurrency", "2", "--shutdown-timeout", "5",
        )  # fmt: skip

    def resend_per_kill(self) -> int:
        """What one SIGKILL may send again: the unacknowledged bytes (at most the buffer plus
        one read) and what was acknowledged after the last offset save (0.2 s; generous)."""
        return self.buffer_bytes + self.line_bytes + 2 * 1024 * 1024


PROFILES = {
    # Small limits: the buffer fills fast, records are small.
    "small": Profile("small", 256 * 1024, 64 * 1024, 128 * 1024, (64_000, 400_000),
                     (24_000, 62_000)),
    # Lines near Firehose's record limit: two incompressible ~650 KB lines exceed 1,024,000
    # bytes compressed, so one record of both must be split between them.
    "big": Profile("big", 4 * 1024 * 1024, 700_000, 2 * 1024 * 1024, (1_000_000, 5_000_000),
                   (600_000, 690_000)),
}  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One operation of a walk; its repr is the call that makes it (for replay)."""

    op: str
    args: tuple[tuple[str, Any], ...] = ()

    def __repr__(self) -> str:
        args = "".join(f", {key}={value!r}" for key, value in self.args)
        return f"step({self.op!r}{args})"


def step(op: str, **args: Any) -> Step:
    """A Step: step("write", c=0, stream="stdout", n=3, size=40)."""
    return Step(op, tuple(args.items()))


# ----- the model: pieces, logical lines, files, containers


@dataclass(eq=False)
class Piece:
    """One physical line written: a whole logical line or a piece of one."""

    pid: int
    line: LogicalLine
    index: int  # in its logical line
    text: bytes  # as in the file: Docker's JSON-escaped log string, CRI's text
    file: FileModel
    delivered: int = 0
    excused: str = ""  # why it may be missing, if it may

    @property
    def time(self) -> bytes:
        """The timestamp carrying the id."""
        return TIME_PREFIX + b"%09dZ" % self.pid

    def describe(self) -> str:
        """Where it was written, for failure messages."""
        line = self.line
        return (
            f"{line.box.name}/{line.box.runtime} {self.file.describe()} {line.stream} "
            f"line {line.number} piece {self.index + 1}/{len(line.pieces)}"
            f"{'' if line.done else ' (unfinished)'}: {self.text[:60]!r}"
        )


@dataclass(eq=False)
class LogicalLine:
    """Pieces on one stream of one container, up to the last piece."""

    box: Box
    stream: str
    number: int
    pieces: list[Piece] = field(default_factory=list)
    done: bool = False

    def size(self) -> int:
        """Text bytes so far."""
        return sum(len(p.text) for p in self.pieces)

    def render(self, first: Piece, text: bytes) -> bytes:
        """The line the forwarder ships for a run of pieces from `first` with this text."""
        s = self.stream.encode()
        if self.box.runtime == "docker":
            return DOCKER_LOG + text + DOCKER_STREAM + s + DOCKER_TIME + first.time + b'"}\n'
        return first.time + b" " + s + b" F " + text + b"\n"


@dataclass(eq=False)
class FileModel:
    """One file (inode) the model created: a container's log, a rotated one, a copy."""

    path: Path
    key: tuple[int, int]
    pieces: list[Piece] = field(default_factory=list)
    history: list[str] = field(default_factory=list)  # rotated, truncated, pruned, deleted
    seen_by: set[int] = field(default_factory=set)  # forwarder generations that held it open
    created: float = field(default_factory=time.monotonic)
    rotated_at: float | None = None  # when its path stopped matching the glob
    gone: bool = False  # unlinked

    def describe(self) -> str:
        """Name and history."""
        return f"{self.path.name}{' [' + ', '.join(self.history) + ']' if self.history else ''}"

    def undelivered(self) -> list[Piece]:
        """Pieces neither delivered nor excused."""
        return [p for p in self.pieces if not p.delivered and not p.excused]


@dataclass(eq=False)
class Box:
    """A container: its current log file, its rotated files, its open logical lines."""

    name: str
    runtime: str
    link: Path
    target: Path
    files: list[FileModel] = field(default_factory=list)  # files[-1] is the live file
    open: dict[str, LogicalLine] = field(default_factory=dict)
    lines: int = 0
    rotations: int = 0
    copies: int = 0
    deleted: bool = False

    @property
    def src(self) -> str:
        """The source file name the forwarder puts in its record headers."""
        return self.link.name

    @property
    def live(self) -> FileModel:
        """The file the container writes to."""
        return self.files[-1]

    def rotated(self) -> list[FileModel]:
        """Rotated files still on disk, oldest first."""
        return [f for f in self.files[:-1] if not f.gone and "copy" not in f.history]


class Model:
    """Every piece written, and the account of every line received."""

    def __init__(self) -> None:
        self.pieces: dict[bytes, Piece] = {}  # by timestamp
        self.next_pid = 1
        self.files: dict[tuple[int, int], FileModel] = {}  # the latest file of each inode
        self.all_files: list[FileModel] = []
        self.inode_reuses = 0
        self.received: list[tuple[str | None, bytes]] = []
        self.received_lock = threading.Lock()
        self.lines_received = 0
        self.extra: list[bytes] = []  # lines that are no run of written pieces
        self.misplaced: list[str] = []  # lines shipped under another container's name
        self.undecodable: list[str] = []

    # --- writing
    def add_file(self, path: Path) -> FileModel:
        """A new file just created at `path`."""
        st = path.stat()
        key = (st.st_dev, st.st_ino)
        self.inode_reuses += key in self.files
        f = self.files[key] = FileModel(path, key)
        self.all_files.append(f)
        return f

    def piece(self, box: Box, stream: str, text: bytes, last: bool) -> Piece:
        """Record a piece about to be written to the box's live file."""
        line = box.open.get(stream)
        if line is None:
            box.lines += 1
            line = LogicalLine(box, stream, box.lines)
        p = Piece(self.next_pid, line, len(line.pieces), text, box.live)
        self.next_pid += 1
        line.pieces.append(p)
        box.live.pieces.append(p)
        self.pieces[p.time] = p
        line.done = last
        if last:
            box.open.pop(stream, None)
        else:
            box.open[stream] = line
        return p

    # --- receiving (endpoint threads)
    def receive(self, stream: str, datas: list[bytes]) -> None:
        """The endpoint's sink: keep decoded lines; never raise (the endpoint would fail)."""
        del stream
        got: list[tuple[str | None, bytes]] = []
        for data in datas:
            try:
                header, body = split_header(decode_payload(data))
            except Exception as exc:  # a record the transform cannot read is a finding
                self.undecodable.append(f"{type(exc).__name__}: {exc}")
                continue
            src = header.source_file if header else None
            lines = body.split(b"\n")
            got += [(src, line + b"\n") for line in lines[:-1]]
            if lines[-1]:
                got.append((src, lines[-1]))  # no '\n' at the end of the record: extra
        with self.received_lock:
            self.received += got

    # --- the account (main thread)
    def absorb(self) -> None:
        """Match the lines received since the last call to the pieces they carry."""
        with self.received_lock:
            got, self.received = self.received, []
        for src, line in got:
            self.lines_received += 1
            self.match(src, line)

    def match(self, src: str | None, line: bytes) -> None:
        """Cover the run of pieces `line` is, or record it as extra."""
        first = self.first_piece(line)
        run = first and self.run_of(first, line)
        if not first or not run:
            self.extra.append(line)
            return
        for p in run:
            p.delivered += 1
        if src != first.line.box.src:
            self.misplaced.append(f"{first.describe()} shipped as {src!r}")

    def first_piece(self, line: bytes) -> Piece | None:
        """The piece whose timestamp heads the line."""
        if line.startswith(DOCKER_LOG):
            time_ = line[-DOCKER_TAIL + len(DOCKER_TIME) : -3]
        else:
            time_ = line[:TIME_LEN]
        return self.pieces.get(time_)

    def run_of(self, first: Piece, line: bytes) -> list[Piece] | None:
        """The pieces from `first` on whose joined text makes exactly `line`, if any."""
        logical = first.line
        overhead = len(logical.render(first, b""))
        want, size = len(line) - overhead, 0
        for end in range(first.index, len(logical.pieces)):
            size += len(logical.pieces[end].text)
            if size >= want:
                run = logical.pieces[first.index : end + 1]
                text = b"".join(p.text for p in run)
                return run if size == want and logical.render(first, text) == line else None
        return None

    # --- questions
    def missing(self, skip_open: bool = False) -> list[Piece]:
        """Pieces that must arrive and did not (optionally not those of unfinished lines)."""
        return [
            p
            for p in self.pieces.values()
            if not p.delivered and not p.excused and not (skip_open and not p.line.done)
        ]

    def delivered_pieces(self) -> int:
        """Piece deliveries so far (a measure of progress)."""
        return sum(p.delivered for p in self.pieces.values())


# ----- the forwarder's view


def noise(seed: int, size: int) -> bytes:
    """`size` incompressible printable bytes that need no JSON escaping."""
    return random.Random(seed).randbytes(size).translate(NOISE_TABLE)


# ----- results


@dataclass
class Result:
    """What one walk found."""

    profile: str
    steps: list[Step]
    seconds: float
    pieces: int
    lines: int
    lines_received: int
    lost: list[Piece]
    stalled: list[Piece]  # complete lines not delivered while only unfinished pieces waited
    duplicated_bytes: int
    duplicated: list[Piece]
    extra: list[bytes]
    misplaced: list[str]
    undecodable: list[str]
    kills: int
    exit_code: int | None
    died: list[str]
    ops: Counter[str]
    notes: list[str]
    logs: str = ""

    @property
    def allowed_resend(self) -> int:
        """Duplicate bytes the SIGKILLs may explain."""
        return self.kills * PROFILES[self.profile].resend_per_kill()

    @property
    def kinds(self) -> list[str]:
        """The kinds of failure found, most telling first."""
        checks = (
            ("lost", bool(self.lost)),
            ("stalled", bool(self.stalled)),
            ("extra", bool(self.extra or self.undecodable)),
            ("misplaced", bool(self.misplaced)),
            ("duplicated", self.duplicated_bytes > self.allowed_resend),
            ("died", bool(self.died)),
            ("exit", self.exit_code != 0),
        )
        return [kind for kind, failed in checks if failed]

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing extra, duplicates explained, exit 0."""
        return not self.kinds

    def report(self) -> str:
        """A failure message: what went wrong, with samples."""
        head = (
            f"tailer model {'passed' if self.ok else 'FAILED: ' + ', '.join(self.kinds)} "
            f"(profile {self.profile}, {len(self.steps)} steps, {self.kills} kills, "
            f"{self.seconds:.1f} s): {self.lines} lines in {self.pieces} pieces written, "
            f"{self.lines_received} lines received"
        )
        out = [head, *self._samples()]
        out.append("ops: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items())))
        out += self.notes
        return "\n".join(out)

    def _samples(self) -> Iterator[str]:
        if self.lost:
            files = {p.file.describe() for p in self.lost}
            yield f"LOST {len(self.lost)} pieces ({sum(len(p.text) for p in self.lost)} bytes)"
            yield f"  in {len(files)} files: {', '.join(sorted(files)[:8])}"
            yield from (f"  {p.describe()}" for p in self.lost[:6])
        if self.stalled:
            yield (
                f"STALLED: {len(self.stalled)} pieces of complete lines were not delivered "
                "while only unfinished pieces were pending (they came once those finished)"
            )
            yield from (f"  {p.describe()}" for p in self.stalled[:4])
        if self.duplicated:
            yield (f"duplicated {len(self.duplicated)} pieces, {self.duplicated_bytes} bytes "
                   f"(allowed by {self.kills} kills: {self.allowed_resend})")  # fmt: skip
            if self.duplicated_bytes > self.allowed_resend:
                yield from (f"  x{p.delivered} {p.describe()}" for p in self.duplicated[:4])
        if self.extra:
            yield f"EXTRA {len(self.extra)} lines that are no run of written pieces (half lines?)"
            for line in self.extra[:5]:
                shown = repr(line) if len(line) <= 160 else f"{line[:100]!r}...{line[-60:]!r}"
                yield f"  {len(line)} bytes: {shown}"
        if self.undecodable:
            yield f"UNDECODABLE records: {len(self.undecodable)}: {self.undecodable[:3]}"
        if self.misplaced:
            yield f"MISPLACED {len(self.misplaced)}: {self.misplaced[:3]}"
        yield from (f"DIED {d}" for d in self.died)
        if self.exit_code != 0:
            yield f"EXIT: SIGTERM ended the forwarder with {self.exit_code}"
        if self.logs and not self.ok:
            yield f"forwarder log tail:\n{self.logs}"


# ----- the runner


class Runner:
    """Executes steps against a real forwarder and the local endpoint, then drains."""

    def __init__(self, root: Path, profile: Profile, stall: float = 10.0) -> None:
        self.root = root
        self.profile = profile
        self.stall = stall
        self.node = Node(root / "node")
        self.db = root / "state" / "offsets.db"
        self.model = Model()
        self.endpoint = FirehoseEndpoint(sink=self.model.receive, store=False)
        self.boxes: dict[int, Box] = {}
        self.proc: ForwarderProc | None = None
        self.procs: list[ForwarderProc] = []
        self.generation = 0
        self.kills = 0
        self.faulty = False
        self.slowed = False
        self.steps: list[Step] = []
        self.ops: Counter[str] = Counter()
        self.died: list[str] = []
        self.notes: list[str] = []
        self.exit_code: int | None = None
        self.ready_at: float | None = None  # when the current forwarder first answered
        self.ever_ready = False  # some forwarder answered (and so scanned) since the start
        self.stalled: list[Piece] = []
        self.writes = 0

    @property
    def running(self) -> bool:
        """A forwarder is up (as far as the walk knows)."""
        return self.proc is not None

    def live_boxes(self) -> list[Box]:
        """Containers not deleted."""
        return [b for b in self.boxes.values() if not b.deleted]

    # --- the run
    def run(self, steps: Iterable[Step]) -> Result:
        """Start, execute `steps` (a lazy iterable may look at the runner), drain, account."""
        started = time.monotonic()
        self.endpoint.start()
        try:
            self.start()
            for s in steps:
                self.steps.append(s)
                self.execute(s)
            self.drain()
        finally:
            for proc in self.procs:
                proc.stop()
            self.endpoint.stop()
        return self.result(time.monotonic() - started)

    def execute(self, s: Step) -> None:
        """One step; steps that do not apply (any more, in a reduced list) are skipped."""
        done = getattr(self, "op_" + s.op)(**dict(s.args))
        self.ops[s.op if done is not False else s.op + "-skipped"] += 1
        self.watch()

    def watch(self) -> None:
        """Note which files the forwarder holds open, and whether it died."""
        if self.proc is None or self.proc.proc is None:
            return
        code = self.proc.proc.poll()
        if code is not None:
            self.died.append(f"after step {len(self.steps)} with code {code}")
            self.proc = None
            return
        for key in self.proc.held():
            f = self.model.files.get(key)
            if f is not None:
                f.seen_by.add(self.generation)
        if self.ready_at is None and self.proc.up():
            self.ready_at = time.monotonic()
            self.ever_ready = True

    def pause(self, seconds: float) -> None:
        """Sleep, watching the forwarder."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.1, left))
            self.watch()

    # --- the forwarder
    def start(self) -> None:
        """Start a forwarder (the same offsets DB every time)."""
        proc = ForwarderProc(self.endpoint.url, self.node, self.db, *self.profile.flags())
        self.procs.append(proc.start())
        self.proc = proc
        self.generation += 1
        self.ready_at = None

    def op_start(self) -> bool:
        """Restart after a kill."""
        if self.running:
            return False
        self.start()
        return True

    def op_kill(self) -> bool:
        """SIGKILL. A deleted file's lines not delivered by then are lost to any tailer."""
        if self.proc is None:
            return False
        self.proc.signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self.kills += 1
        self.model.absorb()
        for f in self.model.all_files:
            if f.gone:
                for p in f.undelivered():
                    p.excused = "its file was deleted, then the forwarder was killed"
        return True

    # --- the endpoint
    def op_fault(self, kind: str) -> bool:
        """An outage: throttling, 500s, dropped connections or failed records, until cleared."""
        ep = self.endpoint
        {"throttle": ep.throttle, "server_error": ep.server_error,
         "drop": ep.drop_connections, "fail_records": ep.fail_records}[kind](FOREVER)  # fmt: skip
        self.faulty = True
        return True

    def op_clear(self) -> bool:
        """End every fault and delay."""
        self.endpoint.clear_faults()
        self.faulty = self.slowed = False
        return True

    def op_slow(self, seconds: float) -> bool:
        """Slow acknowledgements."""
        self.endpoint.delay(seconds)
        self.slowed = True
        return True

    def op_malformed(self, calls: int, shape: str) -> bool:
        """200 answers of a shape Firehose never sends, accepting nothing."""
        self.endpoint.malformed_answers(calls, shape)
        return True

    def op_sleep(self, seconds: float) -> bool:
        """Let time pass."""
        self.pause(seconds)
        return True

    # --- containers
    def op_add(self, c: int, runtime: str) -> bool:
        """A new pod (its file may get an inode just freed)."""
        if c in self.boxes:
            return False
        container = self.node.add(f"p{c}", runtime)
        box = Box(f"c{c}", runtime, container.link, container.target)
        box.files.append(self.model.add_file(box.target))
        self.boxes[c] = box
        return True

    def box(self, c: int) -> Box | None:
        """A container that can still be written to."""
        box = self.boxes.get(c)
        return box if box is not None and not box.deleted else None

    def emit(self, box: Box, entries: list[tuple[str, bytes, bool]]) -> None:
        """Write (stream, text, last) entries as the runtime does: model first, then file."""
        data = bytearray()
        for stream, text, last in entries:
            p = self.model.piece(box, stream, text, last)
            if box.runtime == "docker":
                log = text.decode() + ("\n" if last else "")
                data += docker_line(log, stream, p.time.decode())
                if last:
                    p.text += b"\\n"
            else:
                data += cri_line(text.decode(), stream, "F" if last else "P", p.time.decode())
        with open(box.target, "ab") as f:
            f.write(data)

    def line_text(self, box: Box, stream: str, size: int) -> bytes:
        """Readable text of a line: who, which write, filler."""
        self.writes += 1
        return f"{box.name} {stream[:3]} w{self.writes} ".encode() + b"x" * size

    def op_write(self, c: int, stream: str, n: int, size: int) -> bool:
        """`n` complete lines (the first finishes the stream's unfinished line, if any)."""
        box = self.box(c)
        if box is None:
            return False
        self.emit(box, [(stream, self.line_text(box, stream, size), True) for _ in range(n)])
        return True

    def op_piece(self, c: int, stream: str, size: int) -> bool:
        """An unfinished piece (a finish instead, if the line grew near the line limit)."""
        box = self.box(c)
        if box is None:
            return False
        line = box.open.get(stream)
        last = line is not None and line.size() + size > self.profile.line_bytes // 4
        self.emit(box, [(stream, self.line_text(box, stream, size) + b" ", last)])
        return True

    def op_finish(self, c: int, stream: str, size: int) -> bool:
        """The last piece of the stream's unfinished line."""
        box = self.box(c)
        if box is None or stream not in box.open:
            return False
        self.emit(box, [(stream, b"end " + b"z" * size, True)])
        return True

    def op_big(self, c: int, sizes: tuple[int, ...], split: bool, seed: int) -> bool:
        """Incompressible lines near the line limit, whole or in 16 KB pieces."""
        box = self.box(c)
        free = [s for s in STREAMS if s not in box.open] if box is not None else []
        if box is None or not free:
            return False
        entries = []
        for i, size in enumerate(sizes):
            text = noise(seed + i, size)
            cut = PIECE_SPLIT if split else size
            chunks = [text[j : j + cut] for j in range(0, size, cut)]
            entries += [(free[0], t, j == len(chunks) - 1) for j, t in enumerate(chunks)]
        self.emit(box, entries)
        return True

    # --- rotation, truncation, deletion
    def known(self, f: FileModel) -> bool:
        """Losing sight of `f` (rotating it away, deleting it) loses nothing the forwarder
        could not have had: it is delivered, or the running forwarder held it open, or could
        find it by its glob for FINDABLE seconds."""
        if not f.undelivered():
            return True
        if self.proc is None:
            return False
        if self.generation in f.seen_by:
            return True
        end = f.rotated_at or time.monotonic()
        return self.ready_at is not None and end - max(f.created, self.ready_at) >= FINDABLE

    def knows(self, files: list[FileModel]) -> bool:
        """Each of `files` is known (waits up to HOLD_WAIT)."""
        deadline = time.monotonic() + HOLD_WAIT
        while True:
            self.model.absorb()
            if all(self.known(f) for f in files):
                return True
            if time.monotonic() >= deadline:
                return False
            self.pause(0.05)

    def delivered(self, files: list[FileModel], wait: float = HOLD_WAIT) -> bool:
        """Every piece of `files` delivered (waits up to `wait`)."""
        deadline = time.monotonic() + wait
        while True:
            self.model.absorb()
            if not any(f.undelivered() for f in files):
                return True
            if time.monotonic() >= deadline:
                return False
            self.pause(0.05)

    def op_rotate(self, c: int) -> bool:
        """Rename rotation as kubelet and dockerd do it: the oldest rotated files beyond
        KEEP_ROTATED pruned first (when safe), then 0.log -> 0.log.<ts> or -json.log -> .1
        (.1 -> .2, ...), then a new file, which gets a pruned file's inode on ext4."""
        box = self.box(c)
        if box is None or (self.running and not self.knows([box.live])):
            return False  # a file created and rotated unseen is a documented limit
        if not self.running and not self.ever_ready:
            return False  # rotated before any forwarder scanned: history, not read (docs)
        self.prune(box)
        box.rotations += 1
        if box.runtime == "docker":
            for f in sorted(box.rotated(), key=lambda f: -int(f.path.suffix[1:])):
                f.path = f.path.rename(f.path.with_suffix(f".{int(f.path.suffix[1:]) + 1}"))
            rotated = box.target.with_name(box.target.name + ".1")
        else:
            rotated = box.target.with_name(f"{box.target.name}.20240501-{box.rotations:06d}")
        box.live.path = box.target.rename(rotated)
        box.live.history.append("rotated")
        box.live.rotated_at = time.monotonic()
        box.target.touch()
        box.files.append(self.model.add_file(box.target))
        return True

    def prune(self, box: Box) -> None:
        """Delete the oldest rotated files, keeping KEEP_ROTATED - 1 (the rotation adds one),
        each only if the running forwarder held it or it was delivered."""
        for f in box.rotated()[: -(KEEP_ROTATED - 1)]:
            if self.known(f):
                f.path.unlink()
                f.gone = True
                f.history.append("pruned")

    def op_copytruncate(self, c: int, regrow: bool) -> bool:
        """Copy, then truncate in place; with `regrow`, at once write past the old size.
        What the forwarder had not read is excused: it is in the copy, lost to any tailer."""
        box = self.box(c)
        if box is None:
            return False
        live = box.live
        if self.running:
            self.delivered([live])  # give it a moment to catch up
        if len(live.undelivered()) > MAX_EXCUSED:
            return False  # the forwarder is far behind: most lines would be excused
        size = box.target.stat().st_size
        box.copies += 1
        copy = box.target.with_name(f"{box.target.name}-copy{box.copies}")
        shutil.copyfile(box.target, copy)
        self.model.add_file(copy).history.append("copy")
        with open(box.target, "r+b") as f:
            f.truncate(0)
        self.model.absorb()
        for p in live.undelivered():
            p.excused = "cut by a copytruncate before the forwarder shipped it"
        live.pieces = []
        live.history.append("truncated")
        if regrow:
            self.regrow(box, size)
        return True

    def regrow(self, box: Box, size: int) -> None:
        """Write complete lines past `size` bytes on a stream with no unfinished line."""
        stream = next((s for s in STREAMS if s not in box.open), "stdout")
        self.op_write(int(box.name[1:]), stream, size // 150 + 4, 100)

    def op_delete(self, c: int) -> bool:
        """A finished pod's files deleted (link and directory), once the running forwarder
        knows them (see `known`)."""
        box = self.box(c)
        files = [f for f in box.files if not f.gone] if box is not None else []
        if box is None or not self.running or not self.knows(files):
            return False
        box.link.unlink()
        shutil.rmtree(box.target.parent)
        for f in files:
            f.gone = True
            f.history.append("deleted")
        box.deleted = True
        return True

    # --- the end
    def drain(self) -> None:
        """Faults off; every complete line must arrive; then unfinished lines are finished
        and must arrive; then SIGTERM must exit 0."""
        self.op_clear()
        if not self.running:
            self.start()
        if not self.wait_delivered(skip_open=True, timeout=90):
            self.stalled = self.model.missing(skip_open=True)
        unfinished = [(box, stream) for box in self.live_boxes() for stream in box.open]
        for box, stream in unfinished:
            self.op_finish(int(box.name[1:]), stream, 8)
        if unfinished or not self.stalled:
            self.wait_delivered(skip_open=False, timeout=60)
        if self.proc is not None:
            self.proc.signal(signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(45)
            except Exception as exc:  # TimeoutExpired: killed by the cleanup
                self.notes.append(f"SIGTERM: no exit in 45 s ({type(exc).__name__})")
                self.exit_code = -1
        self.model.absorb()

    def wait_delivered(self, skip_open: bool, timeout: float) -> bool:
        """Until every demanded piece arrived (True), or no progress for `stall` s, or
        `timeout` (False)."""
        deadline = time.monotonic() + timeout
        progress, last_move = -1, time.monotonic()
        while True:
            self.model.absorb()
            if not self.model.missing(skip_open):
                return True
            now = time.monotonic()
            delivered = self.model.delivered_pieces()
            if delivered != progress:
                progress, last_move = delivered, now
            if now - last_move > self.stall or now > deadline:
                return False
            self.pause(0.1)

    def result(self, seconds: float) -> Result:
        """The account."""
        m = self.model
        m.absorb()
        pieces = list(m.pieces.values())
        dup = [p for p in pieces if p.delivered > 1]
        excused = Counter(p.excused for p in pieces if p.excused)
        self.notes.append(f"inode reuses: {m.inode_reuses}; excused pieces: {dict(excused)}")
        stalled = [p for p in self.stalled if p.delivered]  # late; lost ones count as lost
        return Result(
            profile=self.profile.name,
            steps=list(self.steps),
            seconds=seconds,
            pieces=len(pieces),
            lines=sum(1 for p in pieces if p.index == 0),
            lines_received=m.lines_received,
            lost=m.missing(),
            stalled=stalled,
            duplicated_bytes=sum((p.delivered - 1) * len(p.text) for p in dup),
            duplicated=dup,
            extra=m.extra,
            misplaced=m.misplaced,
            undecodable=m.undecodable,
            kills=self.kills,
            exit_code=self.exit_code,
            died=self.died,
            ops=self.ops,
            notes=self.notes,
            logs=self.log_tail(),
        )

    def log_tail(self, lines: int = 15) -> str:
        """The last warnings and errors the forwarders logged."""
        out = []
        for proc in self.procs:
            with contextlib.suppress(OSError):
                out += [
                    line
                    for line in proc.log().splitlines()
                    if '"WARNING"' in line or '"ERROR"' in line or "Traceback" in line
                ]
        return "\n".join(line[:300] for line in out[-lines:])


# ----- the random walk


class Walker:
    """Chooses the next step from the runner's state (seeded: the same seed, the same walk
    as long as the forwarder behaves the same)."""

    def __init__(self, rng: random.Random, runner: Runner, without: Iterable[str] = ()) -> None:
        self.rng = rng
        self.runner = runner
        self.without = frozenset(without)  # operations never chosen
        self.next_box = 0

    def steps(self, count: int) -> Iterator[Step]:
        """`count` steps, each chosen after the previous one ran."""
        for _ in range(count):
            yield self.choose()

    def choose(self) -> Step:
        """One step, by weight among those that apply now."""
        options = [(w, make) for w, make in self.options() if make.__name__ not in self.without]
        weights = [w for w, _ in options]
        make = self.rng.choices([m for _, m in options], weights)[0]
        return make()

    def options(self) -> list[tuple[float, Callable[[], Step]]]:
        """(weight, step maker) of every operation that applies now."""
        r = self.runner
        live = r.live_boxes()
        opts: list[tuple[float, Callable[[], Step]]] = [(3.0, self.sleep)]
        if len(live) < 6:
            opts.append((3.0 if len(live) < 3 else 1.0, self.add))
        if live:
            opts += [(6.0, self.write), (0.8, self.bulk), (2.0, self.piece), (0.4, self.big),
                     (1.5, self.rotate), (0.6, self.copytruncate)]  # fmt: skip
        if any(b.open for b in live):
            opts.append((2.0, self.finish))
        if r.running and live:
            opts.append((1.0, self.delete))
        opts.append((0.4, self.kill) if r.running else (4.0, self.start))
        opts.append((1.5, self.clear) if r.faulty or r.slowed else (0.8, self.fault))
        opts += [(0.3, self.slow), (0.3, self.malformed)]
        return opts

    def pick_box(self) -> int:
        """A live container's number."""
        return int(self.rng.choice(self.runner.live_boxes()).name[1:])

    def pick_stream(self, c: int) -> str:
        """A stream; usually the other one while a piece is open."""
        box = self.runner.boxes[c]
        other = [s for s in STREAMS if s not in box.open]
        if box.open and other and self.rng.random() < 0.7:
            return other[0]
        return self.rng.choice(STREAMS)

    def add(self) -> Step:
        """A new pod."""
        self.next_box += 1
        return step("add", c=self.next_box - 1, runtime=self.rng.choice(("cri", "docker")))

    def write(self) -> Step:
        """A few complete lines."""
        c = self.pick_box()
        n, size = self.rng.randint(1, 20), self.rng.randint(10, 300)
        return step("write", c=c, stream=self.pick_stream(c), n=n, size=size)

    def bulk(self) -> Step:
        """Enough lines to fill much of the buffer."""
        c = self.pick_box()
        total = self.rng.randint(*self.runner.profile.bulk_bytes)
        return step("write", c=c, stream=self.pick_stream(c), n=total // 250, size=200)

    def piece(self) -> Step:
        """An unfinished piece."""
        c = self.pick_box()
        return step("piece", c=c, stream=self.pick_stream(c), size=self.rng.randint(5, 200))

    def finish(self) -> Step:
        """Finish an unfinished line."""
        box = self.rng.choice([b for b in self.runner.live_boxes() if b.open])
        stream = self.rng.choice(sorted(box.open))
        return step("finish", c=int(box.name[1:]), stream=stream, size=self.rng.randint(1, 100))

    def big(self) -> Step:
        """Two incompressible lines near the line limit."""
        low, high = self.runner.profile.big_bytes
        sizes = (self.rng.randint(low, high), self.rng.randint(low, high))
        split = self.rng.random() < 0.5
        return step("big", c=self.pick_box(), sizes=sizes, split=split,
                    seed=self.rng.randrange(10**9))  # fmt: skip

    def rotate(self) -> Step:
        """A rename rotation."""
        return step("rotate", c=self.pick_box())

    def copytruncate(self) -> Step:
        """A copytruncate, sometimes regrown past the old offset at once."""
        return step("copytruncate", c=self.pick_box(), regrow=self.rng.random() < 0.4)

    def delete(self) -> Step:
        """A pod deleted."""
        return step("delete", c=self.pick_box())

    def kill(self) -> Step:
        """SIGKILL."""
        return step("kill")

    def start(self) -> Step:
        """Restart."""
        return step("start")

    def clear(self) -> Step:
        """End the faults."""
        return step("clear")

    def fault(self) -> Step:
        """An outage."""
        return step("fault", kind=self.rng.choice(FAULTS))

    def slow(self) -> Step:
        """Slow acknowledgements."""
        return step("slow", seconds=round(self.rng.uniform(0.2, 1.0), 2))

    def malformed(self) -> Step:
        """Malformed 200 answers."""
        return step("malformed", calls=self.rng.randint(1, 3), shape=self.rng.choice(MALFORMED))

    def sleep(self) -> Step:
        """A short pause; sometimes past the drain grace and the piece wait bound."""
        long = self.rng.random() < 0.15
        seconds = self.rng.uniform(2.0, 6.0) if long else self.rng.uniform(0.05, 1.2)
        return step("sleep", seconds=round(seconds, 2))


# ----- running, replaying, reducing


@contextlib.contextmanager
def workdir(root: Path | None) -> Iterator[Path]:
    """A temp directory (removed afterwards: files can be large)."""
    path = Path(tempfile.mkdtemp(prefix="tailer-model-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def walk(
    seed: int,
    count: int,
    profile: str = "small",
    root: Path | None = None,
    without: Iterable[str] = (),
) -> Result:
    """A seeded random walk of `count` steps (never choosing the operations `without`)."""
    with workdir(root) as path:
        runner = Runner(path, PROFILES[profile])
        return runner.run(Walker(random.Random(seed), runner, without).steps(count))


def run_steps(steps: list[Step], profile: str = "small", root: Path | None = None) -> Result:
    """Execute recorded steps."""
    with workdir(root) as path:
        return Runner(path, PROFILES[profile]).run(steps)


def replay(steps: list[Step], profile: str = "small") -> Result:
    """Run recorded steps; raise AssertionError with the report if they fail."""
    result = run_steps(steps, profile)
    assert result.ok, result.report()
    return result


def replay_code(steps: list[Step], profile: str) -> str:
    """Python that replays `steps`."""
    body = ",\n    ".join(repr(s) for s in steps)
    return (
        "from testkit.tailer_model import replay, step\n"
        f"replay([\n    {body},\n], profile={profile!r})"
    )


class Reducer:
    """Delta debugging of a failing step list, within a time budget: keeps a candidate when
    it fails with the same kind of failure."""

    def __init__(self, profile: str, kind: str, budget: float, root: Path | None) -> None:
        self.profile = profile
        self.kind = kind
        self.deadline = time.monotonic() + budget
        self.root = root
        self.runs = 0
        self.last: Result | None = None

    def out_of_time(self) -> bool:
        """The budget is spent."""
        return time.monotonic() >= self.deadline

    def fails(self, steps: list[Step]) -> bool:
        """The candidate still fails the same way."""
        self.runs += 1
        result = run_steps(steps, self.profile, self.root)
        if self.kind in result.kinds:
            self.last = result
            return True
        return False

    def reduce(self, steps: list[Step]) -> list[Step]:
        """The shortest failing prefix, then every step of one kind at once, then chunks
        (ddmin), while time allows."""
        steps = self.prefix(steps)
        steps = self.without_kinds(steps)
        return self.ddmin(steps)

    def without_kinds(self, steps: list[Step]) -> list[Step]:
        """Remove all steps of one operation at once (sleeps, writes, ...), most common first."""
        for op, _ in Counter(s.op for s in steps).most_common():
            candidate = [s for s in steps if s.op != op]
            if self.out_of_time():
                break
            if candidate and self.fails(candidate):
                steps = candidate
        return steps

    def prefix(self, steps: list[Step]) -> list[Step]:
        """Bisect the shortest prefix that still fails."""
        low, high = 1, len(steps)  # steps[:high] fails
        while low < high and not self.out_of_time():
            mid = (low + high) // 2
            if self.fails(steps[:mid]):
                high = mid
            else:
                low = mid + 1
        return steps[:high]

    def ddmin(self, steps: list[Step]) -> list[Step]:
        """Remove chunks of decreasing size while the rest fails."""
        parts = 2
        while len(steps) > 1 and not self.out_of_time():
            size = math.ceil(len(steps) / parts)
            for start in range(0, len(steps), size):
                candidate = steps[:start] + steps[start + size :]
                if self.out_of_time():
                    return steps
                if candidate and self.fails(candidate):
                    steps, parts = candidate, max(parts - 1, 2)
                    break
            else:
                if size == 1:
                    break
                parts = min(len(steps), parts * 2)
        return steps


@dataclass
class Outcome:
    """A walk, and if it failed, its reduction."""

    result: Result
    reduced: list[Step] | None = None
    reduced_result: Result | None = None
    runs: int = 0

    @property
    def ok(self) -> bool:
        """The walk passed."""
        return self.result.ok

    def message(self, seed: int) -> str:
        """The report, the reduced steps as replay code."""
        r = self.result
        out = [f"seed {seed}: {r.report()}"]
        if self.reduced is not None:
            out.append(
                f"reduced ({self.runs} runs) from {len(r.steps)} to {len(self.reduced)} steps "
                f"failing with {r.kinds[0]}:"
            )
            if self.reduced_result is not None:
                out.append(self.reduced_result.report())
            out.append(replay_code(self.reduced, r.profile))
        else:
            out.append(replay_code(r.steps, r.profile))
        return "\n".join(out)


def check(
    seed: int,
    count: int,
    profile: str = "small",
    reduce_seconds: float = 120.0,
    *,
    root: Path | None = None,
    without: Iterable[str] = (),
) -> Outcome:
    """Walk; on failure reduce the steps to a few that fail the same way."""
    print(f"tailer model: seed {seed}, {count} steps, profile {profile}", flush=True)
    result = walk(seed, count, profile, root, without)
    outcome = Outcome(result)
    if result.ok or reduce_seconds <= 0:
        return outcome
    reducer = Reducer(profile, result.kinds[0], reduce_seconds, root)
    outcome.reduced = reducer.reduce(result.steps)
    outcome.reduced_result = reducer.last
    outcome.runs = reducer.runs
    return outcome


def main(argv: list[str] | None = None) -> int:
    """The long run: one walk of --steps, or walks of successive seeds for --minutes."""
    parser = argparse.ArgumentParser(description="model-based test of the forwarder's tailer")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="small")
    parser.add_argument("--minutes", type=float, default=0.0, help="walk seeds until then")
    parser.add_argument("--reduce-seconds", type=float, default=600.0)
    parser.add_argument(
        "--without", action="append", default=[], metavar="OP", help="never choose OP"
    )
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.minutes * 60
    seed = args.seed
    while True:
        outcome = check(seed, args.steps, args.profile, args.reduce_seconds, without=args.without)
        print(outcome.message(seed) if not outcome.ok else outcome.result.report(), flush=True)
        if not outcome.ok:
            return 1
        seed += 1
        if time.monotonic() >= deadline:
            return 0


if __name__ == "__main__":
    sys.exit(main())
