"""Fault injection: Firehose throttling, per-record failures, 500s, dropped connections,
bounded memory during an outage, and API limits with large or incompressible lines."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from testkit.forwarder import ForwarderProc, Node, delivered, lines_of, running, wait_for
from testkit.lines import cri_line, docker_line

FAULTS: dict[str, Callable[[FirehoseEndpoint], None]] = {
    "throttling": lambda ep: ep.throttle(4),
    "partial-record-failures": lambda ep: ep.fail_records(6, every=2),
    "server-errors": lambda ep: ep.server_error(4),
    "dropped-connections": lambda ep: ep.drop_connections(4),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faults_lose_and_duplicate_nothing(
    fault: str, endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    containers = [node.add(f"pod-{i}", "docker" if i % 2 else "cri") for i in range(4)]
    want = {}
    for c in containers:
        texts = (f"{c.src} line {i} " + "p" * (i % 300) for i in range(6000))
        if c.runtime == "docker":
            data = b"".join(docker_line(text + "\n") for text in texts)
        else:
            data = b"".join(cri_line(text) for text in texts)
        c.write(data)
        want[c.src] = lines_of(data)
    FAULTS[fault](endpoint)
    extra = ("--exit-on-eof", "--max-record-bytes", str(256 * 1024), "--max-line-bytes", "65536")
    with running(ForwarderProc(endpoint.url, node, tmp_path / "db" / "o.db", *extra)) as proc:
        assert proc.wait(90) == 0, proc.log()
    assert sum(endpoint.stats.faults.values()) >= 4
    assert delivered(endpoint.received()) == want  # exact: no loss, no duplicate
    assert endpoint.stats.rejected_calls == 0


def test_memory_stays_bounded_while_firehose_is_down(
    endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    c = node.add("chatty-1", "docker")
    line_count = 300_000
    data = b"".join(
        docker_line(f"backlog line {i:08d} " + "b" * 100 + "\n") for i in range(line_count)
    )
    c.write(data)  # ~50 MB backlog
    endpoint.throttle()
    limit = 8 * 1024 * 1024
    extra = ("--max-buffer-bytes", str(limit))
    with running(ForwarderProc(endpoint.url, node, tmp_path / "db" / "o.db", *extra)) as proc:
        assert proc.proc is not None
        ps = psutil.Process(proc.proc.pid)
        wait_for(lambda: endpoint.stats.faults.get("throttle", 0) >= 10, 60, "throttled calls")
        peak = 0
        for _ in range(20):  # sample while the outage lasts
            peak = max(peak, ps.memory_info().rss)
            buffered = proc.metric("podhose_buffered_bytes")
            assert 0 < buffered <= limit
        assert proc.metric("podhose_bytes_read_total") <= limit
        assert peak < 100 * 1024 * 1024, peak  # ~52 MB measured with a 50 MB backlog
        # The endpoint counts a throttle when it answers; the forwarder when it reads it.
        wait_for(lambda: proc.metric("podhose_failures_total") >= 10, 10, "counted failures")
        assert proc.get("/healthz")[0] == 200
        endpoint.clear_faults()
        wait_for(lambda: proc.metric("podhose_lines_read_total") == line_count, 60, "caught up")
        wait_for(lambda: proc.metric("podhose_buffered_bytes") == 0, 30, "acknowledged")
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert delivered(endpoint.received())[c.src] == lines_of(data)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_limits_hold_for_huge_and_incompressible_lines(
    compression: str, endpoint: FirehoseEndpoint, node: Node, tmp_path: Path
) -> None:
    c = node.add("blobs-1", "cri")
    max_line = 512 * 1024
    body = b"".join(
        cri_line(os.urandom(n).hex()) for n in [max_line // 2 - 40] * 6 + [300, 10] * 50
    )
    oversize = b"2024-05-01T10:00:00Z stdout F " + b"z" * (max_line + 1000) + b"\n"
    c.write(body + oversize)
    extra = ("--exit-on-eof", "--compression", compression, "--max-line-bytes", str(max_line))
    with running(ForwarderProc(endpoint.url, node, tmp_path / "db" / "o.db", *extra)) as proc:
        assert proc.wait(90) == 0, proc.log()
    assert endpoint.stats.rejected_calls == 0
    assert all(len(r) <= 1_024_000 for r in endpoint.received())
    got = delivered(endpoint.received())[c.src]
    head, tail = oversize[:max_line] + b"\n", oversize[max_line:]
    assert got == lines_of(body + head + tail)  # the oversize line arrives in two pieces
    assert "oversize" in proc.log()
