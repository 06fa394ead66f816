"""Careless and hostile input to the forwarder (issue 21): settings and files it cannot use
exit 2 with one line naming them, nothing to read is said loudly, and its HTTP port keeps
its threads and memory bounded whatever clients send. The forwarder runs as a subprocess."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from testkit.forwarder import (
    REPO,
    STREAM,
    ForwarderProc,
    Node,
    healthy,
    http_get,
    running,
    wait_for,
)
from testkit.lines import cri_line


def start_up(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the forwarder with `args` until it exits (it must, within 30 s)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PODHOSE_"))}
    return subprocess.run(
        [sys.executable, "-m", "forwarder", "--delivery-stream", STREAM, *args],
        env={**base, "PYTHONPATH": str(REPO), "AWS_CONFIG_FILE": "/nonexistent", **(env or {})},
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one line on stderr naming `words`, no traceback."""
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("podhose-forwarder: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--region", "not a region"], {}, "--region"),
        ([], {"PODHOSE_REGION": "eu_west_1"}, "PODHOSE_REGION"),
        ([], {"AWS_REGION": "Frankfurt"}, "AWS_REGION"),
        ([], {}, "no AWS region"),
    ],
)
def test_a_region_that_is_no_region_exits_2(
    args: list[str], env: dict[str, str], named: str, tmp_path: Path
) -> None:
    refused(start_up("--db", str(tmp_path / "o.db"), *args, env=env), named)


def test_a_db_that_cannot_be_used_exits_2_naming_it(tmp_path: Path) -> None:
    region = ("--region", "eu-west-1", "--http-port", "0")
    missing = tmp_path / "no-such-folder" / "o.db"
    refused(start_up("--db", str(missing), *region), str(missing), "does not exist")
    assert not missing.parent.exists()  # not created behind the user's back
    refused(start_up("--db", str(tmp_path), *region), str(tmp_path), "folder")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    refused(start_up("--db", str(garbage), *region), str(garbage), "not a database")
    refused(start_up("--db", "/proc/podhose.db", *region), "/proc/podhose.db")


def test_a_second_forwarder_on_the_same_db_exits_2(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    db = tmp_path / "state" / "offsets.db"
    with running(ForwarderProc(endpoint.url, node, db)) as first:
        wait_for(first.up, 30, "the first forwarder")
        second = start_up("--db", str(db), "--path", node.glob, "--region", "eu-west-1",
                          "--http-port", "0")  # fmt: skip
        refused(second, str(db), "another forwarder")
        assert first.up()
    with sqlite3.connect(db) as conn:  # the first one's database is intact
        conn.execute("SELECT count(*) FROM offsets").fetchone()


def test_a_port_that_cannot_be_served_exits_2(tmp_path: Path) -> None:
    base = ("--db", str(tmp_path / "o.db"), "--region", "eu-west-1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        refused(start_up(*base, "--http-host", "127.0.0.1", "--http-port", port), port, "in use")
    refused(start_up(*base, "--http-host", "no-such-host.invalid", "--http-port", "2020"),
            "no-such-host.invalid")  # fmt: skip


def test_nothing_to_read_is_said_and_fails_readiness(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    with running(ForwarderProc(endpoint.url, node, tmp_path / "a" / "o.db")) as proc:
        wait_for(proc.up, 30, "up")
        wait_for(lambda: proc.get("/readyz")[0] == 503, 10, "not ready")
        assert "nothing to read: no file matches --path" in proc.get("/readyz")[1]
        assert "nothing to read" in proc.log()
        c = node.add("app", "cri")
        c.write(cri_line("at last"))
        wait_for(lambda: proc.get("/readyz")[0] == 200, 10, "ready once a file appears")
    eof = ForwarderProc(endpoint.url, Node(tmp_path / "empty"), tmp_path / "b" / "o.db",
                        "--exit-on-eof")  # fmt: skip
    with running(eof):
        assert eof.wait(30) == 1
    assert "exit 1: not everything could be read" in eof.log()


def test_exit_on_eof_exits_1_when_a_matched_path_is_unreadable(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    c = node.add("app", "cri")
    c.write(cri_line("fine"))
    (node.containers_dir / "dangling_default_app-0.log").symlink_to(tmp_path / "gone.log")
    with running(ForwarderProc(endpoint.url, node, tmp_path / "s" / "o.db", "--exit-on-eof")) as p:
        assert p.wait(30) == 1
    assert "dangling_default_app-0.log" in p.log()
    assert len(endpoint.received()) == 1  # what could be read was delivered


def test_slow_and_huge_requests_keep_the_http_server_bounded(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    with running(ForwarderProc(endpoint.url, node, tmp_path / "s" / "o.db")) as proc:
        wait_for(proc.up, 30, "up")
        assert proc.proc is not None
        forwarder = psutil.Process(proc.proc.pid)
        threads, rss = forwarder.num_threads(), forwarder.memory_info().rss
        half_sent = []
        for _ in range(300):  # a request line, and never the end of the headers
            s = socket.create_connection(("127.0.0.1", proc.port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            half_sent.append(s)
        huge = b"X-Pad: " + b"a" * 65_000 + b"\r\n"
        for _ in range(20):  # ~99 headers of 64 KB each
            s = socket.create_connection(("127.0.0.1", proc.port))
            s.settimeout(5)
            with contextlib.suppress(OSError):  # the server stopped reading: the point
                s.sendall(b"GET /healthz HTTP/1.1\r\n" + huge * 99 + b"\r\n")
            half_sent.append(s)
        time.sleep(1)
        assert forwarder.num_threads() <= threads + 8
        assert forwarder.memory_info().rss - rss < 20 * 1024 * 1024
        wait_for(lambda: healthy(proc.port), 15, "answers again once the slow clients time out")
        for s in half_sent:
            s.close()
        status, body = http_get(proc.port, "/metrics")
        assert status == 200 and "podhose_lines_read_total" in body


def test_file_names_leave_metrics_unless_asked(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    c = node.add("secret-pod-name", "cri")
    c.write(cri_line("x"))
    for flags, shown in (((), False), (("--metrics-file-labels",), True)):
        proc = ForwarderProc(endpoint.url, node, tmp_path / f"{shown}" / "o.db", *flags)
        with running(proc):
            wait_for(lambda p=proc: p.up() and "podhose_lag_bytes 0.0" in p.get("/metrics")[1],
                     30, "a commit")  # fmt: skip
            assert ("secret-pod-name" in proc.get("/metrics")[1]) is shown


def test_a_file_the_forwarder_may_not_read_is_counted_once_and_fails_exit_on_eof(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Without the right to read a log file (a non-root forwarder, as docs/forwarder.md
    offers), it was warned about every second, not counted, and --exit-on-eof said
    delivered. Root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (setpriv) stands in for
    a non-root user: file permissions apply to it."""
    fine, secret = node.add("fine", "cri"), node.add("secret", "cri")
    fine.write(cri_line("readable"))
    secret.write(cri_line("not for you"))
    os.chown(secret.target, 65534, 65534)
    secret.target.chmod(0o600)
    proc = ForwarderProc(endpoint.url, node, tmp_path / "s" / "o.db", "--exit-on-eof")
    proc.args = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                 "--inh-caps=-dac_override,-dac_read_search", *proc.args]  # fmt: skip
    with running(proc):
        assert proc.wait(30) == 1, proc.log()
    log = proc.log()
    assert log.count("Permission denied") == 2, log  # the warning, and the exit's reason
    assert secret.src in log
    assert len(endpoint.received()) == 1


def test_scans_that_keep_failing_fail_readiness_until_they_work_again(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """A folder of the globs the forwarder can no longer list (permissions changed, out of
    descriptors): every scan fails, so new files and rotations go unseen, and /readyz said
    200. Root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH stands in for a non-root user."""
    c = node.add("fine", "cri")
    c.write(cri_line("readable"))
    proc = ForwarderProc(endpoint.url, node, tmp_path / "s" / "o.db", "--max-delivery-lag", "2")
    proc.args = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                 "--inh-caps=-dac_override,-dac_read_search", *proc.args]  # fmt: skip
    with running(proc):
        wait_for(lambda: proc.up() and proc.get("/readyz")[0] == 200, 30, "ready")
        node.containers_dir.chmod(0)
        try:
            wait_for(lambda: proc.get("/readyz")[0] == 503, 30, "not ready")
            assert "scans failing" in proc.get("/readyz")[1]
            assert proc.get("/healthz")[0] == 200
        finally:
            node.containers_dir.chmod(0o755)
        wait_for(lambda: proc.get("/readyz")[0] == 200, 30, "ready again")
