"""Chaos harness: containers writing at mixed rates with every rotation style, a Firehose
stand-in that cycles through faults, SIGKILLs mid-outage, and a loss accountant.

Used by tests/chaos/test_forwarder_chaos.py (about a minute, in `make test`) and by bench/soak.py
(`make soak`: minutes to hours, with RSS, delivery lag and throughput sampled to CSV).

Besides the background load (app containers, short jobs deleted once finished), every run
produces these conditions, and counts them in the result so a test can check they happened:

- reused inodes: in a throttled phase, pods are deleted once the forwarder drained them and
  new files are created the moment it closes them, so ext4 hands a new file the inode of a
  file whose lines await acknowledgement; the new files are written, then deleted or
  rotated before the phase ends (`reused_inodes`, `removed_unopened`);
- stuck pieces: progress bars stop mid-line (> 16 KiB in pieces) for STUCK_SECONDS while the
  same containers log on stderr (`stuck_pieces`); the longest wait of a whole line shows a
  forwarder that stops reading meanwhile (`max_wait_s`);
- incompressible pairs: two random lines near or over --max-record-bytes together, in a
  record that must be cut between them (`incompressible_pairs`);
- kills while rotated files were drained and closed but are not acknowledged
  (`kills_with_unacked_drained_files`);
- a phase of malformed 200 answers (every shape).

Every line written is unique; testkit/chaos_lines.py says what is accepted for it and
testkit/chaos_accountant.py counts lost, corrupt and duplicated lines.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devstack.firehose_endpoint import FOREVER, MALFORMED_SHAPES, FirehoseEndpoint
from devstack.forwarder_process import FileKey
from devstack.polling import wait_for
from testkit.chaos_accountant import Accountant
from testkit.chaos_lines import Piece, Writer, incompressible_line, progress_texts
from testkit.forwarder import Container, ForwarderProc, Node, create_reusing

ROTATIONS = ("docker-rename", "kubelet-rename", "copytruncate", "none")
RENAMES = ("docker-rename", "kubelet-rename")
KEEP_ROTATED = 5  # rotated files a container keeps (as kubelet's containerLogMaxFiles)
MAX_LINE_BYTES = 600 * 1024
MAX_RECORD_BYTES = 1024 * 1024  # over the API's 1,024,000: an incompressible record may not fit
# A read needs room for a whole line (--max-line-bytes + 1): reads stop at 768 KiB in flight.
BUFFER_BYTES = MAX_LINE_BYTES + 768 * 1024
FORWARDER_FLAGS = (
    "--max-buffer-bytes", str(BUFFER_BYTES), "--max-line-bytes", str(MAX_LINE_BYTES),
    "--max-record-bytes", str(MAX_RECORD_BYTES), "--send-concurrency", "2",
)  # fmt: skip
# (phase name, seconds); "kill" SIGKILLs the forwarder during an outage and restarts it;
# "reuse" throttles while pods are replaced (see the module docstring).
PHASES: tuple[tuple[str, float], ...] = (
    ("normal", 2.0), ("reuse", 6.0), ("normal", 1.5), ("outage", 3.0), ("kill", 3.0),
    ("normal", 2.0), ("malformed", 3.0), ("throttle", 2.0), ("partial", 2.0), ("drop", 3.0),
    ("normal", 1.0), ("server-error", 2.0), ("slow", 2.0),
)  # fmt: skip
# The endpoint's fault counter each phase raises. Writing (and the phases) go on until
# every one was raised at least once: a loaded forwarder pacing itself after throttling may
# make no call in a short phase, and then meets it in the next cycle.
PHASE_FAULTS = {
    "outage": "server_error", "kill": "server_error", "throttle": "throttle", "reuse": "throttle",
    "partial": "fail_records", "drop": "drop", "server-error": "server_error",
    "malformed": "malformed",
}  # fmt: skip
JOB_DELETE_AFTER = 1.5  # seconds after a job finished (and once the forwarder holds it)
STUCK_START = 3.0  # seconds into the run the first progress bars stop
STUCK_SECONDS = 48.0  # how long a progress bar stays stuck mid-line
STUCK_COUNTS = 8.0  # a piece stuck at least this long counts (the forwarder's bound: ~5 s)
STUCK_GAP = 8.0  # seconds between a progress bar's end and the next one
PROGRESS_BYTES = 5 * 16 * 1024  # a progress bar: five pieces, the first three before it stops
PROGRESS_STUCK_AT = 3
BLOB_EVERY = 8.0  # seconds between incompressible pairs (written in normal phases)
# (runtime, sizes): "near" pairs fit one record uncompressed but not once sent (zstd cannot
# shrink them under 1,024,000), "over" pairs exceed --max-record-bytes together.
BLOB_PAIRS = (
    ("cri", "near", (560_000, 470_000)),
    ("docker", "over", (MAX_LINE_BYTES - 256, MAX_LINE_BYTES - 30_000)),
    ("cri", "over", (MAX_LINE_BYTES - 256, MAX_LINE_BYTES - 30_000)),
    ("docker", "near", (560_000, 470_000)),
)  # fmt: skip
REUSE_READ_WAIT = 0.4  # seconds a replaced pod is held open before its file is deleted
REUSE_OPEN_WAIT = 3.0  # seconds (15 scans) a forwarder gets to open a new file
REUSE_GIVE_UP = 40.0  # seconds after which a replacement whose old inode stays held is dropped
MAX_FILLERS = 500  # files created at most to reach a freed inode
WAIT_SAMPLE_EVERY = 0.5  # seconds between looks at the oldest undelivered line
KILL_DELIVERY_WAIT = 30.0  # seconds a kill waits for deleted files' lines, else skipped
KILL_CATCH_UP_WAIT = 10.0  # seconds a kill waits for the forwarder to catch up
CAUGHT_UP_SECONDS = 1.0  # the oldest undelivered line waited less: the forwarder caught up
KILL_DRAIN_SECONDS = 2.5  # a rotated file is drained by then (1 s grace, 0.2 s scans)
KILL_UNACKED_WRITING = 0.6  # seconds of writing into the files about to rotate, unacked
KILL_CLOSE_WAIT = 4.0  # seconds to wait for a rotated file to be drained and closed


def filesystem(path: Path) -> str:
    """Type of the filesystem `path` is on (/proc/mounts; "" if unknown). Inodes are reused
    at once on ext4 (reuse phases rely on it), not on tmpfs."""
    best, kind = "", ""
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            _dev, mount, fstype, *_ = line.split()
            inside = str(path.resolve()).startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


@dataclass
class Gone:
    """A file the harness deleted: whose lines it held, and whether the forwarder had it open
    (a file deleted before any tailer opened it is gone for anyone)."""

    key: FileKey
    writer: Writer
    held: bool


@dataclass
class Rotated:
    """A rotated file: which lines of its writer it holds."""

    key: FileKey
    writer: Writer
    start: int
    end: int


@dataclass
class Replacement:
    """One pod replaced during a reuse phase: the old one, then the new one."""

    old: Writer
    created: float
    old_key: FileKey | None = None  # set once its file is deleted
    new: Writer | None = None
    new_created: float = 0.0
    new_in_phase: bool = False  # the new file was created while Firehose throttled
    removed: bool = False


@dataclass
class ProgressBar:
    """A container whose stdout progress bar stops mid-line while its stderr logs on."""

    writer: Writer
    next_at: float
    since: float = 0.0
    piece: Piece | None = None  # the bar while it is stuck


@dataclass
class ChaosResult:
    """What the accountant found, and how often each condition happened."""

    written: int
    delivered: int
    lost: int
    corrupt: int
    duplicated: int
    duplicated_bytes: int
    kills: int
    skipped_kills: int
    deleted_jobs: int  # finished pods whose files were deleted while being read
    reused_inodes: int  # new files given the inode of a file deleted by the harness
    reused_inodes_unacked: int  # ... whose lines awaited acknowledgement (the inode was freed)
    removed_unopened: int  # new files of reuse phases deleted/rotated before the forwarder
    stuck_pieces: int  # progress bars stuck mid-line >= STUCK_COUNTS while stderr logged on
    incompressible_pairs: int
    kills_with_unacked_drained_files: int
    malformed_answers: int
    max_wait_s: float  # longest a whole line waited for delivery, sampled every 0.5 s
    lost_sample: list[str]  # where the first lost lines were
    corrupt_sample: list[str]  # what the first corrupt lines looked like
    faults: dict[str, int]
    seconds: float


@dataclass
class Counts:
    """The conditions produced so far."""

    kills: int = 0
    skipped_kills: int = 0  # kill phases skipped: deleted files not delivered in time
    reused_inodes: int = 0
    reused_inodes_unacked: int = 0
    removed_unopened: int = 0
    stuck_pieces: int = 0
    incompressible_pairs: int = 0
    kills_with_unacked_drained_files: int = 0
    max_wait: float = 0.0


class Chaos:
    """Runs the scenario; `run()` returns the accountant's result."""

    def __init__(
        self,
        root: Path,
        seconds: float,
        seed: int = 7,
        sample: Callable[[Chaos], None] | None = None,
        sample_every: float = 5.0,
    ) -> None:
        self.root = root
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.node = Node(root / "node")
        self.db = root / "state" / "offsets.db"
        self.sample = sample
        self.sample_every = sample_every
        self.accountant = Accountant()
        self.endpoint = FirehoseEndpoint(sink=self.accountant.on_records, store=False)
        self.writers: list[Writer] = []  # long-running containers
        self.bars: list[ProgressBar] = []
        self.jobs: list[Writer] = []  # short-lived pods
        self.finished: list[tuple[Writer, float]] = []  # jobs to delete, and when they finished
        self.gone: list[Gone] = []
        self.gone_waited = 0  # gone[:gone_waited] were waited for by a kill phase
        self.freed: dict[FileKey, Gone] = {}
        self.rotated: list[Rotated] = []  # by the last forced rotation
        self.rotated_at = 0.0
        self.replacements: list[Replacement] = []
        self.removals = 0  # new files of replacements deleted or rotated
        self.reuse_phase = -1  # the phase_count of the last reuse phase started
        self.counts = Counts()
        self.proc: ForwarderProc | None = None
        self.procs: list[ForwarderProc] = []
        self.started_at = 0.0
        self.done = threading.Event()
        self.lock = threading.Lock()  # between deleting files and deciding to kill
        self.phase = "normal"
        self.phase_count = 0
        self.rotate_request = threading.Event()
        self.rotate_done = threading.Event()

    # ----- the forwarder
    def start_forwarder(self) -> None:
        """Start a forwarder on the node (the same offsets DB every time)."""
        self.proc = ForwarderProc(self.endpoint.url, self.node, self.db, *FORWARDER_FLAGS)
        self.procs.append(self.proc.start())

    def kill_forwarder(self) -> None:
        """SIGKILL, as an OOM kill or a node reboot would."""
        assert self.proc is not None
        self.proc.signal(signal.SIGKILL)
        self.proc.wait(10)
        self.counts.kills += 1

    def open_keys(self) -> set[FileKey]:
        """(dev, inode) of every file the running forwarder holds open (/proc/PID/fd)."""
        return set() if self.proc is None else self.proc.held()

    # ----- containers
    def all_writers(self) -> list[Writer]:
        """Every container that wrote, long-running or not."""
        return [*self.writers, *self.jobs]

    def add_writers(self) -> None:
        """Containers at mixed rates, each runtime, each rotation style; two progress bars."""
        rates = (5.0, 40.0, 150.0, 400.0)
        for i in range(8):
            runtime = "docker" if i % 2 else "cri"
            rotation = ROTATIONS[i % len(ROTATIONS)]
            if runtime == "docker" and rotation == "kubelet-rename":
                rotation = "docker-rename"
            c = self.node.add(f"app-{i}", runtime)
            every = self.rng.uniform(3.0, 6.0)
            self.writers.append(Writer(c, f"w{i}", rates[i % len(rates)], rotation, every))
        for i, runtime in enumerate(("docker", "cri")):
            c = self.node.add(f"progress-{i}", runtime)
            w = Writer(c, f"p{i}", 150.0, "none", 0.0, kind="progress", stream="stderr")
            self.writers.append(w)
            self.bars.append(ProgressBar(w, self.started_at + STUCK_START))

    def add_job(self, kind: str = "job", runtime: str | None = None, now: float = 0.0) -> Writer:
        """A short-lived pod: writes a few hundred lines, then finishes."""
        i = len(self.jobs)
        runtime = runtime or ("docker" if i % 2 else "cri")
        c = self.node.add(f"{kind}-{i}", runtime)
        self.note_created(c.target)
        job = Writer(c, f"{kind}{i}", 0.0, "none", 0.0, kind=kind)
        c.write(job.lines(self.rng.randint(50, 400), now))
        self.jobs.append(job)
        if kind == "job":
            self.finished.append((job, now))
        return job

    def add_blob(self, now: float) -> None:
        """A pod that writes a pair of incompressible lines, then finishes."""
        runtime, fit, sizes = BLOB_PAIRS[self.counts.incompressible_pairs % len(BLOB_PAIRS)]
        i = len(self.jobs)
        c = self.node.add(f"blob-{i}", runtime)
        self.note_created(c.target)
        job = Writer(c, f"blob{i}", 0.0, "none", 0.0, kind="blob")
        lines = [incompressible_line(runtime, size, f"blob{i}-{fit}-{n}", self.rng)
                 for n, size in enumerate(sizes)]  # fmt: skip
        for line in lines:
            job.remember(line, now)
        c.write(b"".join(lines))
        self.jobs.append(job)
        self.finished.append((job, now))
        self.counts.incompressible_pairs += 1

    def note_created(self, path: Path) -> None:
        """Count a new file that got the inode of a file the harness deleted (and whether that
        one's lines still awaited acknowledgement)."""
        st = path.stat()
        gone = self.freed.pop((st.st_dev, st.st_ino), None)
        if gone is not None:
            self.counts.reused_inodes += 1
            self.counts.reused_inodes_unacked += not self.delivered(gone.writer)

    def delivered(self, w: Writer) -> bool:
        """Every line of a writer arrived."""
        acc = self.accountant
        return acc.all_in(w.expected) and all(acc.piece_in(p) for p in w.pieces)

    def delete_file(self, w: Writer, opened: set[FileKey], whole_pod: bool) -> None:
        """Delete a container's file (and link, and with `whole_pod` its directory)."""
        c = w.container
        st = c.target.stat()
        k = (st.st_dev, st.st_ino)
        gone = Gone(k, w, k in opened)
        c.target.unlink()
        if whole_pod:
            c.link.unlink(missing_ok=True)
            shutil.rmtree(c.target.parent, ignore_errors=True)
        self.gone.append(gone)
        self.freed[k] = gone

    def delete_finished_jobs(self, now: float) -> None:
        """Delete a finished pod's files once the running forwarder holds them open (a file
        deleted before any tailer opened it is gone for anyone)."""
        due = [job for job, finished in self.finished if now - finished > JOB_DELETE_AFTER]
        if not due:
            return
        with self.lock:
            if self.phase == "kill":
                return
            opened = self.open_keys()
            for job in due:
                st = job.container.target.stat()
                if (st.st_dev, st.st_ino) in opened:
                    self.delete_file(job, opened, whole_pod=True)
                    self.finished = [(j, t) for j, t in self.finished if j is not job]

    # ----- writing and rotating
    def write_tick(self, dt: float, now: float) -> None:
        """Each writer writes its share of lines for `dt` seconds, and rotates when due."""
        for w in self.writers:
            w.carry += w.rate * dt
            count, w.carry = int(w.carry), w.carry - int(w.carry)
            if count:
                w.container.write(w.lines(count, now))
                w.written += count
            if w.rotation != "none" and now >= w.next_rotation:
                first = not w.next_rotation
                w.next_rotation = now + w.rotate_every
                if not first:
                    self.rotate(w)

    def rotate(self, w: Writer) -> Rotated | None:
        """Rotate one container's file the way its style does."""
        target = w.container.target
        rotated = None
        if w.rotation in RENAMES:
            st = target.stat()
            rotated = Rotated((st.st_dev, st.st_ino), w, w.file_start, len(w.expected))
            w.file_start = len(w.expected)
        if w.rotation == "copytruncate" and not self.accountant.all_in(
            w.expected[w.truncated_at :]
        ):
            w.next_rotation = time.monotonic() + 0.5  # Firehose is down or slow: try later
            return None
        if w.rotation == "kubelet-rename":
            os.rename(target, target.with_name(f"{target.name}.{time.time_ns()}"))
        elif w.rotation == "docker-rename":
            self.shift_rotated(target)
            os.rename(target, target.with_name(target.name + ".1"))
        elif w.rotation == "copytruncate":
            self.copytruncate(w)
        if rotated is not None:
            target.touch()
            self.note_created(target)
        self.prune_rotated(w)
        return rotated

    @staticmethod
    def shift_rotated(target: Path) -> None:
        """dockerd's renames: -json.log.N becomes .N+1, newest first."""
        rotated = sorted(
            target.parent.glob(target.name + ".*"),
            key=lambda p: int(p.name.rsplit(".", 1)[1]),
            reverse=True,
        )
        for path in rotated:
            number = int(path.name.rsplit(".", 1)[1])
            os.rename(path, path.with_name(f"{target.name}.{number + 1}"))

    def copytruncate(self, w: Writer) -> None:
        """copy, then truncate in place — only once everything written was delivered (see
        rotate), since lines between the copy and the truncation are lost to every tailer.
        The copy is not named as a rotated file (`<name>.<suffix>`): one made just before a
        kill would be read again by the restart, as docs/forwarder.md says."""
        w.truncated_at = len(w.expected)
        target = w.container.target
        shutil.copy(target, target.with_name(f"copy-{time.time_ns()}-{target.name}"))
        with open(target, "r+b") as f:
            f.truncate(0)

    def prune_rotated(self, w: Writer) -> None:
        """Keep the newest KEEP_ROTATED rotated files, as runtimes do."""
        target = w.container.target
        rotated = sorted(target.parent.glob(target.name + ".*"), key=lambda p: p.stat().st_mtime)
        for path in rotated[:-KEEP_ROTATED]:
            path.unlink()

    def rotate_on_request(self) -> None:
        """Rotate every renaming container now, when the kill phase asks."""
        if self.rotate_request.is_set():
            self.rotate_request.clear()
            renaming = [w for w in self.writers if w.rotation in RENAMES]
            self.rotated = [r for w in renaming if (r := self.rotate(w)) is not None]
            self.rotated_at = time.monotonic()
            self.rotate_done.set()

    # ----- progress bars stuck mid-line
    def progress_tick(self, now: float) -> None:
        """Start, or finish after STUCK_SECONDS, each container's progress bar."""
        for bar in self.bars:
            if bar.piece is None and now >= bar.next_at:
                self.start_bar(bar, now)
            elif bar.piece is not None and now - bar.since >= STUCK_SECONDS:
                self.finish_bar(bar, now)

    def start_bar(self, bar: ProgressBar, now: float) -> None:
        """Write the first pieces of a progress bar (the line stays unfinished)."""
        w = bar.writer
        w.seq += 1
        texts = progress_texts(f"{w.name}-{w.seq}", PROGRESS_BYTES, w.container.runtime, self.rng)
        bar.piece, bar.since = w.add_piece(texts, stream="stdout"), now
        w.container.write(bar.piece.physical(0, PROGRESS_STUCK_AT))

    def finish_bar(self, bar: ProgressBar, now: float) -> None:
        """Write the rest of a stuck progress bar."""
        assert bar.piece is not None
        bar.writer.container.write(bar.piece.physical(PROGRESS_STUCK_AT, len(bar.piece.texts)))
        if now - bar.since >= STUCK_COUNTS:
            self.counts.stuck_pieces += 1
        bar.piece, bar.next_at = None, now + STUCK_GAP

    # ----- pods replaced while Firehose throttles (inode reuse)
    def reuse_tick(self, now: float) -> None:
        """Start the pod replacements of a reuse phase and drive them. A forwarder that keeps
        a drained file open until it is acknowledged frees its inode only after the phase:
        the new file comes then (a reuse, but not while awaiting acknowledgement)."""
        if self.phase == "reuse" and self.reuse_phase != self.phase_count:
            self.reuse_phase = self.phase_count
            self.replacements += [Replacement(self.add_job("reuse", rt, now), now)
                                  for rt in ("cri", "docker")]  # fmt: skip
        if not self.replacements:
            return
        with self.lock:  # they delete files the forwarder holds: not in a kill phase
            if self.phase == "kill":
                return
            opened = self.open_keys()
            for rep in self.replacements:
                if rep.new_in_phase and self.phase != "reuse":
                    self.remove_new(rep, opened)  # before the acknowledgements come back
                else:
                    self.replace_step(rep, opened, now)
        self.replacements = [rep for rep in self.replacements if not rep.removed
                             and now - rep.created < REUSE_GIVE_UP]  # fmt: skip

    def replace_step(self, rep: Replacement, opened: set[FileKey], now: float) -> None:
        """One step of a replacement: delete the old file once read; create the new one the
        moment the forwarder closed the old one; delete or rotate the new one once open."""
        if rep.old_key is None:
            st = rep.old.container.target.stat()
            if (st.st_dev, st.st_ino) in opened and now - rep.created >= REUSE_READ_WAIT:
                self.delete_file(rep.old, opened, whole_pod=False)
                rep.old_key = self.gone[-1].key
        elif rep.new is None:
            if rep.old_key not in opened:
                rep.new, rep.new_created = self.replace_pod(rep.old, rep.old_key, now), now
                rep.new_in_phase = self.phase == "reuse"
        else:
            st = rep.new.container.target.stat()
            if (st.st_dev, st.st_ino) in opened or now - rep.new_created >= REUSE_OPEN_WAIT:
                self.remove_new(rep, opened)

    def replace_pod(self, old: Writer, rep_key: FileKey, now: float) -> Writer:
        """A new container whose file is created where the old one was, with its inode
        (`rep_key`, free now) if ext4 gives it; with a new link; the old link goes."""
        c = old.container
        cid = secrets.token_hex(32)
        name = "1.log" if c.runtime == "cri" else f"{cid}-json.log"
        new = Container(self.node.containers_dir / f"reuse-{cid[:8]}_default_app-{cid}.log",
                        c.target.with_name(name), c.runtime)  # fmt: skip
        self.create_reusing(new.target, rep_key)
        self.note_created(new.target)
        new.link.symlink_to(new.target)
        c.link.unlink()
        w = Writer(new, f"r{len(self.jobs)}", 0.0, "none", 0.0, kind="reuse")
        new.write(w.lines(self.rng.randint(50, 300), now))
        self.jobs.append(w)
        return w

    @staticmethod
    def create_reusing(path: Path, want: FileKey) -> None:
        """Create `path`, with the inode `want` if ext4 will give it (see create_reusing)."""
        create_reusing(path, want, MAX_FILLERS)

    def remove_new(self, rep: Replacement, opened: set[FileKey]) -> None:
        """Delete the new pod, or rotate its file (every other time)."""
        assert rep.new is not None
        c = rep.new.container
        st = c.target.stat()
        if (st.st_dev, st.st_ino) not in opened:
            self.counts.removed_unopened += 1
        self.removals += 1
        if self.removals % 2:
            self.delete_file(rep.new, opened, whole_pod=True)
        else:
            suffix = f".{time.time_ns()}" if c.runtime == "cri" else ".1"
            os.rename(c.target, c.target.with_name(c.target.name + suffix))
            c.target.touch()
            self.note_created(c.target)
        rep.removed = True

    # ----- faults
    def set_faults(self, name: str) -> None:
        """Switch the endpoint's fault mode for a phase."""
        ep = self.endpoint
        ep.clear_faults()
        if name in ("outage", "kill"):
            ep.server_error(FOREVER)
        elif name in ("throttle", "reuse"):
            ep.throttle(FOREVER)
        elif name == "partial":
            ep.fail_records(FOREVER, every=3)
        elif name == "drop":
            ep.drop_connections(FOREVER)
        elif name == "server-error":
            ep.server_error(3)
        elif name == "slow":
            ep.delay(0.3)

    def run_phase(self, name: str, seconds: float) -> None:
        """One fault phase: faults on, for `seconds` (after the kill, for 'kill')."""
        with self.lock:
            self.phase = name
            self.phase_count += 1
        self.set_faults(name)
        if name == "kill":
            self.kill_phase()
        if name == "malformed":
            for shape in MALFORMED_SHAPES:
                self.endpoint.malformed_answers(FOREVER, shape)
                self.done.wait(seconds / len(MALFORMED_SHAPES))
        else:
            self.done.wait(seconds)

    def every_fault_met(self) -> bool:
        """Every phase's fault answered at least one call so far."""
        met = self.endpoint.stats.faults
        return all(met.get(fault, 0) > 0 for fault in PHASE_FAULTS.values())

    def kill_phase(self) -> None:
        """SIGKILL while Firehose fails and rotated files were drained but not acknowledged;
        restart. Only once the deleted files the forwarder held are delivered: a deleted file
        can be read only by the process that holds it open."""
        ep = self.endpoint
        held = [gone.writer for gone in self.gone[self.gone_waited :] if gone.held]
        self.gone_waited = len(self.gone)  # (lines never delivered are lost: not waited again)
        ep.clear_faults()
        delivered = self.wait_until(lambda: all(map(self.delivered, held)), KILL_DELIVERY_WAIT)
        self.wait_until(self.caught_up, KILL_CATCH_UP_WAIT)  # room to read what is rotated
        ep.server_error(FOREVER)
        if not delivered:  # a slow machine: killing now would lose them; next time
            self.counts.skipped_kills += 1
            return
        time.sleep(KILL_UNACKED_WRITING)  # lines Firehose will not acknowledge, then rotate
        self.rotate_done.clear()
        self.rotate_request.set()
        self.rotate_done.wait(5.0)
        if self.wait_until(self.drained_unacked, KILL_CLOSE_WAIT):
            self.counts.kills_with_unacked_drained_files += 1
        self.kill_forwarder()
        time.sleep(0.5)
        self.start_forwarder()

    def caught_up(self) -> bool:
        """Every whole line written until a moment ago was delivered."""
        wait = self.accountant.oldest_wait(self.all_writers(), time.monotonic())
        return wait < CAUGHT_UP_SECONDS

    def drained_unacked(self) -> bool:
        """A file rotated by the last forced rotation was drained — closed by the forwarder,
        or rotated KILL_DRAIN_SECONDS ago with room in the buffer (a forwarder may keep it
        open until acknowledged) — and some of its lines are not acknowledged."""
        opened = self.open_keys()
        drained = time.monotonic() - self.rotated_at >= KILL_DRAIN_SECONDS
        return any((drained or r.key not in opened) and not self.accountant.all_in(
            r.writer.expected[r.start : r.end]) for r in self.rotated)  # fmt: skip

    def fault_loop(self) -> None:
        """Cycle through PHASES until the writing is done."""
        i = 0
        while not self.done.is_set():
            self.run_phase(*PHASES[i % len(PHASES)])
            i += 1
        self.endpoint.clear_faults()

    # ----- the run
    def run(self, drain_timeout: float = 120.0) -> ChaosResult:
        """Write for `seconds` under faults, then stop faults and wait for delivery."""
        self.endpoint.start()
        try:
            self.started_at = time.monotonic()
            self.add_writers()
            self.start_forwarder()
            faults = threading.Thread(target=self.fault_loop, daemon=True)
            faults.start()
            self.write_loop()
            self.done.set()
            faults.join(90)
            self.wait_until(self.delivered_all, drain_timeout)
            assert self.proc is not None
            self.proc.signal(signal.SIGTERM)
            code = self.proc.wait(30)
            assert code == 0, f"forwarder exited {code}: {self.proc.log()[-2000:]}"
            return self.result()
        finally:
            for proc in self.procs:
                proc.stop()
            self.endpoint.stop()

    def write_loop(self) -> None:
        """Write, rotate, start and delete pods, and sample, until the time is up and every
        phase's fault was met (a slow machine stretches it: up to twice the time)."""
        tick, last, next_job, next_blob = 0.05, time.monotonic(), 0.0, 0.5
        next_wait = next_sample = 0.0
        while self.writing(now := time.monotonic()):
            self.reuse_tick(now)  # first: a freed inode goes to the next file created
            self.rotate_on_request()
            self.progress_tick(now)
            self.write_tick(now - last, now)
            last = now
            if now >= next_job:
                self.add_job(now=now)
                next_job = now + self.rng.uniform(1.0, 4.0)
            if now - self.started_at >= next_blob and self.phase == "normal":
                self.add_blob(now)
                next_blob += BLOB_EVERY
            self.delete_finished_jobs(now)
            if now >= next_wait:
                self.note_wait(now)
                next_wait = now + WAIT_SAMPLE_EVERY
            if self.sample is not None and now >= next_sample:
                self.sample(self)
                next_sample = now + self.sample_every
            time.sleep(tick)
        for bar in self.bars:
            if bar.piece is not None:
                self.finish_bar(bar, time.monotonic())

    def writing(self, now: float) -> bool:
        """Whether the write loop goes on."""
        elapsed = now - self.started_at
        return elapsed < self.seconds or (not self.every_fault_met() and elapsed < 2 * self.seconds)

    def note_wait(self, now: float) -> None:
        """Keep the longest wait of a whole line for delivery."""
        wait = self.accountant.oldest_wait(self.all_writers(), now)
        self.counts.max_wait = max(self.counts.max_wait, wait)

    def delivered_all(self) -> bool:
        """Every line written arrived (the wait is sampled meanwhile)."""
        self.note_wait(time.monotonic())
        return all(map(self.delivered, self.all_writers()))

    @staticmethod
    def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll `predicate` every 0.2 s until true (True), or `timeout` (False)."""
        return wait_for(predicate, timeout, 0.2)

    def result(self) -> ChaosResult:
        """The accountant's findings and the conditions' counts."""
        t = self.accountant.tally(self.all_writers())
        c = self.counts
        return ChaosResult(
            written=t.written,
            delivered=t.delivered,
            lost=t.lost,
            corrupt=t.corrupt,
            duplicated=t.duplicated,
            duplicated_bytes=t.duplicated_bytes,
            kills=c.kills,
            skipped_kills=c.skipped_kills,
            deleted_jobs=sum(1 for g in self.gone if g.writer.kind in ("job", "blob")),
            reused_inodes=c.reused_inodes,
            reused_inodes_unacked=c.reused_inodes_unacked,
            removed_unopened=c.removed_unopened,
            stuck_pieces=c.stuck_pieces,
            incompressible_pairs=c.incompressible_pairs,
            kills_with_unacked_drained_files=c.kills_with_unacked_drained_files,
            malformed_answers=self.endpoint.stats.faults.get("malformed", 0),
            max_wait_s=round(c.max_wait, 1),
            lost_sample=t.lost_sample,
            corrupt_sample=t.corrupt_sample,
            faults=dict(self.endpoint.stats.faults),
            seconds=round(time.monotonic() - self.started_at, 1),
        )
