"""The forwarder under test: a temp node layout, the forwarder subprocess, decoding."""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from devstack.forwarder_process import FileKey, ForwarderProcess, forwarder_command
from devstack.node_layout import CONTAINERS_DIR, add_container
from devstack.polling import wait_for as poll
from devstack.stack_config import REPO_ROOT as REPO
from transform_lambda.decompress import decode_payload
from transform_lambda.wire_decoder import split_header

STREAM = "podhose-test"


@dataclass
class Container:
    """One container's log file under the temp node, and the /var/log/containers link."""

    link: Path
    target: Path
    runtime: str

    @property
    def src(self) -> str:
        """Basename the forwarder puts in the record header."""
        return self.link.name

    def write(self, data: bytes) -> None:
        """Append bytes to the current log file (as the runtime does)."""
        with open(self.target, "ab") as f:
            f.write(data)

    def rotate(self) -> Path:
        """Rename rotation: kubelet's 0.log -> 0.log.<ts>, dockerd's -json.log -> .log.1."""
        suffix = ".20240501-100000" if self.runtime == "cri" else ".1"
        rotated = self.target.with_name(self.target.name + suffix)
        os.rename(self.target, rotated)
        self.target.touch()
        return rotated


class Node:
    """A temp node root with /var/log/containers, /var/log/pods, /var/lib/docker/containers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.containers_dir = root / CONTAINERS_DIR
        self.containers_dir.mkdir(parents=True)

    @property
    def glob(self) -> str:
        """The --path glob for this node."""
        return str(self.containers_dir / "*.log")

    def add(
        self, pod: str, runtime: str = "cri", ns: str = "default", name: str = "app"
    ) -> Container:
        """Create a container log file and its kubelet symlink."""
        files = add_container(self.root, pod, namespace=ns, name=name, runtime=runtime)
        return Container(files.link, files.log, runtime)


def create_reusing(
    path: Path, want: FileKey, fillers: int = 500, beside: Path | None = None
) -> bool:
    """Create `path`, with the inode `want` if ext4 will give it (True when it did). ext4
    gives a new file the lowest free inode of its directory's (flex) group: fillers (deleted
    after) take the older holes below `want` first, as the churn of a busy node would. A
    directory of another group never gets `want`: with `beside` (the freed file's old path),
    the file is made in that file's folder and renamed to `path` (the inode stays)."""
    folder = path.parent if beside is None else beside.parent
    made = []
    try:
        for i in range(fillers):
            candidate = folder / f".reusing-{i}"
            candidate.touch()
            st = candidate.stat()
            if (st.st_dev, st.st_ino) == want:
                candidate.rename(path)
                return True
            made.append(candidate)
        path.touch()
        return False
    finally:
        for filler in made:
            filler.unlink()


class InodeNotReusedError(AssertionError):
    """ext4 gave a freed inode to another process's file first (tests run in parallel)."""


# For tests that call create_reused: run again, from the start, only when ext4 did not give
# the freed inode (another test's new file took it); any other failure fails at once.
NEEDS_INODE_REUSE = pytest.mark.flaky(reruns=4, only_rerun=[InodeNotReusedError.__name__])


def create_reused(path: Path, want: FileKey, beside: Path | None = None) -> None:
    """create_reusing, required: on ext4 (which reuses a freed inode at once) a file that did
    not get `want` fails the test (InodeNotReusedError: NEEDS_INODE_REUSE runs it again);
    elsewhere (tmpfs, for one) the test cannot run there."""
    from testkit.chaos import filesystem

    if create_reusing(path, want, beside=beside):
        return
    if filesystem(path.parent) == "ext4":
        raise InodeNotReusedError(f"ext4 did not reuse inode {want}: the test proves nothing")
    pytest.skip(f"{filesystem(path.parent) or 'this file system'} does not reuse inodes at once")


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET a path of a forwarder's HTTP server on 127.0.0.1 (OSError if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def healthy(port: int) -> bool:
    """True when /healthz answers 200."""
    try:
        return http_get(port, "/healthz")[0] == 200
    except OSError:
        return False


def metric(port: int, name: str) -> float:
    """Sum of a metric's samples (all labels) from /metrics; 0 when absent."""
    _status, text = http_get(port, "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class ForwarderProc(ForwarderProcess):
    """`python -m forwarder` with the test's flags (0.2 s intervals, its own HTTP port),
    in the test's environment plus dummy credentials; output to a file beside the state."""

    def __init__(
        self, url: str, node: Node, db: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        db.parent.mkdir(parents=True, exist_ok=True)  # the forwarder does not create it
        args = forwarder_command(
            node.glob, STREAM, url, db, "--http-host", "127.0.0.1", "--http-port", str(self.port),
            "--scan-interval", "0.2", "--flush-interval", "0.2", *extra,
        )  # fmt: skip
        environment = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        super().__init__(args, environment, db.parent.parent / f"forwarder.{self.port}.log")

    def start(self) -> ForwarderProc:
        super().start()
        return self

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the HTTP server."""
        return http_get(self.port, path)

    def up(self) -> bool:
        """True once /healthz answers 200."""
        return healthy(self.port)

    def metric(self, name: str) -> float:
        """Sum of a metric's samples (all labels) from /metrics; 0 when absent."""
        return metric(self.port, name)

    def __enter__(self) -> ForwarderProc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def decode(record: bytes) -> tuple[str | None, list[bytes]]:
    """(src from the header or None, lines with their '\\n') of one received record.

    Decoded with the transform's own wire-format reader, as the Lambda will read it.
    """
    header, body = split_header(decode_payload(record))
    assert body.endswith(b"\n") or not body, body[-100:]
    lines = [line + b"\n" for line in body.split(b"\n")[:-1]]
    return (header.source_file if header else None), lines


def delivered(records: Iterable[bytes]) -> dict[str | None, Counter[bytes]]:
    """Every delivered line, counted per source file."""
    out: dict[str | None, Counter[bytes]] = {}
    for record in records:
        src, lines = decode(record)
        out.setdefault(src, Counter()).update(lines)
    return out


def delivered_of(records: Iterable[bytes], c: Container) -> Counter[bytes]:
    """Every delivered line of one container, counted."""
    return delivered(records).get(c.src, Counter())


def fwd(endpoint: FirehoseEndpoint, node: Node, tmp_path: Path, *extra: str) -> ForwarderProc:
    """A forwarder against `endpoint` with its offsets under `tmp_path`/state."""
    return ForwarderProc(endpoint.url, node, tmp_path / "state" / "offsets.db", *extra)


def got(endpoint: FirehoseEndpoint, c: Container) -> Counter[bytes]:
    """Every line of one container the endpoint accepted, counted."""
    return delivered_of(endpoint.received(), c)


def lines_of(data: bytes) -> Counter[bytes]:
    """Lines of a blob, with their '\\n', counted."""
    return Counter(line + b"\n" for line in data.split(b"\n")[:-1])


def wait_for(predicate: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    """Poll `predicate` until true; fail after `timeout` seconds (devstack's poll, asserted)."""
    if not poll(predicate, timeout, 0.05):
        raise AssertionError(f"timed out waiting for {what}")


def count_lines(records: Iterable[bytes]) -> int:
    """Total delivered lines."""
    return sum(len(decode(r)[1]) for r in records)


@contextlib.contextmanager
def running(proc: ForwarderProc):  # type: ignore[no-untyped-def]
    """Start a forwarder and always kill it at the end."""
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
