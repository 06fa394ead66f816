"""Pod churn: new pods every second, each logging a few lines a second, deleted after a while.

The workload of the memory issue (5 new pods a second, 3 lines a second each, deleted after
15 s) as kubelet and the runtimes lay it out: a file per container, Docker json-file under
/var/lib/docker/containers/<id>/ or CRI under /var/log/pods/<ns>_<pod>_<uid>/<container>/,
and its /var/log/containers symlink; a deleted pod loses its symlink and its directory.
Pods alternate between Docker and CRI. Every line is unique (pod name and sequence number),
so what was delivered can be checked line by line.

Used by tests/chaos/test_forwarder_memory.py and bench/memory.py (RSS over time and drift).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import deque
from dataclasses import dataclass, field

from testkit.forwarder import Container, Node

WORDS = ("request", "handled", "user", "session", "cache", "miss", "upstream", "timeout",
         "retry", "ok", "order", "item", "payment", "token", "db", "query", "rows",
         "latency")  # fmt: skip


@dataclass
class Pod:
    """One pod's container: its file, its next line's number, when it is deleted."""

    name: str
    container: Container
    delete_at: float
    next_write: float
    seq: int = 0
    handle: object = None  # the open file (append), closed at deletion


@dataclass
class Churn:
    """Drives the churn from the caller's thread: call `step()` often (every ~50 ms)."""

    node: Node
    pods_per_s: float = 5.0
    lines_per_s: float = 3.0
    lifetime_s: float = 15.0
    line_bytes: int = 160  # about, before the runtime's envelope
    seed: int = 1
    alive: deque[Pod] = field(default_factory=deque)
    created: int = 0
    deleted: int = 0
    written: int = 0  # lines
    written_bytes: int = 0
    expected: dict[str, list[bytes]] | None = None  # src -> lines, when asked to keep them

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.started = time.monotonic()
        self.next_pod = self.started

    def step(self, create: bool = True) -> None:
        """Create the pods due, write the lines due, delete the pods whose time came."""
        now = time.monotonic()
        while create and self.next_pod <= now:
            self._create(self.next_pod)
            self.next_pod += 1.0 / self.pods_per_s
        for pod in self.alive:
            while pod.next_write <= now and pod.handle is not None:
                self._write(pod)
                pod.next_write += 1.0 / self.lines_per_s
        while self.alive and self.alive[0].delete_at <= now:
            self._delete(self.alive.popleft())

    def add(self, count: int) -> None:
        """Create `count` pods now (a steady workload: a long lifetime and step(False))."""
        now = time.monotonic()
        for _ in range(count):
            self._create(now)

    def run(self, seconds: float, tick: float = 0.05) -> None:
        """Churn for `seconds` (creating pods), calling step() every `tick`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()
            time.sleep(tick)

    def finish(self, tick: float = 0.05) -> None:
        """Create no more pods; let the living ones write out their lifetime and go."""
        while self.alive:
            self.step(create=False)
            time.sleep(tick)

    def _create(self, at: float) -> None:
        n = self.created
        self.created += 1
        runtime = "docker" if n % 2 else "cri"
        name = f"churn-{n:07d}"
        container = self.node.add(name, runtime=runtime)
        handle = open(container.target, "ab", buffering=0)  # noqa: SIM115 - closed at deletion
        # Writes start at once and stagger over the first interval, as pods start.
        first = at + self.rng.random() / self.lines_per_s
        pod = Pod(name, container, at + self.lifetime_s, first, handle=handle)
        self.alive.append(pod)
        if self.expected is not None:
            self.expected[container.src] = []

    def _line(self, pod: Pod) -> bytes:
        words = []
        size = 0
        while size < self.line_bytes - 40:
            word = self.rng.choice(WORDS)
            words.append(word)
            size += len(word) + 1
        text = f"{pod.name} seq={pod.seq} " + " ".join(words)
        pod.seq += 1
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000001Z"
        if pod.container.runtime == "docker":
            doc = {"log": text + "\n", "stream": "stdout", "time": when}
            return json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        return f"{when} stdout F {text}\n".encode()

    def _write(self, pod: Pod) -> None:
        line = self._line(pod)
        pod.handle.write(line)  # type: ignore[attr-defined]
        self.written += 1
        self.written_bytes += len(line)
        if self.expected is not None:
            self.expected[pod.container.src].append(line)

    def _delete(self, pod: Pod) -> None:
        """As kubelet removes a pod: its /var/log/containers link and its log directory."""
        pod.handle.close()  # type: ignore[attr-defined]
        pod.handle = None
        c = pod.container
        os.unlink(c.link)
        top = c.target.parent if c.runtime == "docker" else c.target.parent.parent
        shutil.rmtree(top, ignore_errors=True)
        self.deleted += 1

    def close(self) -> None:
        """Close every file still open (cleanup)."""
        for pod in self.alive:
            if pod.handle is not None:
                pod.handle.close()  # type: ignore[attr-defined]
                pod.handle = None


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (MiB) from /proc/PID/status; None once gone."""
    return _status_kb(pid, "VmRSS:")


def peak_rss_mb(pid: int) -> float | None:
    """The process's high-water resident set size (VmHWM) in MB (MiB); None once gone."""
    return _status_kb(pid, "VmHWM:")


def _status_kb(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60
