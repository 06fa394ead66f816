"""A simulated Kubernetes node for the demo: containers of the seed's app writing log files.

The seed's demo app ("fakenerd") prints ``{"name": "fakenerd", "time_ms": <ms>}`` a few
times a second. Here each simulated container runs it on a thread and plays the container
runtime too, writing what kubelet's node would hold under a temporary root:

- Docker (json-file driver): ``var/lib/docker/containers/<id>/<id>-json.log`` holding
  ``{"log":"<line>\\n","stream":"stdout","time":"..."}``; lines over 16 KiB are split into
  pieces without ``\\n`` like dockerd does; rotation renames ``-json.log`` to ``-json.log.1``.
  ``var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`` links to it (dockershim layout).
- CRI (containerd / CRI-O): ``var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`` holding
  ``<time> stdout F <line>``; lines over 16 KiB become ``P`` pieces and a final ``F``;
  rotation renames ``0.log`` to ``0.log.<YYYYmmdd-HHMMSS>`` and starts a new ``0.log``
  (what kubelet does).
- ``var/log/containers/<pod>_<ns>_<container>-<id>.log`` links to the pod log, as kubelet
  makes it.

The seed's app itself (k8s/examples/app.py, unchanged: one line per second) runs as a
subprocess in one more CRI container, its stdout/stderr stored by a runtime thread, so the
demo ships exactly what the deployed example would log.

Each container also records the lines the transform should emit for what it wrote (the seed
pipeline: JSON objects are decoded, lifted and printed compact; other text stays
``{"log": text}``), so the demo and the end-to-end test can compare S3 with it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.node_layout import CONTAINERS_DIR, add_container

#: dockerd's and containerd's maximum log line piece (bytes).
MAX_PIECE = 16 * 1024
#: With traces on, one line in this many is a multi-line Java stack trace instead.
TRACE_EVERY = 15
#: The seed's demo app, unchanged (what k8s/examples deploys): one JSON line per second.
SEED_APP = Path(__file__).resolve().parent.parent / "k8s" / "examples" / "app.py"


def rfc3339_nano(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def fakenerd_line(seq: int, now_ms: int) -> tuple[str, str]:
    """Line ``seq`` of the seed app: (stream, content). Mostly the seed JSON, some others."""
    if seq % 10 == 4:
        return "stdout", f"fakenerd: GET /healthz 200 in 3ms (request {seq})"
    if seq % 10 == 9:
        return "stderr", f"fakenerd: warning: slow upstream, retrying (request {seq})"
    if seq % 25 == 12:  # a line longer than 16 KiB: the runtime splits it, the forwarder joins
        return "stdout", json.dumps({"name": "fakenerd", "time_ms": now_ms, "blob": "x" * 40000})
    return "stdout", json.dumps({"name": "fakenerd", "time_ms": now_ms})


def runtime_lines(runtime: str, stream: str, content: str) -> bytes:
    """One logical line as the runtime stores it ("docker" or "cri"; pieces over 16 KiB)."""
    raw = content.encode()
    pieces = [raw[i : i + MAX_PIECE] for i in range(0, len(raw), MAX_PIECE)] or [b""]
    out = bytearray()
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        stamp = rfc3339_nano(time.time_ns())
        text = piece.decode()
        if runtime == "docker":
            entry = {"log": text + ("\n" if last else ""), "stream": stream, "time": stamp}
            out += json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()
            out += b"\n"
        else:
            out += f"{stamp} {stream} {'F' if last else 'P'} {text}\n".encode()
    return bytes(out)


def java_trace(seq: int) -> list[str]:
    """A Java stack trace as an app prints it to stderr, one line per frame."""
    return [
        f"java.lang.IllegalStateException: order {seq} failed",
        "\tat com.example.fakenerd.Orders.place(Orders.java:42)",
        "\tat com.example.fakenerd.Api.handle(Api.java:17)",
        "Caused by: java.net.SocketTimeoutException: Read timed out",
        "\tat java.base/java.net.SocketInputStream.read(SocketInputStream.java:168)",
        "\t... 12 more",
    ]


def expected_output(runtime: str, content: str) -> str:
    """The NDJSON line the seed-default transform emits for one logical log line."""
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = content + "\n" if runtime == "docker" else content
    return json.dumps({"log": text}, separators=(",", ":"), ensure_ascii=False)


def canonical(line: str | bytes) -> str:
    """A JSON line in a form where key order and escaping don't matter."""
    return json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))


class Container:
    """One simulated container: the app thread plus its runtime's log file."""

    def __init__(self, root: Path, runtime: str, index: int) -> None:
        self.runtime = runtime
        self.namespace = "default" if index % 2 == 0 else "shop"
        self.pod = f"fakenerd-{secrets.token_hex(5)[:10]}-{secrets.token_hex(3)[:5]}"
        self.name = "app"
        self.uid = str(uuid.uuid4())
        self.container_id = secrets.token_hex(32)
        files = add_container(
            root, self.pod, namespace=self.namespace, name=self.name, runtime=runtime,
            container_id=self.container_id, uid=self.uid, pod_log_link=True,
        )  # fmt: skip
        self.log_path, self.link = files.log, files.link
        self.written = 0
        self.expected: list[str] = []
        self.rotated_to: list[Path] = []
        self._lock = threading.Lock()
        self._fh = self.log_path.open("ab", buffering=0)

    def write(self, stream: str, content: str) -> None:
        """Write one logical app line the way this container's runtime stores it."""
        out = runtime_lines(self.runtime, stream, content)
        with self._lock:
            self._fh.write(out)
            self.written += 1
            self.expected.append(expected_output(self.runtime, content))

    def write_event(self, stream: str, lines: list[str]) -> None:
        """Write a multi-line event (a stack trace) in one write; expect it joined in S3."""
        out = b"".join(runtime_lines(self.runtime, stream, line) for line in lines)
        with self._lock:
            self._fh.write(out)
            self.written += len(lines)
            self.expected.append(expected_output(self.runtime, "\n".join(lines)))

    def rotate(self) -> Path:
        """Rotate the log file like the runtime/kubelet does; return the rotated file."""
        with self._lock:
            if self.runtime == "docker":
                target = self.log_path.with_name(self.log_path.name + ".1")
            else:
                stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
                target = self.log_path.with_name(f"0.log.{stamp}")
            self._fh.close()
            os.rename(self.log_path, target)
            self._fh = self.log_path.open("ab", buffering=0)
            self.rotated_to.append(target)
            return target

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class Workload:
    """Runs the app in every container on its own thread at ``rate`` lines per second.

    With ``seed_app`` (and k8s/examples/app.py present) one more CRI container runs the seed's
    app itself as a subprocess; a runtime thread stores its stdout/stderr lines.
    """

    def __init__(
        self,
        root: Path,
        containers: int,
        rate: float = 5.0,
        *,
        seed_app: bool = True,
        traces: bool = False,
    ) -> None:
        runtimes = ["docker", "cri"]
        self.containers = [Container(root, runtimes[i % 2], i) for i in range(containers)]
        self.rate = rate
        self.traces = traces  # every TRACE_EVERY-th line of an app is a Java stack trace
        self.seed_container: Container | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        if seed_app and SEED_APP.exists():
            self.seed_container = Container(root, "cri", containers)
            self.containers.append(self.seed_container)
        self.glob = str(root / CONTAINERS_DIR / "*.log")
        self._stop = threading.Event()
        self._rotate_at: float | None = None
        self._threads: list[threading.Thread] = []
        self._rotate_lock = threading.Lock()
        self.errors: list[BaseException] = []

    def start(self, rotate_after_s: float | None = None) -> None:
        if rotate_after_s is not None:
            self._rotate_at = time.monotonic() + rotate_after_s
        for n, container in enumerate(self.containers):
            if container is self.seed_container:
                self._start_seed_app(container, n)
                continue
            thread = threading.Thread(
                target=self._run, args=(container, n), name=f"app-{n}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _start_seed_app(self, container: Container, n: int) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(SEED_APP)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # stopped by stop(), not by the terminal's Ctrl-C
        )
        self._procs.append(proc)
        for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            thread = threading.Thread(
                target=self._pump,
                args=(container, n, stream, pipe),
                name=f"runtime-{n}-{stream}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _pump(self, container: Container, n: int, stream: str, pipe: Any) -> None:
        """The container runtime's side: store each line the process prints."""
        try:
            for raw in iter(pipe.readline, b""):
                self._maybe_rotate(container, n)
                container.write(stream, raw.decode(errors="replace").rstrip("\n"))
        except BaseException as exc:
            self.errors.append(exc)

    def _maybe_rotate(self, container: Container, n: int) -> None:
        # containers rotate one after another, 0.1 s apart, mid-stream
        with self._rotate_lock:
            due = self._rotate_at is not None and time.monotonic() >= self._rotate_at + n / 10
            if due and not container.rotated_to:
                container.rotate()

    def _run(self, container: Container, n: int) -> None:
        period = 1.0 / self.rate
        seq = 0
        next_at = time.monotonic() + period * n / max(1, len(self.containers))
        try:
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                self._maybe_rotate(container, n)
                if self.traces and seq % TRACE_EVERY == TRACE_EVERY - 1:
                    container.write_event("stderr", java_trace(seq))
                else:
                    stream, content = fakenerd_line(seq, int(time.time() * 1000))
                    container.write(stream, content)
                seq += 1
                next_at += period
        except BaseException as exc:  # surfaced by stop()
            self.errors.append(exc)

    def stop(self) -> None:
        self._stop.set()
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(timeout=5)
        for proc in self._procs:
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        for container in self.containers:
            container.close()
        if self.errors:
            raise RuntimeError(f"app thread failed: {self.errors[0]!r}") from self.errors[0]

    @property
    def written(self) -> int:
        return sum(c.written for c in self.containers)

    @property
    def rotations(self) -> int:
        return sum(len(c.rotated_to) for c in self.containers)

    def expected(self, namespaces: set[str] | None = None) -> Counter[str]:
        """What S3 should hold: the lines of every container (of `namespaces` if given)."""
        return Counter(
            canonical(line)
            for c in self.containers
            if namespaces is None or c.namespace in namespaces
            for line in c.expected
        )

    @property
    def namespaces(self) -> set[str]:
        return {c.namespace for c in self.containers}
