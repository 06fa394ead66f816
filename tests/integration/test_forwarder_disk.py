"""Disk held by a forwarder far behind: deleted files it keeps open are bounded by
--max-deleted-bytes / --max-deleted-files; what it gives up is counted to the byte and
logged, and its descriptors close (the node gets its disk back)."""

from __future__ import annotations

import json
import os
import signal
import time
from functools import partial
from pathlib import Path

from devstack.firehose_endpoint import FirehoseEndpoint
from testkit.forwarder import (
    NEEDS_INODE_REUSE,
    STREAM,
    Container,
    Node,
    create_reused,
    delivered_of,
    fwd,
    lines_of,
    running,
    wait_for,
)
from testkit.lines import cri_line

FILE_BYTES = 2_000_000
SMALL_BUFFER = ("--max-line-bytes", "65536", "--max-buffer-bytes", "262144")


def backlog(c: Container) -> bytes:
    line_count = FILE_BYTES // 100
    data = b"".join(cri_line(f"{c.src[:8]} {i:07d} ".ljust(61, "x")) for i in range(line_count))
    c.write(data)
    return data


def deleted_descriptors(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(os.readlink(fd).endswith(" (deleted)") for fd in fds.iterdir())


def delete(c: Container) -> None:
    c.link.unlink()
    c.target.unlink()


def delivered_bytes(endpoint: FirehoseEndpoint, c: Container) -> int:
    return sum(len(line) * n for line, n in delivered_of(endpoint.received(), c).items())


def test_oldest_deleted_files_are_given_up_over_the_byte_bound(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    containers = [node.add(f"pod{i}", "cri") for i in range(4)]
    written = [backlog(c) for c in containers]
    limit = 3 * 1024 * 1024  # the 4 x 2 MB deleted: the 3 oldest go, the newest stays
    with FirehoseEndpoint() as endpoint:
        endpoint.throttle()  # Firehose refuses everything: the forwarder falls behind
        args = (*SMALL_BUFFER, "--max-deleted-bytes", str(limit))
        with running(fwd(endpoint, node, tmp_path, *args)) as proc:
            wait_for(lambda: proc.up() and proc.metric("podhose_buffered_bytes") > 0, 30, "read")
            for c in containers:  # pods go, oldest first
                delete(c)
                time.sleep(0.4)
            wait_for(lambda: proc.metric("podhose_deleted_files_given_up_total") == 3, 20,
                     "three given up")  # fmt: skip
            assert proc.proc is not None
            wait_for(lambda: deleted_descriptors(proc.proc.pid) <= 1 + 1, 10, "disk freed")
            assert proc.metric("podhose_deleted_bytes_held") <= limit
            lost = proc.metric("podhose_deleted_bytes_given_up_total")
            endpoint.throttle(0)  # Firehose back: what was read of each is delivered
            newest = containers[-1]
            wait_for(lambda: delivered_of(endpoint.received(), newest) == lines_of(written[-1]),
                     60, "the file kept delivered whole")  # fmt: skip
            time.sleep(1.0)
            gone = containers[:3]
            sizes = [len(data) for data in written[:3]]
            assert lost == sum(
                size - delivered_bytes(endpoint, c) for c, size in zip(gone, sizes, strict=True)
            )
            assert lost > 0
            for c, data in zip(gone, written, strict=False):  # a prefix of each, whole lines
                got = delivered_of(endpoint.received(), c)
                assert got <= lines_of(data) and max(got.values(), default=1) == 1
            log = proc.log()
            assert log.count("gave up a deleted file not read to its end") == 3
            assert "Traceback" not in log
            assert deleted_descriptors(proc.proc.pid) == 0  # all acknowledged and closed


def test_deleted_files_are_given_up_over_the_file_bound(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    containers = [node.add(f"pod{i}", "cri") for i in range(4)]
    written = [backlog(c) for c in containers]
    with FirehoseEndpoint() as endpoint:
        endpoint.throttle()
        args = (*SMALL_BUFFER, "--max-deleted-files", "2")
        with running(fwd(endpoint, node, tmp_path, *args)) as proc:
            wait_for(lambda: proc.up() and proc.metric("podhose_buffered_bytes") > 0, 30, "read")
            for c in containers:
                delete(c)
                time.sleep(0.4)
            wait_for(lambda: proc.metric("podhose_deleted_files_given_up_total") == 2, 20,
                     "two given up")  # fmt: skip
            endpoint.throttle(0)
            for c, data in list(zip(containers, written, strict=True))[2:]:
                wait_for(lambda c=c, d=data: delivered_of(endpoint.received(), c) == lines_of(d),
                         60, f"{c.src} delivered whole")  # fmt: skip
            assert proc.metric("podhose_deleted_files_given_up_total") == 2


@NEEDS_INODE_REUSE
def test_a_new_file_on_a_given_up_files_inode_is_read_on_its_own(tmp_path: Path) -> None:
    """A given-up file's descriptor closes at once, so ext4 gives its inode to the next new
    file while its read lines may still be in flight: the new file must be read whole from
    its head, and the old records must not move the new file's offset."""
    import secrets

    node = Node(tmp_path / "node")
    old = node.add("old", "cri")
    written = backlog(old)
    st = old.target.stat()
    freed = (st.st_dev, st.st_ino)
    with FirehoseEndpoint() as endpoint:
        endpoint.throttle()
        args = (*SMALL_BUFFER, "--max-deleted-bytes", "1000000")
        with running(fwd(endpoint, node, tmp_path, *args)) as proc:
            wait_for(lambda: proc.up() and proc.metric("podhose_buffered_bytes") > 0, 30, "read")
            delete(old)
            wait_for(lambda: proc.metric("podhose_deleted_files_given_up_total") == 1, 20,
                     "given up")  # fmt: skip
            assert freed not in proc.held()  # counted once its disk space is free
            target = old.target.with_name("1.log")  # the pod's next container, same folder
            create_reused(target, freed)
            new = Container(node.containers_dir / f"old_default_app-{secrets.token_hex(32)}.log",
                            target, "cri")  # fmt: skip
            new.link.symlink_to(target)
            data = b"".join(cri_line(f"new {i:05d}") for i in range(2000))
            new.write(data)
            wait_for(lambda: proc.metric("podhose_files_tracked") == 1, 20, "the new file")
            endpoint.throttle(0)
            wait_for(lambda: delivered_of(endpoint.received(), new) == lines_of(data), 60,
                     "the new file whole")  # fmt: skip
            got_old = delivered_of(endpoint.received(), old)
            assert got_old and got_old <= lines_of(written)
            assert "Traceback" not in proc.log()


def test_a_down_streams_deleted_files_do_not_make_a_healthy_streams_be_given_up(
    tmp_path: Path,
) -> None:
    """Deleted files of a stream that is down, read to their end, wait for acknowledgements
    that never come: they count against their own stream's share of --max-deleted-files,
    not the healthy stream's (its deleted file was given up, its lines lost). And files read
    to their end are never 'given up' (an ERROR and an alert with nothing lost)."""
    node = Node(tmp_path / "node")
    bad = [node.add(f"b{i}", "cri", ns="badns") for i in range(4)]
    fine = node.add("good", "cri")
    with FirehoseEndpoint() as endpoint:
        endpoint.require_streams("podhose-test")  # "bad" is missing
        args = ("--route", "badns=bad", "--max-deleted-files", "3",
                "--max-buffer-bytes", str(2 * 1024 * 1024))  # fmt: skip
        with running(fwd(endpoint, node, tmp_path, *args)) as proc:
            wait_for(proc.up, 30, "up")
            for c in bad:
                c.write(cri_line("bad line"))
            time.sleep(1)
            for c in bad:
                delete(c)
            time.sleep(3)  # drained and closed: waiting for acknowledgements from "bad"
            endpoint.delay(0.3)
            data = b"".join(cri_line(f"good {i:06d} " + "g" * 200) for i in range(20_000))
            fine.write(data)
            delete(fine)
            wait_for(lambda: delivered_of(endpoint.received(), fine) == lines_of(data), 40,
                     "the healthy stream's deleted file whole")  # fmt: skip
            assert proc.metric("podhose_deleted_files_given_up_total") == 0
            assert "gave up a deleted file" not in proc.log()


def test_a_deleted_file_left_undelivered_at_shutdown_is_counted_lost_in_an_error(
    tmp_path: Path,
) -> None:
    """SIGTERM while a routed stream is missing and a deleted file of its is held: the exit
    said its unacknowledged lines 'will be re-sent on restart', but no restart can read a
    deleted file; 2 MB were lost without a word. The disk bound and its gauges are each
    stream's share, and say which stream."""
    node = Node(tmp_path / "node")
    c = node.add("web", "cri", ns="team-a")
    written = backlog(c)
    limit = 64 * 1024 * 1024
    routed = ("--route", "team-a=team-a-logs", "--max-deleted-bytes", str(limit))
    with FirehoseEndpoint() as endpoint:
        endpoint.require_streams(STREAM)  # team-a-logs does not exist
        args = (*SMALL_BUFFER, *routed, "--shutdown-timeout", "2")
        with running(fwd(endpoint, node, tmp_path, *args)) as proc:
            wait_for(lambda: proc.up() and proc.metric("podhose_buffered_bytes") > 0, 30, "read")
            delete(c)
            wait_for(lambda: proc.metric("podhose_deleted_bytes_held") > 0, 20, "held")
            assert proc.metric('podhose_deleted_bytes_limit{stream="team-a-logs"}') == limit / 2
            assert proc.metric('podhose_deleted_bytes_held{stream="team-a-logs"}') > 0
            assert proc.metric(f'podhose_deleted_bytes_held{{stream="{STREAM}"}}') == 0
            proc.signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        assert not endpoint.received("team-a-logs")
    logs = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    [error] = [x for x in logs if x["msg"].startswith("stopped before a deleted file")]
    assert error["level"] == "ERROR" and error["stream"] == "team-a-logs"
    assert error["lost_bytes"] == len(written)
    re_sent = [x["msg"] for x in logs if x["msg"].endswith("will be re-sent on restart")]
    assert re_sent == [
        "shutdown timeout: unacknowledged lines of files still on disk will be re-sent on restart"
    ]


def test_a_given_up_files_read_lines_left_undelivered_at_shutdown_are_counted_too(
    tmp_path: Path,
) -> None:
    """A deleted file given up (over --max-deleted-bytes) while its stream is down: the
    give-up counted its unread bytes; what had been read of it and never acknowledged was
    lost at the exit without a word. Together they are the whole file."""
    node = Node(tmp_path / "node")
    c = node.add("web", "cri")
    written = backlog(c)
    with FirehoseEndpoint() as endpoint:
        endpoint.throttle()  # the stream never takes anything
        args = (*SMALL_BUFFER, "--max-deleted-bytes", "100000", "--shutdown-timeout", "2")
        with running(fwd(endpoint, node, tmp_path, *args)) as proc:
            wait_for(lambda: proc.up() and proc.metric("podhose_buffered_bytes") > 0, 30, "read")
            delete(c)
            given_up = partial(proc.metric, "podhose_deleted_files_given_up_total")
            wait_for(lambda: given_up() == 1, 20, "given up")
            proc.signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        assert not endpoint.received()
    errors = [json.loads(x) for x in proc.log().splitlines() if '"level":"ERROR"' in x]
    assert len(errors) == 2 and sum(e["lost_bytes"] for e in errors) == len(written), errors
