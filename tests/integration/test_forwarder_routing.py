"""Routing by namespace (--route) and isolation between streams: the real forwarder CLI
against the local Firehose endpoint, each line checked in the stream it went to."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from devstack.firehose_endpoint import FirehoseEndpoint
from testkit.forwarder import (
    STREAM,
    Container,
    Node,
    delivered_of,
    fwd,
    lines_of,
    running,
    wait_for,
)
from testkit.lines import cri_line, docker_line

ROUTES = ("--route", "kube-*=platform", "--route", "team-a=team-a,team-b=team-b")


def lines(c: Container, tag: str, count: int, width: int = 40) -> bytes:
    texts = (f"{tag} {i} ".ljust(width, "x") for i in range(count))
    if c.runtime == "docker":
        return b"".join(docker_line(text + "\n") for text in texts)
    return b"".join(cri_line(text) for text in texts)


def halves(data: bytes) -> tuple[bytes, bytes]:
    """`data` cut at the line boundary nearest its middle."""
    cut = data.index(b"\n", len(data) // 2) + 1
    return data[:cut], data[cut:]


def in_stream(endpoint: FirehoseEndpoint, stream: str, c: Container) -> Counter[bytes]:
    return delivered_of(endpoint.received(stream), c)


@pytest.fixture
def endpoint():  # type: ignore[no-untyped-def]
    with FirehoseEndpoint() as ep:
        ep.require_streams(STREAM, "platform", "team-a", "team-b")
        yield ep


def test_each_namespace_goes_to_its_stream_only(endpoint: FirehoseEndpoint, tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    where = [
        (node.add("dns", "cri", ns="kube-system"), "platform"),
        (node.add("proxy", "docker", ns="kube-proxy"), "platform"),
        (node.add("web", "cri", ns="team-a"), "team-a"),
        (node.add("api", "docker", ns="team-b"), "team-b"),
        (node.add("app", "cri", ns="default"), STREAM),
        (node.add("job", "docker", ns="team-c"), STREAM),
    ]
    written = [lines(c, c.src, 300) for c, _ in where]
    with running(fwd(endpoint, node, tmp_path, *ROUTES)) as proc:
        for (c, _), data in zip(where, written, strict=True):
            c.write(halves(data)[0])
        wait_for(proc.up, 30, "up")
        where[0][0].rotate()  # a rotated file keeps its stream
        for (c, _), data in zip(where, written, strict=True):
            c.write(halves(data)[1])
        for (c, stream), data in zip(where, written, strict=True):
            wait_for(lambda c=c, s=stream, d=data: in_stream(endpoint, s, c) == lines_of(d),
                     30, f"{c.src} in {stream}")  # fmt: skip
        for c, stream in where:
            for other in {STREAM, "platform", "team-a", "team-b"} - {stream}:
                assert not in_stream(endpoint, other, c), (c.src, other)
        # The endpoint keeps a call's records before it answers: the forwarder counts the
        # call once the answer reaches it, which on a loaded machine can come later.
        wait_for(lambda: proc.metric('podhose_calls_total{stream="team-a"}') > 0, 10, "calls")
        assert "Traceback" not in proc.log()


def test_a_stream_that_is_down_holds_back_only_its_own_files(
    endpoint: FirehoseEndpoint, tmp_path: Path
) -> None:
    node = Node(tmp_path / "node")
    down = node.add("web", "cri", ns="team-a")
    healthy = [node.add("app", "cri", ns="default"), node.add("api", "docker", ns="team-b")]
    endpoint.delete_stream("team-a")
    backlog = lines(down, "backlog", 60_000, width=100)  # ~7 MB: over its 2 MiB share
    down.write(backlog)
    args = (*ROUTES, "--max-buffer-bytes", str(8 * 1024 * 1024), "--max-delivery-lag", "2")
    with running(fwd(endpoint, node, tmp_path, *args)) as proc:
        wait_for(proc.up, 30, "up")
        share = 8 * 1024 * 1024 // 4
        wait_for(lambda: proc.metric('podhose_buffered_bytes{stream="team-a"}') >= share * 0.7,
                 30, "team-a's share filled")  # fmt: skip
        for round_ in range(3):  # the other streams keep flowing, within seconds
            for c in healthy:
                data = lines(c, f"live {round_}", 200)
                c.write(data)
                wait_for(lambda c=c, d=data: lines_of(d) <= in_stream(endpoint, c_stream(c), c),
                         10, f"{c.src} while team-a is down")  # fmt: skip
        assert proc.metric('podhose_buffered_bytes{stream="team-a"}') <= share + 600_000
        status, body = proc.get("/readyz")
        assert status == 503 and "team-a" in body, body
        refused = 'podhose_permanent_errors_total{code="ResourceNotFoundException",stream="team-a"}'
        assert proc.metric(refused) > 0
        endpoint.create_stream("team-a")  # back: its files resume where they stopped
        wait_for(lambda: in_stream(endpoint, "team-a", down) == lines_of(backlog), 60,
                 "team-a's backlog after the stream came back")  # fmt: skip
        wait_for(lambda: proc.get("/readyz")[0] == 200, 30, "ready again")
        assert not any(in_stream(endpoint, s, down) for s in (STREAM, "team-b", "platform"))


def c_stream(c: Container) -> str:
    return "team-b" if "_team-b_" in c.src else STREAM


def test_routes_are_validated_like_every_option(tmp_path: Path) -> None:
    import subprocess
    import sys

    # Routes that could never do anything were taken in silence: a glob no namespace can
    # match (upper case, '_'), a glob routed twice (the second is dead), empty parts.
    for bad in ("kube-system", "=s", "kube-*=bad name!", "Team-A=x", "team_a=x", "a=x,,b=y",
                ",", "", "a=x,a=y"):  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-m", "forwarder", "--delivery-stream", "s", "--route", bad],
            capture_output=True, text=True, check=False,
            env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        )  # fmt: skip
        assert out.returncode == 2, bad
        assert out.stderr.count("\n") == 1 and "--route" in out.stderr, out.stderr
    duplicate = subprocess.run(
        [sys.executable, "-m", "forwarder", "--delivery-stream", "s", "--route", "a=x",
         "--route", "a=y"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
    )  # fmt: skip
    assert duplicate.returncode == 2 and "routed twice" in duplicate.stderr
    out = subprocess.run(
        [sys.executable, "-m", "forwarder", "--delivery-stream", "s", "--max-buffer-bytes",
         str(2 * 1024 * 1024), "--route", "a=b,c=d"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
    )  # fmt: skip
    assert out.returncode == 2 and "per delivery stream (3 with --route)" in out.stderr


def test_shutdown_drains_a_healthy_streams_deleted_files_while_another_is_down(
    tmp_path: Path,
) -> None:
    """At SIGTERM, deleted files are read to their end (no restart finds them again): a
    file whose stream is down and whose lane is full must not use up the time of the
    others (it did: the healthy stream's deleted file was lost), and the whole shutdown
    keeps to --shutdown-timeout (it took twice as long)."""
    import signal
    import time

    node = Node(tmp_path / "node")
    down = node.add("zzz", "cri", ns="badns")  # added last: drained first before the fix
    fine = node.add("aaa", "cri", ns="default")
    with FirehoseEndpoint() as endpoint:
        endpoint.require_streams(STREAM)  # "bad" does not exist
        args = ("--route", "badns=bad", "--max-buffer-bytes", str(2 * 1024 * 1024),
                "--shutdown-timeout", "4")  # fmt: skip
        with running(fwd(endpoint, node, tmp_path, *args)) as proc:
            wait_for(proc.up, 30, "up")
            down.write(lines(down, "bad", 15_000, width=210))
            time.sleep(1.5)
            endpoint.delay(0.5)
            data = lines(fine, "good", 30_000, width=210)
            fine.write(data)
            for c in (down, fine):
                c.target.unlink()
                c.link.unlink()
            time.sleep(0.6)  # a scan sees both deleted
            started = time.monotonic()
            proc.signal(signal.SIGTERM)
            assert proc.wait(60) == 0
            assert time.monotonic() - started < 4 + 2
            assert in_stream(endpoint, STREAM, fine) == lines_of(data)
