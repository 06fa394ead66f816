"""Reliability regressions: rotation under backpressure, permanent and invalid errors,
readiness, settings validation, inode reuse and fairness — the forwarder as a subprocess
against the local Firehose endpoint, real files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from testkit.forwarder import REPO, STREAM, Container, Node, fwd, got, lines_of, running, wait_for
from testkit.lines import cri_line, docker_line

SMALL = ("--max-buffer-bytes", str(256 * 1024), "--max-line-bytes", str(64 * 1024))


def backlog(c: Container, lines: int, label: str = "backlog", width: int = 100) -> bytes:
    data = b"".join(docker_line(f"{c.src} {label} {i:07d} {'b' * width}\n") for i in range(lines))
    c.write(data)
    return data


@pytest.mark.parametrize("how", ["rename", "delete"])
def test_a_file_rotated_while_the_buffer_is_full_keeps_its_tail(
    how: str, endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    quiet = node.add("a-quiet", "cri")  # read to its end first (glob order), then it grows
    busy = node.add("b-busy", "docker")
    head = b"".join(cri_line(f"before {i}") for i in range(10))
    quiet.write(head)
    endpoint.throttle()
    with running(fwd(endpoint, node, tmp_path, *SMALL)) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_lines_read_total") >= 10, 30, "head")
        busy_data = backlog(busy, 30_000)  # ~4 MB: fills the 256 KiB buffer at once
        wait_for(lambda: proc.metric("podhose_buffered_bytes") > 190_000, 30, "full buffer")
        tail = b"".join(cri_line(f"tail {i}") for i in range(200))
        piece = cri_line("an unfinished piece", tag="P")  # waits for its F, which never comes
        quiet.write(tail + piece)
        if how == "rename":
            quiet.rotate()
        else:
            quiet.link.unlink()
            quiet.target.unlink()
        time.sleep(2.5)  # past the 1 s drain grace, still throttled: nothing can be read
        assert proc.metric("podhose_files_tracked") >= 1
        endpoint.clear_faults()
        completed = b"2024-05-01T10:00:00.000000001Z stdout F an unfinished piece\n"
        want = lines_of(head + tail + completed)
        wait_for(lambda: got(endpoint, quiet) == want, 60, "the rotated file's tail")
        wait_for(lambda: got(endpoint, busy) == lines_of(busy_data), 60, "the busy file")
    assert got(endpoint, quiet) == want  # nothing lost, nothing twice


def test_busy_file_does_not_starve_the_others(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    busy = node.add("a-busy", "docker")  # first in glob order
    quiet = node.add("z-quiet", "cri")
    busy_data = backlog(busy, 24_000)  # ~3 MB through a 128 KiB buffer: ~50 round trips
    line = cri_line("a quiet pod's only line")
    quiet.write(line)
    extra = ("--max-buffer-bytes", str(128 * 1024), "--max-line-bytes", str(64 * 1024))
    with running(fwd(endpoint, node, tmp_path, *extra, "--flush-interval", "0.05")):
        wait_for(lambda: got(endpoint, quiet) == lines_of(line), 30, "the quiet file's line")
        busy_done = sum(got(endpoint, busy).values())
        wait_for(lambda: got(endpoint, busy) == lines_of(busy_data), 90, "the busy file")
    assert busy_done < 24_000 // 2, busy_done  # it did not wait for the busy file to finish


@pytest.mark.parametrize(
    "cause",
    ["missing-stream", "AccessDeniedException", "KMSDisabledException"],
)
def test_a_permanent_error_is_logged_and_recovers_without_a_restart(
    cause: str, endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    c = node.add("app-1", "cri")
    first = b"".join(cri_line(f"while broken {i}") for i in range(500))
    c.write(first)
    if cause == "missing-stream":
        endpoint.require_streams()  # no stream exists yet
        code = "ResourceNotFoundException"
    else:
        endpoint.fail_calls(cause, 400)
        code = cause
    with running(fwd(endpoint, node, tmp_path, "--max-delivery-lag", "2")) as proc:
        start = time.monotonic()
        wait_for(lambda: code in proc.log() and STREAM in proc.log(), 15, "an ERROR log")
        error = next(line for line in proc.log().splitlines() if code in line)
        assert '"level":"ERROR"' in error.replace(" ", "")
        wait_for(lambda: proc.get("/readyz")[0] == 503, 15, "not ready")
        assert proc.get("/healthz")[0] == 200  # alive: a restart would not help
        assert proc.metric("podhose_permanent_errors_total") >= 1
        assert proc.metric("podhose_delivery_lag_seconds") >= 2
        time.sleep(4)
        elapsed = time.monotonic() - start
        calls = proc.metric("podhose_failures_total")
        assert calls <= 2 * (elapsed / 4.5 + 1), calls  # a slow fixed pace, two senders
        logged = sum(code in line for line in proc.log().splitlines())
        assert logged <= 2  # rate-limited
        if cause == "missing-stream":
            endpoint.create_stream(STREAM)
        else:
            endpoint.clear_faults()
        second = b"".join(cri_line(f"after the fix {i}") for i in range(500))
        c.write(second)
        wait_for(lambda: got(endpoint, c) == lines_of(first + second), 20, "every line")
        wait_for(lambda: proc.get("/readyz")[0] == 200, 10, "ready again")
        assert proc.proc is not None and proc.proc.poll() is None
        assert "delivery resumed" in proc.log()


def test_a_record_firehose_refuses_is_skipped_and_counted(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    good = node.add("good-1", "cri")
    bad = node.add("bad-1", "cri")
    good_data = b"".join(cri_line(f"fine {i}") for i in range(3000))
    bad_data = b"".join(cri_line(f"poisoned file {i}") for i in range(50)) + cri_line("POISON")
    good.write(good_data)
    bad.write(bad_data)
    endpoint.refuse_records(b"POISON")
    with running(fwd(endpoint, node, tmp_path, "--flush-interval", "0.5")) as proc:
        wait_for(lambda: got(endpoint, good) == lines_of(good_data), 30, "the good file")
        wait_for(lambda: proc.metric("podhose_records_skipped_total") == 1, 30, "a skip")
        more = cri_line("written after the bad record")
        bad.write(more)
        wait_for(lambda: got(endpoint, bad) == lines_of(more), 30, "the bad file goes on")
        skipped = proc.metric("podhose_lines_skipped_total")
        assert skipped == sum(lines_of(bad_data).values())  # the whole refused record
        assert "refuses this record" in proc.log()
        assert proc.get("/readyz")[0] == 200


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("PODHOSE_SEND_CONCURRENCY", "0", "1 to 64"),
        ("PODHOSE_GZIP_LEVEL", "15", "1 to 9"),
        ("PODHOSE_SCAN_INTERVAL", "-1", "(0, 3600]"),
        ("PODHOSE_MAX_BUFFER_BYTES", "-5", "1 to 4294967296"),
        ("PODHOSE_EXIT_ON_EOF", "maybe", "true/1/yes/on"),
        ("PODHOSE_DELIVERY_STREAM", "no spaces", "a-z A-Z 0-9"),
    ],
)
def test_invalid_settings_exit_2_naming_the_variable_or_flag(
    variable: str, value: str, words: str, tmp_path: Path
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PODHOSE_")}
    env = {**base, "PYTHONPATH": str(REPO), "PODHOSE_DELIVERY_STREAM": "s", variable: value}
    cmd = [sys.executable, "-m", "forwarder", "--db", str(tmp_path / "o.db")]
    out = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=10)
    assert out.returncode == 2
    assert variable in out.stderr and words in out.stderr, out.stderr
    if variable == "PODHOSE_EXIT_ON_EOF":
        return  # a switch: as a flag it takes no value
    flag = "--" + variable.removeprefix("PODHOSE_").lower().replace("_", "-")
    env.pop(variable)
    out = subprocess.run(
        [*cmd, flag, value], check=False, env=env, capture_output=True, text=True, timeout=10
    )
    assert out.returncode == 2
    assert flag in out.stderr and words in out.stderr, out.stderr


def test_an_offset_is_not_applied_to_a_new_file_that_reuses_the_inode(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    c = node.add("reused-1", "cri")
    old = b"".join(cri_line(f"old file {i}", when="2024-05-01T09:00:00Z") for i in range(100))
    c.write(old)
    with running(fwd(endpoint, node, tmp_path, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0
    c.target.unlink()
    new = b"".join(cri_line(f"new file, longer {i}") for i in range(300))
    c.write(new)
    st = os.stat(c.target)
    db = tmp_path / "state" / "offsets.db"
    with sqlite3.connect(db) as conn:  # the kernel handed the old inode to the new file
        conn.execute("UPDATE offsets SET dev = ?, ino = ?", (st.st_dev, st.st_ino))
    with running(fwd(endpoint, node, tmp_path, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0, proc.log()
    assert got(endpoint, c) == lines_of(old + new)
    assert "does not belong to this file" in proc.log()


def test_an_offset_written_before_fingerprints_still_resumes(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    c = node.add("legacy-db-1", "cri")
    first = b"".join(cri_line(f"first {i}") for i in range(100))
    c.write(first)
    with running(fwd(endpoint, node, tmp_path, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0
    db = tmp_path / "state" / "offsets.db"
    with sqlite3.connect(db) as conn:  # as an older forwarder left it: no fingerprint
        conn.execute("ALTER TABLE offsets DROP COLUMN fp")
        conn.execute("ALTER TABLE offsets DROP COLUMN fp_len")
    second = b"".join(cri_line(f"second {i}") for i in range(100))
    c.write(second)
    with running(fwd(endpoint, node, tmp_path, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0, proc.log()
    assert got(endpoint, c) == lines_of(first + second)  # resumed: nothing twice


def test_sigkill_and_restart_during_an_outage_lose_and_duplicate_nothing(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    c = node.add("outage-1", "docker")
    before = backlog(c, 2_000, "before")
    with running(fwd(endpoint, node, tmp_path, *SMALL)) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(before), 30, "delivery before")
        time.sleep(0.5)  # offsets are saved every 0.2 s: later acks would be re-sent
        endpoint.server_error()  # Firehose goes down
        during = backlog(c, 20_000, "during")
        wait_for(lambda: proc.metric("podhose_buffered_bytes") > 0, 30, "unacknowledged lines")
        proc.signal(signal.SIGKILL)
        proc.wait(10)
    with running(fwd(endpoint, node, tmp_path, *SMALL)) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_failures_total") > 0, 30, "retrying")
        after = backlog(c, 1_000, "after")
        endpoint.clear_faults()
        want = lines_of(before + during + after)
        wait_for(lambda: got(endpoint, c) == want, 60, "every line")
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert got(endpoint, c) == want  # nothing was acknowledged during the outage: no duplicate
