"""Regressions of an adversarial review (issue 20): each test sets up one way the forwarder
lost, cut, invented or stopped shipping lines, and fails on the code before its fix. The
forwarder runs as a subprocess against the local Firehose endpoint on real files (/tmp is
ext4 here, which gives a freed inode number to the next new file at once)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from devstack.firehose_endpoint import MALFORMED_SHAPES, FirehoseEndpoint
from forwarder.config import parse_config
from forwarder.mainloop import Forwarder
from testkit.forwarder import (
    NEEDS_INODE_REUSE,
    STREAM,
    Container,
    ForwarderProc,
    Node,
    create_reused,
    delivered,
    fwd,
    got,
    lines_of,
    running,
    wait_for,
)
from testkit.lines import cri_line, docker_line

SMALL_BUFFER = ("--max-buffer-bytes", str(256 * 1024), "--max-line-bytes", str(64 * 1024))


def cri_lines(label: str, count: int, width: int = 60) -> bytes:
    return b"".join(cri_line(f"{label} {i:06d} {'x' * width}") for i in range(count))


def delete(c: Container) -> None:
    """What kubelet does when a pod goes: the link and the file."""
    c.link.unlink()
    c.target.unlink()


def test_a_new_file_on_a_reused_inode_is_read_while_old_records_await_acks(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Finding 1: a drained file was closed before its acks and its inode freed; the next
    new log file got the inode and was skipped as 'closed'. A rename-rotating writer whose
    rotated files are removed lost whole files while Firehose throttled."""
    endpoint.throttle()  # nothing is acknowledged: every file's records stay in flight
    c = node.add("rotating", "cri")
    rotated = c.target.with_name(c.target.name + ".20240501-100000")
    written = b""
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(proc.up, 30, "up")
        for generation in range(6):
            data = cri_lines(f"generation-{generation}", 10)
            c.write(data)
            written += data
            lines = len(lines_of(written))
            wait_for(
                lambda n=lines: proc.metric("podhose_lines_read_total") >= n,  # type: ignore[misc]
                10,
                f"generation {generation} read (inode {c.target.stat().st_ino})",
            )
            c.rotate()  # the new 0.log may take the inode of the file removed last round
            wait_for(lambda: proc.metric("podhose_files_tracked") == 1, 30, "rotated drained")
            rotated.unlink()
        endpoint.clear_faults()
        wait_for(lambda: got(endpoint, c) == lines_of(written), 30, "every generation")


@pytest.mark.parametrize("flush_timeout", ["1", "3600"])
def test_one_stream_stopped_mid_line_does_not_stop_the_node(
    flush_timeout: str, endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Finding 2: a piece left open on stdout held the file's offset, and every byte read on
    stderr after it counted as buffered: the buffer filled and no file was read any more."""
    bar = node.add("progress-bar", "cri")
    other = node.add("other", "docker")
    piece = cri_line("downloading " + "#" * 20_000, tag="P")  # a progress bar, never ended
    stderr = b"".join(cri_line(f"err {i:06d} {'e' * 100}", "stderr") for i in range(12_000))
    other_data = b"".join(docker_line(f"other {i:06d}\n") for i in range(20_000))
    extra = (*SMALL_BUFFER, "--partial-flush-timeout", flush_timeout)
    with running(fwd(endpoint, node, tmp_path, *extra)) as proc:
        wait_for(proc.up, 30, "up")
        bar.write(piece)
        time.sleep(0.5)
        bar.write(stderr)  # ~1.4 MB, five times the buffer
        other.write(other_data)
        wait_for(lambda: got(endpoint, other) == lines_of(other_data), 60, "the other file")
        wait_for(lambda: lines_of(stderr) <= got(endpoint, bar), 60, "the stderr lines")
        assert proc.get("/readyz")[0] == 200
        if flush_timeout == "1":
            shipped = piece.replace(b" P ", b" F ", 1)
            wait_for(lambda: got(endpoint, bar)[shipped] == 1, 30, "the piece, as it is")
            assert proc.metric("podhose_partial_lines_flushed_total") == 1
            bar.write(cri_line(" 100%"))  # the end of the line comes: its own line
            wait_for(lambda: got(endpoint, bar)[cri_line(" 100%")] == 1, 30, "the rest")
    assert sum(got(endpoint, bar).values()) == len(lines_of(stderr)) + 2 * (flush_timeout == "1")


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_incompressible_lines_over_a_record_arrive_whole(
    compression: str, endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Finding 3: two lines that did not compress into one record were cut at the byte
    midpoint, and the encoder dropped a byte it took for a line feed."""
    rng = random.Random(20)
    c = node.add("noise", "cri")
    head = b"2024-05-01T10:00:00.000000001Z stdout F "
    data = b"".join(
        head + rng.randbytes(size - len(head) - 1).replace(b"\n", b" ") + b"\n"
        for size in (524_000, 510_000)
    )
    c.target.write_bytes(data)
    extra = ("--compression", compression, "--exit-on-eof")
    with running(fwd(endpoint, node, tmp_path, *extra)) as proc:
        assert proc.wait(60) == 0, proc.log()
    assert got(endpoint, c) == lines_of(data)
    assert len(endpoint.received()) >= 2


def test_a_file_created_and_rotated_around_a_crash_is_read(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Finding 4: recovery read rotated files modified after the last offset save; another
    file's saves moved that time past the writes of a file the forwarder never scanned."""
    busy = node.add("busy", "docker")
    proc = fwd(endpoint, node, tmp_path, "--scan-interval", "5")
    with running(proc):
        wait_for(lambda: proc.up() and proc.metric("podhose_files_tracked") == 1, 30, "up")
        time.sleep(1.0)  # the first scan is over; the next comes in ~4 s
        new = node.add("new-pod", "cri")
        before = cri_lines("new-before", 25)
        new.write(before)
        busy.write(b"".join(docker_line(f"busy {i}\n") for i in range(10)))
        wait_for(lambda: len(got(endpoint, busy)) == 10, 10, "a later offset save")
        time.sleep(0.5)
        proc.signal(signal.SIGKILL)
        proc.wait(10)
    new.rotate()  # while the forwarder is down
    after = cri_lines("new-after", 15)
    new.write(after)
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: got(endpoint, new) == lines_of(before + after), 30, "the new pod's lines")


def test_a_copytruncate_regrown_past_the_offset_is_read_from_its_head(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Finding 5: only a size below the offset counted as a truncation; a file truncated and
    regrown past the offset while the forwarder was busy lost the head of its new content."""
    c = node.add("copytruncated", "docker")
    old = b"".join(docker_line(f"old {i:04d}\n") for i in range(100))
    c.write(old)
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(old), 30, "the old content")
        proc.signal(signal.SIGSTOP)  # busy or paused
        try:
            shutil.copy(c.target, str(c.target) + ".1")
            os.truncate(c.target, 0)
            new = b"".join(docker_line(f"new content {i:04d}\n") for i in range(150))
            c.write(new)  # longer than the old content: the size never drops below the offset
        finally:
            proc.signal(signal.SIGCONT)
        wait_for(lambda: got(endpoint, c) == lines_of(old + new), 30, "the new content, whole")
        wait_for(lambda: proc.metric("podhose_truncations_total") == 1, 10, "counted")


@pytest.mark.parametrize("shape", MALFORMED_SHAPES)
def test_sending_resumes_after_malformed_answers(
    shape: str, endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Finding 6: a 200 answer without RequestResponses raised out of the sender thread:
    nothing was sent after Firehose recovered, and /healthz stayed 200."""
    c = node.add("app", "cri")
    endpoint.malformed_answers(calls=3, shape=shape)
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(proc.up, 30, "up")
        data = cri_lines("app", 200)
        c.write(data)
        wait_for(lambda: got(endpoint, c) == lines_of(data), 30, "every line after the answers")
        assert endpoint.stats.faults["malformed"] == 3
        assert (
            proc.metric(f'podhose_failures_total{{code="MalformedResponse",stream="{STREAM}"}}')
            == 3
        )
        assert proc.get("/healthz")[0] == 200
        assert proc.metric("podhose_sender_restarts_total") == 0
        assert "Traceback" not in proc.log()


@pytest.mark.parametrize("runtime", ["cri", "docker"])
def test_a_read_of_only_an_unfinished_piece_adds_no_line(
    runtime: str, endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Finding 7: a read holding only an unfinished piece opened a record of no line, which
    arrived as one empty line."""
    c = node.add("pieces", runtime)
    if runtime == "cri":
        first, rest = cri_line("half a ", tag="P"), cri_line("line")
        joined = cri_line("half a line")
    else:
        first, rest = docker_line("half a "), docker_line("line\n")
        joined = docker_line("half a line\n")
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(proc.up, 30, "up")
        c.write(first)
        wait_for(lambda: proc.metric("podhose_bytes_read_total") == len(first), 30, "the piece")
        time.sleep(1.0)  # several flush intervals
        c.write(rest)
        wait_for(lambda: got(endpoint, c) == Counter([joined]), 30, "the joined line")
        time.sleep(0.5)
    assert delivered(endpoint.received()) == {c.src: Counter([joined])}


def test_a_fifo_is_refused_without_blocking(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Finding 8a: a log path swapped for a FIFO blocked the open forever. Found by the scan,
    it is counted as unreadable; met at the open (swapped after the scan), refused at once."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (node.containers_dir / "swapped_default_app-0.log").symlink_to(fifo)
    c = node.add("app", "cri")
    data = cri_lines("app", 50)
    c.write(data)
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(data), 30, "the regular file")
        wait_for(lambda: proc.metric("podhose_unreadable_files") == 1, 10, "the FIFO counted")
        assert proc.get("/healthz")[0] == 200


def test_a_fifo_met_at_the_open_does_not_block(tmp_path: Path) -> None:
    from forwarder.tail import TailedFile

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    st = os.stat(fifo)
    result: list[object] = []
    opener = threading.Thread(
        target=lambda: result.append(TailedFile.open((st.st_dev, st.st_ino), str(fifo), None, 1024))
    )
    opener.start()
    opener.join(5)
    if opener.is_alive():  # unblock it before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        opener.join(5)
    assert result == [None]


def test_a_file_rotated_between_the_first_scan_and_its_open_is_drained(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 8b: at start-up, a file rotated between the scan and the open lost its stored
    row, so its unread tail was neither resumed nor drained."""
    c = node.add("app", "cri")
    head = cri_lines("head", 40)
    c.write(head)
    db = tmp_path / "state" / "offsets.db"
    with running(ForwarderProc(endpoint.url, node, db)) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(head), 30, "the head")
        time.sleep(0.5)  # an offset save
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    tail = cri_lines("tail", 30)
    c.write(tail)  # unread: resumes from the stored offset
    fresh = cri_lines("fresh", 10)

    from forwarder import mainloop

    real_scan = mainloop.scan

    def scan_then_rotate(*args: object, **kwargs: object) -> object:
        found = real_scan(*args, **kwargs)  # type: ignore[arg-type]
        if not c.target.with_name(c.target.name + ".20240501-100000").exists():
            c.rotate()
            c.write(fresh)
        return found

    monkeypatch.setattr(mainloop, "scan", scan_then_rotate)
    db.parent.mkdir(exist_ok=True)
    cfg = parse_config(
        ["--path", node.glob, "--delivery-stream", STREAM, "--endpoint-url", endpoint.url,
         "--db", str(db), "--http-port", "0", "--exit-on-eof", "--scan-interval", "0.2",
         "--region", "us-east-1"],
        {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
    )  # fmt: skip
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    assert Forwarder(cfg).run() == 0
    assert got(endpoint, c) == lines_of(head + tail)  # the fresh file comes with the next scan


def test_on_sigterm_a_deleted_file_is_read_to_its_end_first(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Finding 8c: on SIGTERM, what was left of deleted files (no restart can find them) was
    not read before stopping."""
    c = node.add("gone", "docker")
    data = b"".join(docker_line(f"gone {i:06d} {'g' * 100}\n") for i in range(20_000))  # ~3 MB
    c.write(data)
    endpoint.throttle()
    with running(fwd(endpoint, node, tmp_path, *SMALL_BUFFER, "--shutdown-timeout", "60")) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_buffered_bytes") > 150_000, 30, "full")
        delete(c)
        time.sleep(0.5)
        proc.signal(signal.SIGTERM)
        time.sleep(1.0)
        endpoint.clear_faults()
        assert proc.wait(90) == 0, proc.log()
    assert got(endpoint, c) == lines_of(data)


def test_the_incompressible_line_cut_keeps_every_byte() -> None:
    """A single line no record can hold even alone is cut into lines that each decode whole;
    their texts, joined, are the line's text."""
    from forwarder.partials import cut_line

    rng = random.Random(7)
    alphabet = ["a", "\\", '"', "\n", "\t", "é", "\u2028", "😀", "\x01", "u", "0"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(8, 60)))
        line = json.dumps({"log": text, "stream": "stderr", "time": "T"}, separators=(",", ":"))
        line = line if rng.random() < 0.5 else line.replace("\\u00e9", "é")
        first, rest = cut_line(line.encode() + b"\n")
        a, b = json.loads(first), json.loads(rest)
        assert a["log"] + b["log"] == text
        assert a["stream"] == b["stream"] == "stderr"
        content = text.replace("\n", " ").encode()
        first, rest = cut_line(b"2024-05-01T10:00:00Z stdout F " + content + b"\n")
        assert first.startswith(b"2024-05-01T10:00:00Z stdout F ") and first.endswith(b"\n")
        assert first[30:-1] + rest[30:-1] == content
        first.decode()
        rest.decode()


def test_a_sender_that_fails_or_dies_loses_no_record(
    endpoint: FirehoseEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 6, second half: records a failing sender held go back to the queue; a dead
    sender thread fails liveness until the main loop replaces it."""
    from forwarder.acks import AckTracker
    from forwarder.metrics import Metrics
    from forwarder.send_queue import Record, SendQueue
    from forwarder.sender import Sender

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    cfg = parse_config(["--delivery-stream", STREAM, "--endpoint-url", endpoint.url,
                        "--region", "us-east-1", "--send-concurrency", "1"], {})  # fmt: skip
    queue, tracker, metrics = SendQueue(0.0), AckTracker(), Metrics()
    sender = Sender(cfg, queue, tracker, metrics, threading.Event())
    real_put, faults = sender.put_once, ["raise", "die"]

    class Die(BaseException):
        pass

    def flaky_put(records: list[Record]) -> object:
        fault = faults.pop(0) if faults else None
        if fault == "raise":
            raise RuntimeError("a bug")
        if fault == "die":
            raise Die
        return real_put(records)

    monkeypatch.setattr(sender, "put_once", flaky_put)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the death is expected
    tracker.start((1, 1), 0)
    mark = tracker.mark((1, 1), 10, 1, 0.0, size=10)
    queue.put([Record(b"one record", mark, 1)])
    sender.start()
    wait_for(lambda: not sender.alive(), 10, "the thread's death")
    assert not sender.alive()
    assert sender.revive() == 1 and metrics.sender_restarts._value.get() == 1
    wait_for(lambda: tracker.unacked() == 0, 10, "the record, delivered")
    assert endpoint.received() == [b"one record"]
    queue.close()


# ----- a second review, of the fixes above (each confirmed by a script first)


def test_a_clean_stop_with_an_unfinished_piece_sends_nothing_twice(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Lines after an unfinished piece were shipped but its offset was kept before them: a
    clean restart (or every --exit-on-eof run) sent them again."""
    c = node.add("bar", "cri")
    piece = cri_line("progress " + "#" * 200, tag="P")
    err = b"".join(cri_line(f"err {i:05d} " + "e" * 80, "stderr") for i in range(2000))
    with running(fwd(endpoint, node, tmp_path, "--partial-flush-timeout", "60")) as proc:
        wait_for(proc.up, 30, "up")
        c.write(piece + err)
        wait_for(lambda: lines_of(err) <= got(endpoint, c), 30, "stderr delivered")
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert got(endpoint, c)[piece.replace(b" P ", b" F ", 1)] == 1  # shipped as it was
    with running(fwd(endpoint, node, tmp_path)) as again:
        c.write(cri_line(" 100%"))
        wait_for(lambda: got(endpoint, c)[cri_line(" 100%")] == 1, 30, "the rest of the line")
        wait_for(lambda: again.metric("podhose_files_tracked") == 1, 10, "tracked")
    assert max(got(endpoint, c).values()) == 1


def test_a_path_that_goes_away_and_comes_back_is_neither_cut_nor_sent_again(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """The glob's link vanished for longer than the drain grace, the file itself stayed: its
    half-written line was shipped cut, and once acknowledged the file was read from 0."""
    c = node.add("app", "cri")
    data = cri_lines("line", 1000)
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(proc.up, 30, "up")
        c.write(data + b"2024-05-01T10:00:01.000000000Z stdout F half a li")
        wait_for(lambda: lines_of(data) <= got(endpoint, c), 30, "delivered")
        target = os.readlink(c.link)
        c.link.unlink()
        time.sleep(3)  # past the 1 s drain grace
        os.symlink(target, c.link)
        more = cri_lines("after", 10)
        c.write(b"ne, completed\n" + more)
        whole = b"2024-05-01T10:00:01.000000000Z stdout F half a line, completed\n"
        wait_for(lambda: lines_of(data + whole + more) == got(endpoint, c), 30, "all once")
        time.sleep(1)
    assert got(endpoint, c) == lines_of(data + whole + more)


def test_a_kubelet_compression_temp_file_is_not_read_as_a_log(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """kubelet writes <log>.<ts>.tmp (gzip) before renaming it .gz; recovery at start read it."""
    import gzip

    c = node.add("app", "cri")
    data = cri_lines("line", 200)
    c.write(data)
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: lines_of(data) == got(endpoint, c), 30, "delivered")
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    tmp = c.target.with_name(c.target.name + ".20240501-095000.tmp")
    tmp.write_bytes(gzip.compress(cri_lines("old rotated", 500)))
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_files_tracked") == 1, 30, "up")
        time.sleep(2)
    assert got(endpoint, c) == lines_of(data)


def test_backpressure_does_not_cut_lines_whose_end_is_on_disk(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Reading stopped (buffer full) between a piece and its end, already written: after the
    partial flush timeout the piece was shipped alone."""
    c = node.add("app", "cri")
    data, wanted = b"", b""
    for i in range(300):
        when = f"2024-05-01T10:00:00.{i:09d}Z"
        pieces = [f"L{i:04d}-{k}-" + "y" * 3000 for k in range(3)]
        data += b"".join(cri_line(p, tag="PPF"[k], when=when) for k, p in enumerate(pieces))
        wanted += cri_line("".join(pieces), when=when)
    endpoint.throttle()
    extra = ("--max-buffer-bytes", str(64 * 1024), "--max-line-bytes", "16384",
             "--max-record-bytes", str(32 * 1024), "--partial-flush-timeout", "1")  # fmt: skip
    with running(fwd(endpoint, node, tmp_path, *extra)) as proc:
        wait_for(proc.up, 30, "up")
        c.write(data)
        time.sleep(4)  # an outage longer than the partial flush timeout
        endpoint.clear_faults()
        wait_for(lambda: got(endpoint, c) == lines_of(wanted), 60, "every line whole")
        assert proc.metric("podhose_partial_lines_flushed_total") == 0


def test_a_full_offsets_disk_does_not_stop_shipping(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """sqlite's 'database or disk is full' escaped the main loop: exit 1 at every start."""
    import subprocess

    mnt = tmp_path / "dbfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        c = node.add("app", "cri")
        with running(ForwarderProc(endpoint.url, node, mnt / "offsets.db")) as proc:
            wait_for(proc.up, 30, "up")
            with contextlib.suppress(OSError), open(mnt / "filler", "wb") as filler:
                while True:
                    filler.write(bytes(4096))
                    filler.flush()
            others = [node.add(f"p{i}", "cri") for i in range(50)]  # rows to write
            for other in others:
                other.write(cri_lines(other.src, 20))
            data = cri_lines("after", 100)
            c.write(data)
            wait_for(lambda: got(endpoint, c) == lines_of(data), 30, "shipping goes on")
            wait_for(lambda: proc.metric("podhose_offset_save_failures_total") > 0, 10, "counted")
            assert proc.proc is not None and proc.proc.poll() is None
            assert "cannot save offsets" in proc.log()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_docker_file_resumed_mid_line_is_still_read_as_docker(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """The format was decided from the first byte read: after a restart at an offset inside
    a cut oversize line, a Docker file was read as CRI and its pieces no longer joined."""
    c = node.add("app", "docker")
    args = ("--max-line-bytes", "1024")
    with running(fwd(endpoint, node, tmp_path, *args)) as proc:
        wait_for(proc.up, 30, "up")
        c.write(docker_line("a" * 1500 + "\n") + b'{"log":"' + b"b" * 1500 + b"\\n")
        wait_for(lambda: proc.metric("podhose_oversize_lines_total") >= 1, 10, "cut")
        time.sleep(0.5)
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    c.write(b'","stream":"stdout","time":"2024-05-01T10:00:01Z"}\n')
    c.write(docker_line("first half ", when="2024-05-01T10:00:02Z"))
    c.write(docker_line("second half\n", when="2024-05-01T10:00:03Z"))
    joined = docker_line("first half second half\n", when="2024-05-01T10:00:02Z")
    with running(fwd(endpoint, node, tmp_path, *args)):
        wait_for(lambda: got(endpoint, c)[joined] == 1, 30, "the pieces joined")


def test_a_scan_that_cannot_list_its_folder_changes_nothing(tmp_path: Path) -> None:
    """glob swallows EMFILE: out of descriptors, every file looked deleted and was drained."""
    import resource

    from forwarder.scan import ScanError, scan

    (tmp_path / "a.log").write_bytes(b"x\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        with pytest.raises(ScanError):
            scan([str(tmp_path / "*.log")], [], None)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(scan([str(tmp_path / "*.log")], [], None)) == 1


# ----- a third review, of the second round of fixes


def test_unfinished_pieces_that_fill_the_buffer_are_shipped_not_kept_forever(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Pieces counted in the buffer could be flushed only once their file was read to its
    end; with the buffer full of them, nothing was ever read again (Firehose healthy)."""
    bars = [node.add(f"bar{i}", "cri") for i in range(4)]
    quiet = node.add("quiet", "cri")
    wanted = {}
    for i, c in enumerate(bars):  # a 60 KB piece, then stderr lines, all on disk
        data = cri_line(f"bar{i} " + "#" * 60_000, tag="P")
        data += b"".join(cri_line(f"err{i} {k:05d} " + "e" * 100, "stderr") for k in range(1000))
        c.write(data)
        wanted[c.src] = lines_of(data.replace(b" P ", b" F ", 1))
    extra = (*SMALL_BUFFER, "--partial-flush-timeout", "1")
    with running(fwd(endpoint, node, tmp_path, *extra)) as proc:
        wait_for(proc.up, 30, "up")
        time.sleep(2)
        quiet.write(cri_lines("quiet", 10))
        wait_for(lambda: got(endpoint, quiet) == lines_of(cri_lines("quiet", 10)), 30, "quiet")
        for c in bars:
            wait_for(lambda c=c: got(endpoint, c) == wanted[c.src], 30, c.src)  # type: ignore[misc]


def test_exit_on_eof_exits_when_a_link_went_away_but_the_file_stayed(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Recovered as 'rotated' but still in place, the file was never final: the run hung."""
    a, b = node.add("a", "cri"), node.add("b", "cri")
    a.write(cri_lines("a", 5))
    b.write(cri_lines("b", 5))
    db = tmp_path / "state" / "offsets.db"
    with running(ForwarderProc(endpoint.url, node, db, "--exit-on-eof")) as first:
        assert first.wait(60) == 0
    a.write(cri_line("a after"))
    a.link.unlink()
    with running(ForwarderProc(endpoint.url, node, db, "--exit-on-eof")) as second:
        assert second.wait(30) == 0
    assert got(endpoint, a) == lines_of(cri_lines("a", 5) + cri_line("a after"))


def test_a_copytruncate_with_a_line_boundary_at_the_old_offset_sends_nothing_twice(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Lines of equal length: the byte before the old offset is a line feed again, so the
    read went on from there; the offset save's fingerprint check then re-read from 0."""
    c = node.add("fixed", "cri")
    old = b"".join(
        cri_line(f"old {i:05d}", when=f"2024-05-01T10:00:00.{i:09d}Z") for i in range(200)
    )
    c.write(old)
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(old), 30, "old content")
        proc.signal(signal.SIGSTOP)
        try:
            os.truncate(c.target, 0)
            new = b"".join(
                cri_line(f"new {i:05d}", when=f"2024-05-01T11:00:00.{i:09d}Z") for i in range(500)
            )
            c.write(new)
        finally:
            proc.signal(signal.SIGCONT)
        wait_for(lambda: got(endpoint, c) == lines_of(old + new), 30, "the new content, once")
        time.sleep(1)  # an offset save or more
    assert got(endpoint, c) == lines_of(old + new)


def test_lines_of_streams_no_runtime_writes_are_not_held_as_pieces(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Every stream name opened its own pending piece: 600,000 'streams' took 321 MiB
    against an 8 MiB buffer."""
    c = node.add("odd", "cri")
    data = b"".join(f"T s{i} P x\n".encode() for i in range(3000))
    c.write(data)
    with running(fwd(endpoint, node, tmp_path, "--exit-on-eof")) as proc:
        assert proc.wait(30) == 0
    assert got(endpoint, c) == lines_of(data)  # shipped as they are


def test_a_file_created_and_rotated_between_two_scans_is_read(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Two rotations within one scan interval (dockerd under a burst, or a forced rotation
    right after a regular one): the file in between was never seen by a scan and its lines
    were lost (the chaos suite's and the soak's 'lines 8723-8731' of a docker-rename writer)."""
    c = node.add("bursty", "docker")
    first = b"".join(docker_line(f"first {i}\n") for i in range(20))
    c.write(first)
    with running(fwd(endpoint, node, tmp_path, "--scan-interval", "3")) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(first), 30, "the first file")
        time.sleep(3.2)  # just after a scan: the next one is ~3 s away
        one, two = (
            c.target.with_name(c.target.name + ".1"),
            c.target.with_name(c.target.name + ".2"),
        )
        os.rename(c.target, one)  # rotation 1: the live file becomes .1 ...
        between = b"".join(docker_line(f"between {i}\n") for i in range(15))
        c.target.write_bytes(between)  # ... a new file, written at once ...
        os.rename(one, two)  # rotation 2 (dockerd shifts .1 to .2 first) ...
        os.rename(c.target, one)
        last = b"".join(docker_line(f"last {i}\n") for i in range(10))
        c.target.write_bytes(last)  # ... before any scan saw the file in between
        want = lines_of(first + between + last)
        wait_for(lambda: got(endpoint, c) == want, 30, "the file no scan saw")
        assert proc.metric("podhose_files_tracked") >= 1


@NEEDS_INODE_REUSE
def test_a_file_rotated_unseen_on_the_inode_of_a_closed_file_is_read(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Two rotations between two scans, and the file in between got the inode of a rotated
    file closed earlier and since pruned (ext4 gives a freed inode to the next new file at
    once): it was taken for that closed file and never read (the soak's 'lines 15041-15043'
    of a docker-rename writer, a forced rotation right after a regular one)."""
    c = node.add("bursty", "docker")
    first = b"".join(docker_line(f"first {i}\n") for i in range(20))
    c.write(first)
    with running(fwd(endpoint, node, tmp_path, "--scan-interval", "2")) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(first), 30, "the first file")
        pruned = c.rotate()
        second = b"".join(docker_line(f"second {i}\n") for i in range(20))
        c.write(second)
        st = pruned.stat()
        freed = (st.st_dev, st.st_ino)
        wait_for(lambda: freed not in proc.held(), 30, "the rotated file closed")
        node.add("probe", "docker")  # a new file, to see the next scan come
        wait_for(lambda: proc.metric("podhose_files_tracked") == 2, 30, "a scan")
        pruned.unlink()  # the runtime's pruning: its inode is free, the forwarder remembers it
        one, two = (c.target.with_name(c.target.name + n) for n in (".1", ".2"))
        os.rename(c.target, one)  # rotation 1: the live file becomes .1 ...
        create_reused(c.target, freed)  # ... the new one gets the freed inode ...
        between = b"".join(docker_line(f"between {i}\n") for i in range(15))
        c.write(between)
        os.rename(one, two)  # ... rotation 2, before the next scan
        os.rename(c.target, one)
        last = b"".join(docker_line(f"last {i}\n") for i in range(10))
        c.target.write_bytes(last)
        want = lines_of(first + second + between + last)
        wait_for(lambda: got(endpoint, c) == want, 30, "the file in between")


@NEEDS_INODE_REUSE
def test_a_file_rotated_while_stopped_on_the_inode_of_a_deleted_file_is_read(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """While the forwarder was down, a pod's log was deleted (its stored row stays) and
    another's was rotated twice, the file in between on the deleted file's inode: start-up
    recovery took it for the deleted file and never read it."""
    deleted, c = node.add("deleted", "docker"), node.add("bursty", "docker")
    deleted.write(docker_line("deleted\n"))
    first = b"".join(docker_line(f"first {i}\n") for i in range(20))
    c.write(first)
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(first), 30, "the first file")
        time.sleep(0.5)  # an offset save
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    st = deleted.target.stat()
    delete(deleted)  # its row stays: nothing runs to forget it
    one, two = (c.target.with_name(c.target.name + n) for n in (".1", ".2"))
    os.rename(c.target, one)
    create_reused(c.target, (st.st_dev, st.st_ino), beside=deleted.target)  # another folder
    between = b"".join(docker_line(f"between {i}\n") for i in range(15))
    c.write(between)
    os.rename(one, two)
    os.rename(c.target, one)
    last = b"".join(docker_line(f"last {i}\n") for i in range(10))
    c.target.write_bytes(last)
    with running(fwd(endpoint, node, tmp_path)):
        want = lines_of(first + between + last)
        wait_for(lambda: got(endpoint, c) == want, 30, "the file in between")


@pytest.mark.parametrize("runtime", ["cri", "docker"])
def test_a_new_pods_first_file_rotated_before_any_scan_saw_it_is_read(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path, runtime: str
) -> None:
    """A new container whose start-up output passes the runtime's size limit at once: its
    first file is rotated before a scan found its path. Only rotations of files already
    tracked looked for unseen siblings, so the whole first file was lost, silently."""
    with running(fwd(endpoint, node, tmp_path, "--scan-interval", "3")) as proc:
        wait_for(proc.up, 30, "up")
        node.add("probe", runtime)  # a new file, to see a scan come
        wait_for(lambda: proc.metric("podhose_files_tracked") == 1, 30, "a scan")
        c = node.add("fresh", runtime)
        first = b"".join(cri_line(f"first {i}") for i in range(5))
        c.write(first)
        c.rotate()
        live = b"".join(cri_line(f"live {i}") for i in range(5))
        c.write(live)
        wait_for(lambda: got(endpoint, c) == lines_of(first + live), 30, "the unseen first file")


def test_a_file_created_while_its_link_dangled_and_rotated_before_the_next_scan_is_read(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """kubelet renames 0.log and the runtime reopens it late: a scan finds the link leading
    nowhere. The next 0.log is written and rotated before the following scan: the file
    being drained had already looked for unseen siblings, the new one never did."""
    c = node.add("gap", "cri")
    before = b"".join(cri_line(f"before {i}") for i in range(5))
    c.write(before)
    with running(fwd(endpoint, node, tmp_path, "--scan-interval", "2")) as proc:
        wait_for(lambda: got(endpoint, c) == lines_of(before), 30, "the first file")
        os.rename(c.target, c.target.with_name("0.log.20240501-100000"))
        wait_for(lambda: proc.metric("podhose_unreadable_files") == 1, 30, "the dangling link")
        between = b"".join(cri_line(f"between {i}") for i in range(5))
        c.target.write_bytes(between)
        os.rename(c.target, c.target.with_name("0.log.20240501-100001"))
        after = b"".join(cri_line(f"after {i}") for i in range(5))
        c.target.write_bytes(after)
        want = lines_of(before + between + after)
        wait_for(lambda: got(endpoint, c) == want, 30, "the file created mid-rotation")


def test_a_new_pods_file_rotated_while_stopped_with_its_link_dangling_at_start_is_read(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """While the forwarder was down, a new pod logged and kubelet rotated its 0.log; the
    runtime had not reopened 0.log when the forwarder came back. Start-up recovery looked
    only at found files and stored rows, and the rotated file was never read."""
    old = node.add("old", "cri")
    old.write(cri_line("old"))
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: got(endpoint, old) == lines_of(cri_line("old")), 30, "a first line")
        time.sleep(0.5)  # an offset save, with the time of the last scan
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    c = node.add("fresh", "cri")
    first = b"".join(cri_line(f"first {i}") for i in range(10))
    c.write(first)
    os.rename(c.target, c.target.with_name("0.log.20240501-100000"))
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_unreadable_files") == 1, 30, "up")
        live = cri_line("live")
        c.target.write_bytes(live)
        wait_for(lambda: got(endpoint, c) == lines_of(first + live), 30, "the rotated file")


def test_a_piece_overtaken_by_later_lines_is_shipped_while_the_forwarder_is_behind(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """A stdout piece waits for its end while stderr logs and the forwarder is behind
    (slow acknowledgements, a small buffer): the file always had unread bytes, so the piece
    was never shipped, and the offset saved stayed before it for as long as that lasted
    (51,000 lines sent twice after one SIGKILL). Lines the runtime wrote more than
    --partial-flush-timeout after the piece, once read, prove no continuation is unread
    (and the piece waits that long here too)."""
    c = node.add("bar", "cri")
    piece = cri_line("downloading 50%", tag="P", when="2024-05-01T10:00:00Z")
    stderr = b"".join(
        cri_line(f"err {i:06d} {'e' * 150}", "stderr", when=f"2024-05-01T10:{i // 1000:02d}:00Z")
        for i in range(20_000)
    )  # ~3.6 MB, a minute of runtime time per 1,000 lines
    with running(fwd(endpoint, node, tmp_path, *SMALL_BUFFER, "--send-concurrency", "1")) as proc:
        wait_for(proc.up, 30, "up")
        endpoint.delay(1.0)
        c.write(piece + stderr)
        wait_for(lambda: proc.metric("podhose_partial_lines_flushed_total") == 1, 60, "the piece")
        assert sum(got(endpoint, c).values()) < len(lines_of(stderr)) / 2  # still far behind
        endpoint.delay(0)
        shipped = piece.replace(b" P ", b" F ", 1)
        wait_for(lambda: got(endpoint, c) == lines_of(shipped + stderr), 60, "every line once")


@NEEDS_INODE_REUSE
def test_a_file_on_a_stored_files_inode_is_not_sent_under_its_name(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """While the forwarder was down, a container's 0.log (with a stored row) was deleted;
    its next instance's 1.log got the freed inode and was rotated. Start-up recovery took
    the rotated file for the row's (same inode, other first bytes) and sent its lines under
    the dead container's file name."""
    c0 = node.add("web", "cri")
    c0.write(cri_lines("first instance", 10))
    with running(fwd(endpoint, node, tmp_path)) as proc:
        wait_for(lambda: got(endpoint, c0) == lines_of(cri_lines("first instance", 10)), 30, "0")
        time.sleep(0.5)  # an offset save
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    st = c0.target.stat()
    delete(c0)
    target = c0.target.with_name("1.log")
    create_reused(target, (st.st_dev, st.st_ino))
    c1 = Container(c0.link.with_name(c0.link.name.replace("app-", "app-1111")), target, "cri")
    c1.link.symlink_to(target)
    rotated = cri_lines("second instance, rotated", 10)
    c1.write(rotated)
    os.rename(target, target.with_name("1.log.20240501-100000"))
    live = cri_lines("second instance, live", 10)
    c1.target.write_bytes(live)
    with running(fwd(endpoint, node, tmp_path)):
        wait_for(lambda: got(endpoint, c1) == lines_of(rotated + live), 30, "under 1.log's name")
    assert got(endpoint, c0) == lines_of(cri_lines("first instance", 10))


def test_a_file_deleted_just_before_sigterm_is_read_to_its_end_first(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    """Deleted after the last scan and SIGTERM at once, while the forwarder was behind: only
    files a scan had seen go were read to their end, and 300,000 of 400,000 lines were
    lost (the exit's ERROR even blamed the stream). Its last line, unterminated, too."""
    c = node.add("gone", "docker")
    data = b"".join(docker_line(f"gone {i:06d} {'g' * 100}\n") for i in range(20_000))
    tail = docker_line("the last, unterminated").rstrip(b"\n")
    c.write(data + tail)
    endpoint.throttle()
    args = (*SMALL_BUFFER, "--scan-interval", "30", "--shutdown-timeout", "60")
    with running(fwd(endpoint, node, tmp_path, *args)) as proc:
        wait_for(lambda: proc.up() and proc.metric("podhose_buffered_bytes") > 150_000, 30, "full")
        delete(c)
        proc.signal(signal.SIGTERM)
        time.sleep(1.0)
        endpoint.clear_faults()
        assert proc.wait(90) == 0, proc.log()
    assert got(endpoint, c) == lines_of(data + tail + b"\n")
    assert "stopped before a deleted file" not in proc.log()
