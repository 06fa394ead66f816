"""In-process unit tests of the forwarder's pure parts: config, wire, partials, packing."""

from __future__ import annotations

import dataclasses
import os
import zlib
from pathlib import Path

import pytest
import zstandard

from forwarder import wire_encoder
from forwarder.acks import AckTracker
from forwarder.batcher import Batcher
from forwarder.config import OPTIONS, Config, StartupError, parse_config, resolve_region
from forwarder.offsets import Fingerprint, Stored
from forwarder.partials import PartialJoiner, docker_log_complete
from forwarder.send_queue import SendQueue
from forwarder.tail import Chunk
from podhose_wire import firehose_limits
from podhose_wire.header import ENC, source_header, with_field
from testkit.forwarder import decode
from testkit.lines import cri_line, docker_line, docker_split
from transform_lambda.decompress import decode_payload


def test_flags_win_over_env_and_env_over_defaults() -> None:
    env = {
        "PODHOSE_DELIVERY_STREAM": "s",
        "PODHOSE_PATH": "/a/*.log,/b/*.log",
        "PODHOSE_EXIT_ON_EOF": "true",
        "PODHOSE_FLUSH_INTERVAL": "3",
        "POD_NAME": "podhose-x",
        "POD_NAMESPACE": "kube-system",
    }
    cfg = parse_config(["--flush-interval", "0.5"], env)
    assert cfg.paths == ["/a/*.log", "/b/*.log"]
    assert cfg.exit_on_eof is True
    assert cfg.flush_interval == 0.5
    assert cfg.self_prefix == "podhose-x_kube-system_"
    assert parse_config(["--include-self"], env).self_prefix is None
    default = parse_config(["--delivery-stream", "s"], {})
    assert default.paths == ["/var/log/containers/*.log"]
    assert default.compression == "zstd"
    assert default.max_line_bytes == 512 * 1024
    assert default.http_port == 2020


def test_config_has_one_field_per_option_and_no_defaults_of_its_own() -> None:
    fields = dataclasses.fields(Config)
    pod = {"pod_name", "pod_namespace"}  # POD_NAME, POD_NAMESPACE: the pod's own identity
    assert {f.name for f in fields} == {opt.dest for opt in OPTIONS} | pod
    assert all(f.default is dataclasses.MISSING for f in fields)
    assert all(f.default_factory is dataclasses.MISSING for f in fields)


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no delivery stream
        ["--delivery-stream", "s", "--max-line-bytes", "1024000"],  # a line must fit a record
        ["--delivery-stream", "s", "--max-line-bytes", "1000", "--max-record-bytes", "1200"],
        ["--delivery-stream", "s", "--compression", "lz4"],
    ],
)
def test_invalid_settings_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(argv, {})


def test_header_is_omitted_for_names_it_cannot_carry() -> None:
    assert source_header("a_b_c-1.log") == b"\x1epodhose/1 src=a_b_c-1.log\n"
    assert source_header("a b.log") == b""
    assert source_header("a=b.log") == b""
    assert with_field(source_header("x.log"), ENC, b"cols1") == (
        b"\x1epodhose/1 src=x.log enc=cols1\n"
    )
    assert with_field(source_header("a b.log"), ENC, b"cols1") == b"\x1epodhose/1 enc=cols1\n"
    gzip = wire_encoder.RecordEncoder("gzip", 1, 1)
    record = gzip.encode(gzip.header("x.log"), b"line\n")
    assert zlib.decompress(record, 47) == b"\x1epodhose/1 src=x.log\nline\n"
    zstd = wire_encoder.RecordEncoder("zstd", 1, 1)
    record = zstd.encode(zstd.header("x.log"), b"line\n")
    assert zstandard.decompress(record) == b"\x1epodhose/1 src=x.log enc=cols2\nr\n0\n\nline\n"
    assert decode_payload(record) == b"\x1epodhose/1 src=x.log\nline\n"
    docker = b'{"log":"hi\\n","stream":"stdout","time":"T1.5"}\n'
    record = zstd.encode(zstd.header("x.log"), docker)
    assert zstandard.decompress(record) == (
        b"\x1epodhose/1 src=x.log enc=cols2\nd\n4\nT1.5\nhi\\n\n"
    )
    assert decode_payload(record) == b"\x1epodhose/1 src=x.log\n" + docker


def test_docker_escape_detection() -> None:
    assert docker_log_complete(b"abc\\n")
    assert not docker_log_complete(b"abc\\\\n")  # escaped backslash, then a literal n
    assert docker_log_complete(b"abc\\\\\\n")
    assert not docker_log_complete(b"abc")


def test_docker_partials_are_joined_per_stream() -> None:
    long_out = "o" * 40000
    long_err = "e" * 20000
    out_written, out_joined = docker_split(long_out, "stdout")
    err_written, err_joined = docker_split(long_err, "stderr")
    out_pieces = out_written.splitlines(keepends=True)
    err_pieces = err_written.splitlines(keepends=True)
    plain = docker_line("plain\n")
    # a whole line, then stdout and stderr pieces interleaved: out0 err0 out1 err1 out2
    chunk = plain + out_pieces[0] + err_pieces[0] + out_pieces[1] + err_pieces[1] + out_pieces[2]
    joiner = PartialJoiner(512 * 1024)
    result = joiner.process(chunk, 0)
    assert not result.raw
    assert result.data.splitlines(keepends=True) == [plain, err_joined, out_joined]
    assert not joiner.pending


def test_docker_partial_across_chunks_keeps_offset_safe() -> None:
    written, joined = docker_split("x" * 20000)
    first, second = written.splitlines(keepends=True)
    joiner = PartialJoiner(512 * 1024)
    before = docker_line("before\n")
    result = joiner.process(before + first, 100)
    assert result.data == before
    assert joiner.safe_offset(100 + len(before) + len(first)) == 100 + len(before)
    result = joiner.process(second, 100 + len(before) + len(first))
    assert result.data == joined
    assert joiner.safe_offset(999999) == 999999


def test_no_partials_is_the_fast_path() -> None:
    chunk = b"".join(docker_line(f"line {i}\n") for i in range(100))
    result = PartialJoiner(1024).process(chunk, 0)
    assert result.raw and result.data is chunk
    cri = b"".join(cri_line(f"a P b {i}") for i in range(100))  # " P " inside content only
    result = PartialJoiner(1024).process(cri, 0)
    assert result.data == cri


def test_cri_partials_interleaved() -> None:
    t1, t2, t3 = "2024-05-01T10:00:01Z", "2024-05-01T10:00:02Z", "2024-05-01T10:00:03Z"
    chunk = (
        cri_line("hello ", "stdout", "P", t1)
        + cri_line("err one", "stderr", "P", t1)
        + cri_line("whole", "stdout", "F", t2)
        + cri_line(" two", "stderr", "F", t2)
        + cri_line("world", "stdout", "F", t3)
    )
    result = PartialJoiner(1024).process(chunk, 0)
    assert result.data.splitlines(keepends=True) == [
        f"{t1} stdout F hello whole\n".encode(),
        f"{t1} stderr F err one two\n".encode(),
        f"{t3} stdout F world\n".encode(),
    ]


@pytest.mark.parametrize("runtime", ["cri", "docker"])
def test_a_joined_line_is_not_held_after_its_read(runtime: str) -> None:
    """The joiner kept a reference to every line it emitted from the last read that held a
    piece (up to a read per file, counted by no limit): 200 files of one 500 KB split line
    each peaked at 174 MB and stayed at 141 MB after delivery."""
    import gc
    import tracemalloc

    text = "x" * 500_000
    if runtime == "docker":
        chunk = docker_split(text)[0]
    else:
        chunk = cri_line(text[:300_000], tag="P") + cri_line(text[300_000:])
    joiner = PartialJoiner(1024 * 1024)
    tracemalloc.start()
    try:
        result = joiner.process(chunk, 0)
        assert len(result.data) > 500_000 and joiner.held_bytes() == 0
        del result
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 50_000, held


def test_oversize_logical_line_is_shipped_in_pieces() -> None:
    pieces = [cri_line("a" * 100, tag="P") for _ in range(5)] + [cri_line("b" * 10)]
    result = PartialJoiner(250).process(b"".join(pieces), 0)
    lines = result.data.splitlines()
    assert result.oversize == 1
    assert all(len(line) <= 250 for line in lines)
    content = b"".join(line.split(b" ", 3)[3] for line in lines)
    assert content == b"a" * 500 + b"b" * 10


def _batcher(**overrides: object) -> tuple[Batcher, SendQueue, AckTracker]:
    cfg = parse_config(["--delivery-stream", "s"], {})
    cfg = type(cfg)(**{**cfg.__dict__, **overrides})
    tracker = AckTracker()
    queue = SendQueue(cfg.flush_interval)
    batcher = Batcher(cfg, tracker, {cfg.delivery_stream: queue})
    batcher.track((1, 1), "f.log", 0)
    return batcher, queue, tracker


def test_packing_respects_record_and_call_limits() -> None:
    batcher, queue, tracker = _batcher(compression="none")
    line = b"z" * 999 + b"\n"
    data = line * 10000  # 10 MB
    batcher.add((1, 1), Chunk(data, 0, len(data), len(data), 0), 0.0)
    batcher.flush_all()
    queue.flush()
    total = b""
    while len(queue):
        call = queue.take()
        assert call is not None
        assert len(call) <= firehose_limits.MAX_RECORDS_PER_CALL
        cost = sum(firehose_limits.call_cost(len(r.data)) for r in call)
        assert cost <= firehose_limits.MAX_CALL_BYTES
        for record in call:
            assert len(record.data) <= firehose_limits.MAX_RECORD_BYTES
            total += b"".join(decode(record.data)[1])
        tracker.ack(r.mark for r in call)
    assert total == data
    assert tracker.committed((1, 1)) == len(data)


def test_incompressible_record_is_split_under_the_limit() -> None:
    import os

    batcher, queue, _tracker = _batcher()
    data = b"".join(os.urandom(600).hex().encode() + b"\n" for _ in range(900))  # ~1 MB
    noise = bytes(b ^ 0x5A for b in os.urandom(len(data)))
    payload = b"\n".join(
        noise[i : i + 1000].replace(b"\n", b"!") for i in range(0, 1_000_000, 1000)
    )
    payload += b"\n"
    batcher.add((1, 1), Chunk(payload, 0, len(payload), len(payload), 0), 0.0)
    batcher.flush_all()
    queue.flush()
    got = b""
    while len(queue):
        call = queue.take()
        assert call is not None
        for record in call:
            assert len(record.data) <= firehose_limits.MAX_RECORD_BYTES
            got += b"".join(decode(record.data)[1])
    assert got == payload


def test_one_line_per_record_shape() -> None:
    batcher, queue, _tracker = _batcher(one_line_per_record=True)
    data = docker_line("a\n") + docker_line("b\n")
    batcher.add((1, 1), Chunk(data, 0, len(data), len(data), 0), 0.0)
    batcher.flush_all()
    queue.flush()
    call = queue.take()
    assert call is not None
    assert [r.data for r in call] == [docker_line("a\n"), docker_line("b\n")]


def test_offsets_commit_only_the_acknowledged_prefix() -> None:
    tracker = AckTracker()
    tracker.start((1, 2), 0)
    first = tracker.mark((1, 2), 10, 1, 0.0)
    second = tracker.mark((1, 2), 20, 2, 0.0)
    tracker.ack([second])
    assert tracker.committed((1, 2)) == 0
    tracker.ack([first])
    assert tracker.committed((1, 2)) == 10
    tracker.ack([second])
    assert tracker.committed((1, 2)) == 20
    assert tracker.unacked() == 0


def test_after_a_truncation_only_new_records_move_the_offset() -> None:
    tracker = AckTracker()
    tracker.start((1, 2), 0)
    old = tracker.mark((1, 2), 90_000, 1, 0.0)  # read before the copytruncate
    tracker.truncated((1, 2))
    new = tracker.mark((1, 2), 300, 1, 0.0)
    tracker.ack([old])
    assert tracker.committed((1, 2)) == 0  # 90,000 means nothing in the new content
    tracker.ack([new])
    assert tracker.committed((1, 2)) == 300


def test_a_short_fingerprint_cannot_vouch_for_a_longer_offset(tmp_path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"2024-05-01T10:00:00Z stdout F new content\n" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        empty = Fingerprint.of(fd, 0)
        assert not Stored("p", "t", 2000, empty).applies_to(fd, size)
        assert Stored("p", "t", 0, empty).applies_to(fd, size)
        full = Fingerprint.of(fd, size)
        assert Stored("p", "t", 2000, full).applies_to(fd, size)
        assert not Stored("p", "t", size + 1, full).applies_to(fd, size)
        assert Stored("p", "t", 2000, Fingerprint(0, "")).applies_to(fd, size)  # legacy row
        other = Fingerprint(full.length, "0" * 32)
        assert not Stored("p", "t", 2000, other).applies_to(fd, size)
    finally:
        os.close(fd)


def test_region_from_flag_chain_or_local_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/podhose-test-config")
    base = ["--delivery-stream", "s"]
    assert resolve_region(parse_config([*base, "--region", "eu-west-1"], env={})).region == (
        "eu-west-1"
    )
    local = parse_config([*base, "--endpoint-url", "http://127.0.0.1:1"], env={})
    assert resolve_region(local).region == "us-east-1"
    with pytest.raises(StartupError, match="no AWS region"):
        resolve_region(parse_config(base, env={}))
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert resolve_region(parse_config(base, env={})).region == "ap-south-1"


def _records_of(queue: SendQueue) -> list[bytes]:
    queue.flush()
    payloads = []
    while len(queue):
        call = queue.take()
        assert call is not None
        payloads += [b"".join(decode(record.data)[1]) for record in call]
    return payloads


JAVA_TRACE = [
    "java.lang.IllegalStateException: boom",
    *[f"\tat com.example.Service.method{i}(Service.java:{i})" for i in range(40)],
    "Caused by: java.lang.NullPointerException",
    "\tat com.example.Other.run(Other.java:7)",
    "\t... 12 more",
]


@pytest.mark.parametrize("runtime", ["docker", "cri"])
def test_multiline_records_are_not_cut_inside_a_stack_trace(runtime: str) -> None:
    line_of = (lambda t: docker_line(t + "\n")) if runtime == "docker" else cri_line
    plain = [line_of(f"request {i} served") for i in range(30)]
    trace = b"".join(map(line_of, JAVA_TRACE))
    data = (b"".join(plain) + trace) * 6
    record_bytes = len(trace) * 2 + 3000  # a natural cut falls inside some trace
    batcher, queue, _ = _batcher(compression="none", max_record_bytes=record_bytes,
                                 max_line_bytes=1024, multiline="java")  # fmt: skip
    batcher.add((1, 1), Chunk(data, 0, len(data), len(data), 0), 0.0)
    batcher.flush_all()
    payloads = _records_of(queue)
    assert b"".join(payloads) == data and len(payloads) > 2
    for payload in payloads:
        first = payload.split(b"\n", 1)[0] + b"\n"
        assert first not in map(line_of, JAVA_TRACE[1:]), "record starts inside a trace"

    # Without --multiline the same data is cut inside traces (what the option prevents).
    batcher, queue, _ = _batcher(compression="none", max_record_bytes=record_bytes,
                                 max_line_bytes=1024)  # fmt: skip
    batcher.add((1, 1), Chunk(data, 0, len(data), len(data), 0), 0.0)
    batcher.flush_all()
    firsts = {p.split(b"\n", 1)[0] + b"\n" for p in _records_of(queue)}
    assert firsts & set(map(line_of, JAVA_TRACE[1:]))


def test_multiline_regex_needs_a_valid_start_pattern() -> None:
    with pytest.raises(SystemExit):
        parse_config(["--delivery-stream", "s", "--multiline", "regex"], {})
    with pytest.raises(SystemExit):
        parse_config(
            ["--delivery-stream", "s", "--multiline", "regex", "--multiline-start", "("], {}
        )
    cfg = parse_config([], {"PODHOSE_DELIVERY_STREAM": "s", "PODHOSE_MULTILINE": "regex",
                            "PODHOSE_MULTILINE_START": r"^\d{4}-"})  # fmt: skip
    assert (cfg.multiline, cfg.multiline_start) == ("regex", r"^\d{4}-")


def test_multiline_flush_timeout_holds_an_aged_record_while_a_trace_may_go_on() -> None:
    first = cri_line("request 1 served") + b"".join(map(cri_line, JAVA_TRACE[:3]))
    rest = b"".join(map(cri_line, JAVA_TRACE[3:]))
    batcher, queue, _ = _batcher(compression="none", flush_interval=0.2,
                                 multiline="java", multiline_flush_timeout=1.0)  # fmt: skip
    batcher.add((1, 1), Chunk(first, 0, len(first), len(first), 0), 0.0)
    batcher.flush_aged(0.5)  # aged, but its last line is a frame: the trace may go on
    assert batcher.open
    batcher.add((1, 1), Chunk(rest, len(first), len(first) + len(rest), len(rest), 0), 0.6)
    batcher.flush_aged(1.5)  # 0.9 s after the last line: still within the timeout
    assert batcher.open
    batcher.flush_aged(1.7)
    assert not batcher.open
    assert _records_of(queue) == [first + rest]  # the whole trace in one record

    plain = cri_line("request 2 served")
    batcher, queue, _ = _batcher(compression="none", flush_interval=0.2, multiline="java")
    batcher.add((1, 1), Chunk(plain, 0, len(plain), len(plain), 0), 0.0)
    batcher.flush_aged(0.5)  # a plain last line: closed on time
    assert not batcher.open


@pytest.mark.parametrize(
    "flags",
    [
        ["--multiline", "java"],
        ["--kubernetes-metadata", "--node-name", "n1"],
        ["--kubernetes-metadata"],
    ],
)
def test_opt_ins_refuse_settings_they_cannot_work_with(flags: list[str]) -> None:
    extra = ["--one-line-per-record"] if "--node-name" in flags or "--multiline" in flags else []
    with pytest.raises(SystemExit):
        parse_config(["--delivery-stream", "s", *flags, *extra], {})


def test_a_line_no_record_can_hold_is_cut_into_whole_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(firehose_limits, "MAX_RECORD_BYTES", 20_000)
    cuts: list[int] = []
    cfg = parse_config(["--delivery-stream", "s", "--compression", "gzip"], {})
    tracker, queue = AckTracker(), SendQueue(cfg.flush_interval)
    batcher = Batcher(cfg, tracker, {cfg.delivery_stream: queue}, on_cut=lambda: cuts.append(1))
    batcher.track((1, 1), "f.log", 0)
    noise = os.urandom(50_000).replace(b"\n", b" ")
    line = b"2024-05-01T10:00:00Z stdout F " + noise + b"\n"
    small = cri_line("small")
    payload = small + line + small
    batcher.add((1, 1), Chunk(payload, 0, len(payload), len(payload), 0), 0.0)
    batcher.flush_all()
    queue.flush()
    lines = []
    while len(queue):
        call = queue.take()
        assert call is not None
        for record in call:
            assert len(record.data) <= firehose_limits.MAX_RECORD_BYTES
            lines += decode(record.data)[1]
    assert lines[0] == lines[-1] == small
    pieces = lines[1:-1]
    assert len(pieces) >= 3 and len(cuts) == len(pieces) - 1
    assert all(p.startswith(b"2024-05-01T10:00:00Z stdout F ") for p in pieces)
    assert b"".join(p[30:-1] for p in pieces) == noise  # every byte, in order


def test_a_chunk_of_only_an_unfinished_piece_makes_no_record() -> None:
    batcher, queue, tracker = _batcher()
    batcher.add((1, 1), Chunk(b"", None, 0, 40, 0), 0.0)  # a P line read, nothing complete
    batcher.flush_all()
    queue.flush()
    assert len(queue) == 0
    assert tracker.unacked() == 0 and tracker.committed((1, 1)) == 0


def test_unacknowledged_bytes_follow_the_records_in_flight() -> None:
    tracker = AckTracker()
    tracker.start((1, 2), 0)
    first = tracker.mark((1, 2), 10, 2, 0.0, size=100)
    tracker.mark((1, 2), 10, 0, 0.0, size=0)  # an offset move only
    assert tracker.unacked_bytes() == 100
    tracker.ack([first])
    assert tracker.unacked_bytes() == 100  # one of its two records is still out
    tracker.ack([first])
    assert tracker.unacked_bytes() == 0


def test_a_stale_piece_is_flushed_as_it_is_and_frees_the_offset() -> None:
    joiner = PartialJoiner(512 * 1024)
    piece = cri_line("progress 10%", tag="P")
    other = cri_line("an error", "stderr")
    out = joiner.process(piece + other, 0)
    assert out.data == other
    assert joiner.safe_offset(len(piece + other)) == 0
    assert joiner.held_bytes() > 0
    assert joiner.flush(older_than=0.0) == b""  # not old enough
    assert joiner.flush(older_than=float("inf")) == cri_line("progress 10%")
    assert joiner.safe_offset(len(piece + other)) == len(piece + other)


def test_readiness_fails_while_the_buffer_is_full_with_nothing_in_flight() -> None:
    import time

    from forwarder.health import Health
    from forwarder.metrics import Metrics

    health = Health(Metrics(), stale_after=30, max_lag=5)
    assert health.ready()[0]
    health.stuck(time.monotonic() - 2)
    assert health.ready()[0]
    health.stuck(time.monotonic() - 6)
    ok, why = health.ready()
    assert not ok and "buffer full" in why
    health.stuck(None)
    assert health.ready()[0]
    health.senders_alive = lambda: False
    assert not health.live() and not health.ready()[0]


def test_the_last_scan_time_is_kept_with_the_offsets(tmp_path) -> None:
    from forwarder.offsets import OffsetsDB

    db = OffsetsDB(str(tmp_path / "o.db"))
    assert db.last_scan() is None
    db.save([], scanned=100.0)
    db.save([((1, 2), Stored("p", "t", 5))])  # a save without a scan keeps the scan's time
    assert db.last_scan() == 100.0
    db.close()


def test_docker_files_with_the_same_long_first_message_have_different_fingerprints(
    tmp_path,
) -> None:
    """A Docker line ends with its time: two pods printing the same 1.5 KB banner first
    shared their first kilobyte, and a new file on a reused inode resumed at the old file's
    offset (its head lost). The fingerprint covers the whole first line."""
    banner = "config: " + ",".join(f"key{i}=value{i}" for i in range(100)) + "\n"
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_bytes(docker_line(banner, when="2024-05-01T10:00:00.000000001Z") + b"x\n" * 50)
    new.write_bytes(docker_line(banner, when="2024-05-01T10:05:00.000000002Z") + b"y\n" * 50)
    fd_old, fd_new = os.open(old, os.O_RDONLY), os.open(new, os.O_RDONLY)
    try:
        fp = Fingerprint.of(fd_old, old.stat().st_size)
        assert fp.length > 1024  # the whole first line
        row = Stored("p", "t", old.stat().st_size - 20, fp)
        assert row.applies_to(fd_old, old.stat().st_size)
        assert not row.applies_to(fd_new, new.stat().st_size)
    finally:
        os.close(fd_old)
        os.close(fd_new)


def test_a_record_line_without_stream_and_time_is_carried_whole() -> None:
    """`{"log":""}` passed the Docker-stdout column check (an unpaired part was dropped by
    zip) and arrived with a stream and a time it never had."""
    encoder = wire_encoder.RecordEncoder("zstd", 1, 6)
    for line in (b'{"log":""}\n', b'{"log":"a"}\n', b'{"log":"a","stream":"stdout","time":"t"}\n'):
        assert b"".join(decode(encoder.encode(encoder.header("a_b_c-0.log"), line))[1]) == line


def test_the_buffer_must_hold_a_read_and_an_unfinished_line() -> None:
    with pytest.raises(SystemExit):
        parse_config(["--delivery-stream", "s", "--max-buffer-bytes", "65536"], {})
    cfg = parse_config(["--delivery-stream", "s", "--max-buffer-bytes", str(1024 * 1024)], {})
    assert cfg.max_buffer_bytes == 1024 * 1024


def test_a_file_renamed_while_recovery_reads_its_folder_is_still_drained(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dockerd renames .1 -> .2 -> ... one by one: a stored file between two names while
    start-up recovery read the folder was taken for gone, its unread lines lost (chaos)."""
    from forwarder import rotation

    live = tmp_path / "c-json.log"
    live.write_bytes(docker_line("old\n") * 10)
    st = live.stat()
    key = (st.st_dev, st.st_ino)
    rotated = tmp_path / "c-json.log.1"
    live.rename(rotated)
    live.write_bytes(b"")
    real_stat, missed = os.stat, []

    def stat_racing_a_rename(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path) == str(rotated) and not missed:
            missed.append(path)
            raise FileNotFoundError(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(rotation.os, "stat", stat_racing_a_rename)
    stored = {key: Stored(str(live), str(live), 22)}
    drained, gone = rotation.recover_at_start({}, stored, (), None, 65536, dangling={})
    assert missed and not gone
    assert [t.key for t in drained] == [key] and drained[0].offset == 22
    for tailed in drained:
        tailed.close()


def test_raw_lines_waiting_in_records_stay_within_max_raw_bytes() -> None:
    cap = 64 * 1024
    cfg = parse_config(["--delivery-stream", "s", "--max-raw-bytes", str(cap)], {})
    tracker, queue = AckTracker(), SendQueue(cfg.flush_interval)
    closes: list[int] = []
    batcher = Batcher(cfg, tracker, {"s": queue}, on_raw_limit=lambda: closes.append(1))
    keys = [(1, n) for n in range(200)]
    for key in keys:
        batcher.track(key, f"f{key[1]}.log", 0)
    sent: dict[tuple[int, int], bytes] = dict.fromkeys(keys, b"")
    for round_ in range(5):
        for key in keys:
            data = b"".join(b"%d line %d of round %d\n" % (key[1], i, round_) for i in range(40))
            batcher.add(key, Chunk(data, 0, len(data), len(data), 0), 0.0)
            sent[key] += data
            assert batcher.held_bytes() == sum(op.size for op in batcher.open.values())
            assert batcher.held_bytes() <= cap
    assert closes, "the limit was never reached: the test proves nothing"
    batcher.flush_all()
    assert batcher.held_bytes() == 0
    queue.flush()
    got: dict[tuple[int, int], bytes] = dict.fromkeys(keys, b"")
    while len(queue):
        call = queue.take()
        assert call is not None
        for record in call:
            got[record.mark.key] += b"".join(decode(record.data)[1])
    assert got == sent


def test_a_flush_tick_closes_every_open_record_of_each_due_stream_together() -> None:
    cfg = parse_config(["--delivery-stream", "a", "--route", "ns-b=b", "--flush-interval", "1"], {})
    queues = {"a": SendQueue(cfg.flush_interval), "b": SendQueue(cfg.flush_interval)}
    batcher = Batcher(cfg, AckTracker(), queues)
    streams = {(1, 1): "a", (1, 2): "a", (1, 3): "b", (1, 4): "b", (1, 5): "b"}
    for n, (key, stream) in enumerate(streams.items()):
        batcher.track(key, f"f{n}.log", 0, stream)
        line = b"line\n"
        # (1, 1) and (1, 3) are due at 1.0; the others are younger: they go with them
        batcher.add(key, Chunk(line, 0, len(line), len(line), 0), 0.0 if n in (0, 2) else 0.5)
    batcher.flush_aged(0.9)
    assert len(batcher.open) == 5 and len(queues["a"]) == len(queues["b"]) == 0
    batcher.flush_aged(1.0)
    assert not batcher.open
    assert (len(queues["a"]), len(queues["b"])) == (2, 3)


def test_one_look_at_many_files_lists_their_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of new files at once in one flat folder: the look for each one's unseen
    rotated siblings listed the whole folder per file (CPU growing with the square of the
    files: 6,000 files took 19 CPU-s against 2 before the look)."""
    from forwarder import rotation

    for i in range(50):
        (tmp_path / f"app-{i}.log").write_text("x\n")
    (tmp_path / "app-7.log.1").write_text("rotated\n")
    (tmp_path / "app-7.log.2.gz").write_text("compressed\n")
    (tmp_path / "app-70.log.1").write_text("another file's\n")
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda d: listed.append(d) or real_listdir(d))
    folders = rotation.Folders()
    found = {
        i: [
            os.path.basename(p)
            for p, _ in folders.rotated_siblings(str(tmp_path / f"app-{i}.log"), 0)
        ]
        for i in range(50)
    }
    assert listed == [str(tmp_path)]
    assert found[7] == ["app-7.log.1"] and not any(v for i, v in found.items() if i != 7)
