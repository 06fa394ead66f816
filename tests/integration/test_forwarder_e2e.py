"""End-to-end tests: the forwarder as a subprocess, real files, boto3 over HTTP to the endpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
from collections import Counter
from functools import partial
from itertools import zip_longest
from pathlib import Path

import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from testkit.forwarder import (
    Container,
    ForwarderProc,
    Node,
    count_lines,
    delivered,
    got,
    lines_of,
    running,
    wait_for,
)
from testkit.lines import cri_line, docker_line, docker_split

SEED = '{"name": "fakenerd", "time_ms": 1577521193704}\n'


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "offsets.db"


def fwd(
    endpoint: FirehoseEndpoint, node: Node, db: Path, *extra: str, **kw: object
) -> ForwarderProc:
    return ForwarderProc(endpoint.url, node, db, *extra, **kw)  # type: ignore[arg-type]


def stored_offsets(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {os.path.basename(p): o for p, o in conn.execute("SELECT path, offset FROM offsets")}


def test_exit_on_eof_ships_docker_and_cri_with_partials_joined(
    endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    docker = node.add("web-1", "docker")
    long_written, long_joined = docker_split("L" * 50000)
    err_written, err_joined = docker_split("E" * 20000, "stderr")
    whole = b"".join(docker_line(f'{{"i": {i}}}\n') for i in range(5000))
    # stdout and stderr pieces interleave; a trailing backslash-n that is not a newline escape
    interleaved = b"".join(
        a + b
        for a, b in zip_longest(
            long_written.splitlines(keepends=True),
            err_written.splitlines(keepends=True),
            fillvalue=b"",
        )
    )
    odd = docker_line("ends with a backslash and n: \\n")  # log ends `\\\\n` : a partial!
    odd_end = docker_line(" and the rest\n")
    docker.write(whole + interleaved + docker_line(SEED) + odd + odd_end)
    cri = node.add("db-0", "cri", ns="data")
    cri.write(
        cri_line("first ", "stdout", "P", "2024-05-01T10:00:01Z")
        + cri_line("err piece ", "stderr", "P", "2024-05-01T10:00:01Z")
        + cri_line("second ", "stdout", "P", "2024-05-01T10:00:02Z")
        + cri_line("err end", "stderr", "F", "2024-05-01T10:00:02Z")
        + cri_line("third", "stdout", "F", "2024-05-01T10:00:03Z")
        + cri_line("a line with P in it")
        + b"2024-05-01T10:00:04Z stdout F no newline at the end"
    )
    proc = fwd(endpoint, node, db, "--exit-on-eof")
    with running(proc):
        assert proc.wait(60) == 0, proc.log()
    result = delivered(endpoint.received())
    expected_docker = lines_of(whole) + Counter([long_joined, err_joined, docker_line(SEED)])
    expected_docker[docker_line("ends with a backslash and n: \\n and the rest\n")] += 1
    assert result[docker.src] == expected_docker
    assert result[cri.src] == Counter(
        [
            b"2024-05-01T10:00:01Z stderr F err piece err end\n",
            b"2024-05-01T10:00:01Z stdout F first second third\n",
            cri_line("a line with P in it"),
        ]
    )
    assert endpoint.stats.rejected_calls == 0
    half = len(b"2024-05-01T10:00:04Z stdout F no newline at the end")
    sizes = {docker.src: docker.target.stat().st_size, cri.src: cri.target.stat().st_size - half}
    assert stored_offsets(db) == sizes  # the unterminated line is not committed
    assert f'"bytes": {half}' in proc.log() or f'"bytes":{half}' in proc.log()
    # a second run has nothing left to send
    before = len(endpoint.received())
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as again:
        assert again.wait(60) == 0
    assert len(endpoint.received()) == before
    # the writer finishes the line: it arrives whole, once
    cri.write(b" after all\n")
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as last:
        assert last.wait(60) == 0
    new = delivered(endpoint.received()[before:])
    assert new == {
        cri.src: Counter([b"2024-05-01T10:00:04Z stdout F no newline at the end after all\n"])
    }


def test_exit_on_eof_leaves_a_half_written_docker_line_and_pieces_for_later(
    endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    c = node.add("half-1", "docker")
    done = docker_line("complete\n")
    piece = docker_line("a piece of a long line ")  # no \n escape: a partial
    half = b'{"log":"half a line\\n","stream":"std'
    c.write(done + piece + half)
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0, proc.log()
    assert got(endpoint, c) == Counter([done])
    assert stored_offsets(db) == {c.src: len(done)}  # before the unfinished piece
    c.write(b'out","time":"2024-05-01T10:00:09Z"}\n' + docker_line("the rest\n"))
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0, proc.log()
    # the piece and the completed line join into one line, with the first piece's time
    assert got(endpoint, c) == Counter(
        [done, docker_line("a piece of a long line half a line\n"), docker_line("the rest\n")]
    )


def test_excludes_and_self_exclusion(endpoint: FirehoseEndpoint, node: Node, db: Path) -> None:
    app = node.add("app-1")
    me = node.add("podhose-x7k2p", ns="kube-system", name="forwarder")
    noisy = node.add("noisy-1")
    for c in (app, me, noisy):
        c.write(cri_line(f"hello from {c.src}"))
    env = {"POD_NAME": "podhose-x7k2p", "POD_NAMESPACE": "kube-system"}
    proc = fwd(endpoint, node, db, "--exit-on-eof", "--exclude", "*/noisy-1_*", env=env)
    with running(proc):
        assert proc.wait(60) == 0, proc.log()
    assert set(delivered(endpoint.received())) == {app.src}
    proc = fwd(endpoint, node, db, "--exit-on-eof", "--include-self", env=env)
    with running(proc):
        assert proc.wait(60) == 0, proc.log()
    assert set(delivered(endpoint.received())) == {app.src, me.src, noisy.src}


def test_one_line_per_record_mode(endpoint: FirehoseEndpoint, node: Node, db: Path) -> None:
    c = node.add("seed-1", "docker")
    data = b"".join(docker_line(f"line {i}\n") for i in range(1200))
    c.write(data)
    with running(fwd(endpoint, node, db, "--exit-on-eof", "--one-line-per-record")) as proc:
        assert proc.wait(60) == 0, proc.log()
    records = endpoint.received()
    assert sorted(records) == sorted(data.splitlines(keepends=True))
    assert endpoint.stats.calls >= 3  # 500 records per call at most


def test_transform_decodes_what_the_forwarder_sends(
    endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    from transform_lambda.settings import TransformSettings
    from transform_lambda.transform import transform_record

    c = node.add("fakenerd-5d9f7", "docker")
    c.write(docker_line(SEED) * 3 + docker_split("{" + '"k": "' + "v" * 40000 + '"}')[0])
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0, proc.log()
    out: list[dict[str, object]] = []
    for record in endpoint.received():
        result = transform_record(record, TransformSettings())
        out += [json.loads(line) for line in result.data.splitlines()]
    assert out.count({"name": "fakenerd", "time_ms": 1577521193704}) == 3
    assert {"k": "v" * 40000} in out


def test_running_forwarder_follows_new_files_rotation_and_serves_metrics(
    endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    cri = node.add("api-1", "cri")
    docker = node.add("worker-1", "docker")
    with running(fwd(endpoint, node, db)) as proc:
        wait_for(proc.up, 30, "healthz")
        batch1 = b"".join(cri_line(f"cri before rotation {i}") for i in range(2000))
        dbatch1 = b"".join(docker_line(f"docker before rotation {i}\n") for i in range(2000))
        cri.write(batch1)
        docker.write(dbatch1)
        # kubelet: 0.log -> 0.log.<ts>; the runtime writes a few more lines to the old file
        rotated = cri.rotate()
        late = b"".join(cri_line(f"late line {i}") for i in range(10))
        with open(rotated, "ab") as f:
            f.write(late)
        batch2 = b"".join(cri_line(f"cri after rotation {i}") for i in range(2000))
        cri.write(batch2)
        docker.rotate()  # dockerd: -json.log -> -json.log.1
        dbatch2 = b"".join(docker_line(f"docker after rotation {i}\n") for i in range(2000))
        docker.write(dbatch2)
        fresh = node.add("late-pod", "cri")
        fresh.write(cri_line("a file that appeared while running"))
        want = {
            cri.src: lines_of(batch1 + late + batch2),
            docker.src: lines_of(dbatch1 + dbatch2),
            fresh.src: lines_of(cri_line("a file that appeared while running")),
        }
        wait_for(lambda: _all_there(endpoint, want), 30, "rotated lines")
        assert {k: v for k, v in delivered(endpoint.received()).items()} == want
        wait_for(lambda: proc.metric("podhose_files_tracked") == 3, 20, "rotated files closed")
        assert proc.metric("podhose_lines_read_total") == sum(map(_total, want.values()))
        assert proc.metric("podhose_records_sent_total") == len(endpoint.received())
        assert proc.metric("podhose_calls_total") == endpoint.stats.calls
        assert proc.metric("podhose_bytes_sent_total") == endpoint.stats.bytes
        metrics = proc.get("/metrics")[1]
        assert "podhose_lag_bytes " in metrics
        assert "podhose_file_lag_bytes{" not in metrics and cri.src not in metrics
        assert proc.get("/nope")[0] == 404
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert json.loads(proc.log().splitlines()[0])["msg"] == "starting"


def test_copytruncate_restarts_at_zero(endpoint: FirehoseEndpoint, node: Node, db: Path) -> None:
    c = node.add("legacy-1", "cri")
    first = b"".join(cri_line(f"before truncate {i}") for i in range(3000))
    c.write(first)
    with running(fwd(endpoint, node, db)) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(first), 30, "first batch")
        shutil.copy(c.target, c.target.with_name("0.log.copy"))
        with open(c.target, "r+b") as f:
            f.truncate(0)
        second = b"".join(cri_line(f"after {i}") for i in range(50))
        c.write(second)
        wait_for(lambda: got(endpoint, c) == lines_of(first + second), 30, "after truncate")
        assert proc.metric("podhose_truncations_total") == 1
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_deleted_pod_files_are_drained(endpoint: FirehoseEndpoint, node: Node, db: Path) -> None:
    c = node.add("job-1", "cri")
    data = b"".join(cri_line(f"job output {i} " + "x" * 100) for i in range(40000))  # ~5 MB
    c.write(data)
    endpoint.throttle()  # nothing is acknowledged: the forwarder stops at its buffer limit
    limit = 1024 * 1024
    extra = ("--max-buffer-bytes", str(limit), "--max-line-bytes", str(64 * 1024))
    with running(fwd(endpoint, node, db, *extra)) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_buffered_bytes") > 0, 30, "reading")
        wait_for(lambda: proc.metric("podhose_retries_total") > 0, 30, "retries")
        assert proc.metric("podhose_bytes_read_total") < len(data)  # lines are unread
        c.link.unlink()
        shutil.rmtree(c.target.parent.parent)  # the pod directory goes away
        endpoint.clear_faults()
        wait_for(lambda: got(endpoint, c) == lines_of(data), 60, "all lines of the deleted file")
        wait_for(lambda: proc.metric("podhose_files_tracked") == 0, 20, "file closed")
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert stored_offsets(db) == {}  # pruned


def test_sigterm_flushes_everything(endpoint: FirehoseEndpoint, node: Node, db: Path) -> None:
    c = node.add("svc-1", "docker")
    data = b"".join(docker_line(f"line {i}\n") for i in range(3000))
    c.write(data)
    with running(fwd(endpoint, node, db, "--flush-interval", "60")) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_lines_read_total") == 3000, 30, "read")
        assert endpoint.received() == []  # waiting for the 60 s flush interval
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert got(endpoint, c) == lines_of(data)
    assert stored_offsets(db) == {c.src: len(data)}


def test_sigkill_then_restart_loses_nothing(
    endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    c = node.add("busy-1", "cri")
    lines = [cri_line(f"busy {i:07d} " + "y" * 80) for i in range(300_000)]  # ~33 MB
    data = b"".join(lines)
    c.write(data)
    limit = 4 * 1024 * 1024
    extra = ("--max-buffer-bytes", str(limit), "--max-line-bytes", str(256 * 1024))
    with running(fwd(endpoint, node, db, *extra)) as proc:
        wait_for(lambda: len(endpoint.received()) >= 20, 60, "some records")
        proc.signal(signal.SIGKILL)
        proc.wait(10)
    at_kill = stored_offsets(db).get(c.src, 0)
    assert 0 < at_kill < len(data)
    with running(fwd(endpoint, node, db, "--exit-on-eof", *extra)) as proc:
        assert proc.wait(120) == 0, proc.log()
    counts = got(endpoint, c)
    assert set(counts) == set(lines)  # nothing lost
    offset = 0
    for line in lines:  # duplicates only after the committed offset (in flight at the kill)
        if counts[line] > 1:
            assert offset >= at_kill
            assert counts[line] == 2
        offset += len(line)
    # Re-sent: what was unacknowledged (<= the buffer limit) plus what was acknowledged
    # after the last offset save (saves happen every 0.2 s).
    duplicated = sum(len(line) for line in lines if counts[line] > 1)
    assert duplicated <= limit + 6 * 1024 * 1024


def test_new_inode_at_same_path_is_read_from_head(
    endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    c = node.add("recreated-1", "cri")
    old = b"".join(cri_line(f"old {i}") for i in range(1000))
    c.write(old)
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0
    c.target.unlink()
    new = cri_line("new file, short")  # shorter than the stored offset of the old inode
    c.write(new)
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0
    assert got(endpoint, c) == lines_of(old + new)


def _total(counter: Counter[bytes]) -> int:
    return sum(counter.values())


def _all_there(endpoint: FirehoseEndpoint, want: dict[str, Counter[bytes]]) -> bool:
    have = delivered(endpoint.received())
    return all(have.get(src, Counter()) >= lines for src, lines in want.items())


def test_billed_bytes_for_small_json_lines_stay_under_15_percent(
    endpoint: FirehoseEndpoint, tmp_path: Path
) -> None:
    from testkit.backlog import write_backlog

    root = tmp_path / "bench-node"
    raw, lines = write_backlog(root, 120, 8_000_000)
    node = Node.__new__(Node)
    node.root, node.containers_dir = root, root / "var/log/containers"
    with running(fwd(endpoint, node, tmp_path / "db" / "o.db", "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0, proc.log()
    assert sum(sum(c.values()) for c in delivered(endpoint.received()).values()) == lines
    assert endpoint.stats.billed_bytes <= 0.15 * raw, endpoint.stats.billed_bytes / raw
    shutil.rmtree(root)


@pytest.mark.parametrize("runtime", ["cri", "docker"])
def test_rotation_while_stopped_is_drained_after_restart(
    runtime: str, endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    c = node.add("rot-1", runtime)

    make = partial(runtime_line, runtime)

    shipped = b"".join(make(f"shipped before the stop {i}") for i in range(500))
    c.write(shipped)
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0
    unread = b"".join(make(f"written while stopped {i}") for i in range(500))
    c.write(unread)
    c.rotate()  # rotated away while the forwarder is down
    fresh = b"".join(make(f"new file {i}") for i in range(500))
    c.write(fresh)
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0, proc.log()
    assert got(endpoint, c) == lines_of(shipped + unread + fresh)  # no loss, no duplicate
    assert "draining file rotated while stopped" in proc.log()


@pytest.mark.parametrize("runtime", ["cri", "docker"])
def test_file_created_and_rotated_while_stopped_is_read(
    runtime: str, endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    """Two rotations while the forwarder is down: the middle file no offset knows is read."""
    c = node.add("rot-2", runtime)

    make = partial(runtime_line, runtime)

    old_history = c.rotate()  # a rotated file from before the forwarder ever ran
    with open(old_history, "ab") as f:
        f.write(make("history nobody asked for"))
    os.utime(old_history, (1, 1))
    shipped = b"".join(make(f"shipped {i}") for i in range(300))
    c.write(shipped)
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0
    first = b"".join(make(f"first while stopped {i}") for i in range(300))
    c.write(first)
    if runtime == "cri":
        c.rotate()
    else:
        _docker_rotate(c)
    middle = b"".join(make(f"middle file {i}") for i in range(300))
    c.write(middle)
    if runtime == "cri":
        _cri_rotate_again(c)
    else:
        _docker_rotate(c)
    last = b"".join(make(f"current file {i}") for i in range(300))
    c.write(last)
    with running(fwd(endpoint, node, db, "--exit-on-eof")) as proc:
        assert proc.wait(60) == 0, proc.log()
    assert got(endpoint, c) == lines_of(shipped + first + middle + last)  # no loss, no dup
    assert "reading a rotated file no scan saw" in proc.log()


def runtime_line(runtime: str, text: str) -> bytes:
    """One full line of `text` as the runtime writes it (CRI or Docker json-file)."""
    return cri_line(text) if runtime == "cri" else docker_line(text + "\n")


def _cri_rotate_again(c: Container) -> None:
    """kubelet's second rotation: 0.log -> 0.log.<a later timestamp>."""
    os.rename(c.target, c.target.with_name(c.target.name + ".20240501-100500"))
    c.target.touch()


def _docker_rotate(c: Container) -> None:
    """dockerd's rotation: shift -json.log.N to .N+1, then -json.log to .1."""
    rotated = sorted(c.target.parent.glob(c.target.name + ".*"), reverse=True)
    for path in rotated:
        number = int(path.name.rsplit(".", 1)[1])
        os.rename(path, path.with_name(f"{c.target.name}.{number + 1}"))
    os.rename(c.target, c.target.with_name(c.target.name + ".1"))
    c.target.touch()


def test_paths_leading_to_no_file_are_counted_and_logged(
    endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    """A Docker Engine node without /var/lib/docker/containers mounted: links lead nowhere."""
    c = node.add("web-1", "cri")
    data = cri_line(SEED.rstrip("\n"))
    c.write(data)
    missing = node.root / "var/lib/docker/containers/0123/0123-json.log"
    dangling = node.containers_dir / "web-2_default_app-0123.log"
    dangling.symlink_to(missing)
    with running(fwd(endpoint, node, db)) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_unreadable_files") == 1, 30, "gauge")
        wait_for(lambda: got(endpoint, c) == lines_of(data), 30, "the readable file's line")
        wait_for(lambda: "no readable file" in proc.log(), 30, "the warning")
        missing.parent.mkdir(parents=True)
        missing.write_bytes(docker_line(SEED))
        wait_for(lambda: proc.metric("podhose_unreadable_files") == 0, 30, "gauge back to 0")
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        warnings = [line for line in proc.log().splitlines() if "no readable file" in line]
    assert len(warnings) == 1 and str(dangling) in warnings[0]


def test_a_link_dangling_at_one_scan_only_is_counted_not_logged(
    endpoint: FirehoseEndpoint, node: Node, db: Path
) -> None:
    """kubelet's rotation leaves the /var/log/containers link dangling until the runtime
    reopens 0.log: a scan that falls into that moment counts the path, and logs nothing."""
    c = node.add("web-1", "cri")
    c.write(cri_line(SEED.rstrip("\n")))
    missing = node.root / "var/log/pods/default_web-2_0123/app/0.log"
    (node.containers_dir / "web-2_default_app-0123.log").symlink_to(missing)
    with running(fwd(endpoint, node, db, "--scan-interval", "3")) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_unreadable_files") == 1, 30, "gauge")
        missing.parent.mkdir(parents=True)
        missing.write_bytes(cri_line(SEED.rstrip("\n")))
        wait_for(lambda: proc.metric("podhose_unreadable_files") == 0, 30, "gauge back to 0")
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert "no readable file" not in proc.log()


def test_quiet_files_share_one_call_per_flush_interval(tmp_path: Path) -> None:
    """30 quiet containers, each writing a line now and then at its own moment: their
    records close at one tick per --flush-interval and share a call (closed one by one as
    each file's first line aged, they went out at ~7 calls/s)."""
    import time

    node = Node(tmp_path / "node")
    containers = [node.add(f"pod{i}", "cri") for i in range(30)]
    with (
        FirehoseEndpoint() as endpoint,
        running(
            ForwarderProc(
                endpoint.url, node, tmp_path / "state/offsets.db", "--flush-interval", "1"
            )
        ) as proc,
    ):
        wait_for(proc.up, 30, "up")
        calls_before, started, written = endpoint.stats.calls, time.monotonic(), Counter()
        while time.monotonic() - started < 6:
            for i, c in enumerate(containers):
                line = cri_line(f"quiet {len(written)} of {i}")
                c.write(line)
                written[(c.src, line)] += 1
                time.sleep(1 / 60)
        seconds = time.monotonic() - started
        total = sum(written.values())
        wait_for(lambda: count_lines(endpoint.received()) >= total, 20, "every line")
        calls = endpoint.stats.calls - calls_before
        assert calls / seconds <= 1.6, f"{calls} calls in {seconds:.1f} s"
        for c in containers:
            assert got(endpoint, c) == Counter({line: n for (src, line), n in written.items()
                                                if src == c.src})  # fmt: skip


def test_a_buffer_full_of_open_records_is_sent_at_once(tmp_path: Path) -> None:
    """Open records alone fill the buffer (8 files, a long --flush-interval): nothing in
    flight could free room, so they are closed and sent at once — not one buffer per
    flush interval (it took 4 intervals, 40 s, for 2 MB)."""
    import time

    node = Node(tmp_path / "node")
    containers = [node.add(f"p{i}", "cri") for i in range(8)]
    args = ("--max-buffer-bytes", str(1024 * 1024), "--flush-interval", "10")
    with (
        FirehoseEndpoint() as endpoint,
        running(ForwarderProc(endpoint.url, node, tmp_path / "state/offsets.db", *args)) as proc,
    ):
        wait_for(proc.up, 30, "up")
        started = time.monotonic()
        written = {}
        for c in containers:
            written[c.src] = b"".join(cri_line(f"{c.src[:3]} {i:06d} " + "z" * 200)
                                      for i in range(1200))  # fmt: skip
            c.write(written[c.src])
        for c in containers:
            wait_for(lambda c=c: got(endpoint, c) == lines_of(written[c.src]), 30, c.src)
        assert time.monotonic() - started < 9  # before the first flush tick
