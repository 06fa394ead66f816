"""Chaos harness: containers writing at mixed rates with every rotation style, a Firehose
stand-in that cycles through faults, SIGKILLs mid-outage, and a loss accountant.

Used by tests/test_forwarder_chaos.py (about a minute, in `make test`) and by bench/soak.py
(`make soak`: minutes to hours, with RSS, delivery lag and throughput sampled to CSV).

Every line written is unique and remembered with the logical line the forwarder must ship for
it (partial pieces joined). The accountant compares that with every line the endpoint
accepted: lost, corrupt (never written) and duplicated lines, and the duplicate bytes, which
must stay within what a SIGKILL can leave unacknowledged.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localaws.firehose_endpoint import FOREVER, FirehoseEndpoint
from tests.forwarder_testlib import Container, ForwarderProc, Node, cri_line, decode, docker_line

ROTATIONS = ("docker-rename", "kubelet-rename", "copytruncate", "none")
KEEP_ROTATED = 5  # rotated files a container keeps (as kubelet's containerLogMaxFiles)
BUFFER_BYTES = 256 * 1024
FORWARDER_FLAGS = (
    "--max-buffer-bytes", str(BUFFER_BYTES), "--max-line-bytes", str(64 * 1024),
    "--max-record-bytes", str(128 * 1024), "--send-concurrency", "2",
)  # fmt: skip
# (phase name, seconds); "kill" SIGKILLs the forwarder during an outage and restarts it.
PHASES: tuple[tuple[str, float], ...] = (
    ("normal", 2.0), ("outage", 3.0), ("normal", 1.5), ("throttle", 2.0),
    ("partial", 2.0), ("drop", 1.5), ("normal", 1.0), ("kill", 3.0), ("normal", 2.0),
    ("server-error", 2.0), ("slow", 2.0),
)  # fmt: skip


@dataclass
class Writer:
    """One container: its rate, rotation style, and the lines it must see delivered."""

    container: Container
    name: str
    rate: float  # lines per second
    rotation: str
    rotate_every: float
    written: int = 0
    next_rotation: float = 0.0
    seq: int = 0
    carry: float = 0.0
    truncated_at: int = 0  # index into `expected` of the last copytruncate
    expected: list[bytes] = field(default_factory=list)

    def line(self) -> tuple[bytes, bytes]:
        """(bytes written, logical line shipped) for the next line; ~2 % are partials."""
        self.seq += 1
        text = f"{self.name} seq={self.seq:08d} " + "x" * (self.seq * 7 % 180)
        if self.container.runtime == "docker":
            if self.seq % 50 == 0:
                piece = f'{{"piece": "{self.name}-{self.seq}", '
                rest = f'"rest": "{"y" * 40}"}}\n'
                written = docker_line(piece) + docker_line(rest)
                return written, docker_line(piece + rest)
            return docker_line(text + "\n"), docker_line(text + "\n")
        if self.seq % 50 == 0:
            written = cri_line(text + " first ", tag="P") + cri_line("second")
            return written, cri_line(text + " first second")
        return cri_line(text), cri_line(text)


@dataclass
class ChaosResult:
    """What the accountant found."""

    written: int
    delivered: int
    lost: int
    corrupt: int
    duplicated: int
    duplicated_bytes: int
    kills: int
    skipped_kills: int
    deleted_jobs: int  # finished pods whose files were deleted while being read
    lost_sample: list[str]  # where the first lost lines were: writer, rotation, position
    faults: dict[str, int]
    seconds: float


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
        self.received: Counter[bytes] = Counter()
        self.received_lock = threading.Lock()
        self.endpoint = FirehoseEndpoint(sink=self._on_records, store=False)
        self.writers: list[Writer] = []
        self.jobs: list[tuple[Writer, float]] = []  # finished pods, deleted after a while
        self.proc: ForwarderProc | None = None
        self.procs: list[ForwarderProc] = []
        self.started_at = 0.0
        self.kills = 0
        self.skipped_kills = 0  # kill phases skipped: deleted files not yet delivered
        self.done = threading.Event()
        self.lock = threading.Lock()  # between deleting jobs and deciding to kill
        self.phase = "normal"

    # ----- the endpoint side
    def _on_records(self, stream: str, datas: list[bytes]) -> None:
        del stream
        lines: list[bytes] = []
        for data in datas:
            lines += decode(data)[1]
        with self.received_lock:
            self.received.update(lines)

    def delivered_count(self) -> int:
        """Lines accepted so far (duplicates included)."""
        with self.received_lock:
            return self.received.total()

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
        self.kills += 1

    # ----- containers
    def add_writers(self) -> None:
        """Containers at mixed rates, each runtime, each rotation style."""
        rates = (5.0, 40.0, 150.0, 400.0)
        for i in range(8):
            runtime = "docker" if i % 2 else "cri"
            rotation = ROTATIONS[i % len(ROTATIONS)]
            if runtime == "docker" and rotation == "kubelet-rename":
                rotation = "docker-rename"
            c = self.node.add(f"app-{i}", runtime)
            every = self.rng.uniform(3.0, 6.0)
            self.writers.append(Writer(c, f"w{i}", rates[i % len(rates)], rotation, every))

    def add_job(self) -> None:
        """A short-lived pod: writes a few hundred lines, then finishes."""
        i = len(self.jobs)
        runtime = "docker" if i % 2 else "cri"
        c = self.node.add(f"job-{i}", runtime)
        job = Writer(c, f"job{i}", 0.0, "none", 0.0)
        data = bytearray()
        for _ in range(self.rng.randint(50, 400)):
            written, shipped = job.line()
            data += written
            job.expected.append(shipped)
        c.write(bytes(data))
        self.jobs.append((job, time.monotonic()))

    def delete_finished_jobs(self, now: float) -> None:
        """Delete a finished pod's files once the running forwarder holds them open (a file
        deleted before any tailer opened it is gone for anyone)."""
        with self.lock:
            if self.phase == "kill":
                return
            opened = self.open_files()
            for job, finished in self.jobs:
                c = job.container
                held = os.path.realpath(c.target) in opened
                if c.link.exists() and now - finished > 1.5 and held:
                    c.link.unlink()
                    shutil.rmtree(c.target.parent, ignore_errors=True)

    def open_files(self) -> set[str]:
        """The files the running forwarder holds open (/proc/PID/fd)."""
        if self.proc is None or self.proc.proc is None:
            return set()
        fds = Path(f"/proc/{self.proc.proc.pid}/fd")
        opened = set()
        with contextlib.suppress(OSError):  # the process may be gone
            for fd in fds.iterdir():
                with contextlib.suppress(OSError):
                    opened.add(os.readlink(fd))
        return opened

    def write_tick(self, dt: float, now: float) -> None:
        """Each writer writes its share of lines for `dt` seconds, and rotates when due."""
        for w in self.writers:
            w.carry += w.rate * dt
            count, w.carry = int(w.carry), w.carry - int(w.carry)
            if count:
                data = bytearray()
                for _ in range(count):
                    written, shipped = w.line()
                    data += written
                    w.expected.append(shipped)
                w.container.write(bytes(data))
                w.written += count
            if w.rotation != "none" and now >= w.next_rotation:
                if w.next_rotation:
                    self.rotate(w)
                w.next_rotation = now + w.rotate_every

    def rotate(self, w: Writer) -> None:
        """Rotate one container's file the way its style does."""
        target = w.container.target
        if w.rotation == "kubelet-rename":
            os.rename(target, target.with_name(f"{target.name}.{time.time_ns()}"))
            target.touch()
        elif w.rotation == "docker-rename":
            rotated = sorted(
                target.parent.glob(target.name + ".*"),
                key=lambda p: int(p.name.rsplit(".", 1)[1]),
                reverse=True,
            )
            for path in rotated:
                number = int(path.name.rsplit(".", 1)[1])
                os.rename(path, path.with_name(f"{target.name}.{number + 1}"))
            os.rename(target, target.with_name(target.name + ".1"))
            target.touch()
        elif w.rotation == "copytruncate":
            self.copytruncate(w)
        self.prune_rotated(w)

    def copytruncate(self, w: Writer) -> None:
        """copy, then truncate in place — only once everything written was delivered, since
        lines between the copy and the truncation are lost to every tailer (documented)."""
        if not self.wait_for_lines(w.expected[w.truncated_at :], 2.0):
            return  # Firehose is down: rotate next time
        w.truncated_at = len(w.expected)
        target = w.container.target
        shutil.copy(target, target.with_name(f"{target.name}.copy-{time.time_ns()}"))
        with open(target, "r+b") as f:
            f.truncate(0)

    def prune_rotated(self, w: Writer) -> None:
        """Keep the newest KEEP_ROTATED rotated files, as runtimes do."""
        target = w.container.target
        rotated = sorted(target.parent.glob(target.name + ".*"), key=lambda p: p.stat().st_mtime)
        for path in rotated[:-KEEP_ROTATED]:
            path.unlink()

    # ----- faults
    def set_phase(self, name: str) -> None:
        """Switch the endpoint's fault mode (and kill/restart the forwarder for 'kill')."""
        ep = self.endpoint
        ep.clear_faults()
        with self.lock:
            self.phase = name
        if name in ("outage", "kill"):
            ep.server_error(FOREVER)
        elif name == "throttle":
            ep.throttle(FOREVER)
        elif name == "partial":
            ep.fail_records(FOREVER, every=3)
        elif name == "drop":
            ep.drop_connections(FOREVER)
        elif name == "server-error":
            ep.server_error(3)
        elif name == "slow":
            ep.delay(0.3)
        if name == "kill":
            # A deleted file can be read only by the process that holds it open: a kill
            # before it is delivered loses it for any tailer. Kill once deleted jobs are in.
            deleted = [line for job, _ in self.jobs if not job.container.link.exists()
                       for line in job.expected]  # fmt: skip
            ep.clear_faults()
            delivered = self.wait_for_lines(deleted, 60.0)
            ep.server_error(FOREVER)
            if not delivered:  # a slow machine: killing now would lose them; next time
                self.skipped_kills += 1
                return
            time.sleep(0.5)
            self.kill_forwarder()
            time.sleep(0.5)
            self.start_forwarder()

    def fault_loop(self) -> None:
        """Cycle through PHASES until the writing is done."""
        i = 0
        while not self.done.is_set():
            name, seconds = PHASES[i % len(PHASES)]
            self.set_phase(name)
            self.done.wait(seconds)
            i += 1
        self.endpoint.clear_faults()

    # ----- the run
    def run(self, drain_timeout: float = 120.0) -> ChaosResult:
        """Write for `seconds` under faults, then stop faults and wait for delivery."""
        self.endpoint.start()
        try:
            self.add_writers()
            self.start_forwarder()
            faults = threading.Thread(target=self.fault_loop, daemon=True)
            self.started_at = time.monotonic()
            faults.start()
            self.write_loop()
            self.done.set()
            faults.join(30)
            self.wait_delivered(drain_timeout)
            assert self.proc is not None
            self.proc.signal(signal.SIGTERM)
            code = self.proc.wait(30)
            assert code == 0, f"forwarder exited {code}: {self.proc.log()[-2000:]}"
            return self.account()
        finally:
            for proc in self.procs:
                proc.stop()
            self.endpoint.stop()

    def write_loop(self) -> None:
        """Write, rotate, start and delete jobs, and sample, until the time is up."""
        tick, last, next_job, next_sample = 0.05, time.monotonic(), 0.0, 0.0
        while (now := time.monotonic()) - self.started_at < self.seconds:
            self.write_tick(now - last, now)
            last = now
            if now >= next_job:
                self.add_job()
                next_job = now + self.rng.uniform(1.0, 4.0)
            self.delete_finished_jobs(now)
            if self.sample is not None and now >= next_sample:
                self.sample(self)
                next_sample = now + self.sample_every
            time.sleep(tick)

    def expected(self) -> Counter[bytes]:
        """Every logical line that must arrive."""
        want: Counter[bytes] = Counter()
        for w in [*self.writers, *(job for job, _ in self.jobs)]:
            want.update(w.expected)
        return want

    def wait_delivered(self, timeout: float) -> None:
        """Until every expected line arrived, or `timeout`."""
        self.wait_for_lines(list(self.expected()), timeout)

    def wait_for_lines(self, lines: list[bytes], timeout: float) -> bool:
        """Until each of `lines` arrived (True), or `timeout` (False)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.received_lock:
                if all(self.received[line] for line in lines):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def account(self) -> ChaosResult:
        """Compare what was written with what arrived."""
        want = self.expected()
        with self.received_lock:
            have = Counter(self.received)
        lost = sum(1 for line in want if not have[line])
        lost_sample = [
            f"{w.name} ({w.container.runtime}, {w.rotation}) line {i + 1} of {len(w.expected)}"
            for w in [*self.writers, *(job for job, _ in self.jobs)]
            for i, line in enumerate(w.expected)
            if not have[line]
        ][:10]
        corrupt = sum(n for line, n in have.items() if line not in want)
        extra = {line: n - want[line] for line, n in have.items() if line in want and n > 1}
        return ChaosResult(
            written=want.total(),
            delivered=have.total(),
            lost=lost,
            corrupt=corrupt,
            duplicated=sum(extra.values()),
            duplicated_bytes=sum(len(line) * n for line, n in extra.items()),
            kills=self.kills,
            skipped_kills=self.skipped_kills,
            deleted_jobs=sum(not job.container.link.exists() for job, _ in self.jobs),
            lost_sample=lost_sample,
            faults=dict(self.endpoint.stats.faults),
            seconds=time.monotonic() - self.started_at,
        )
