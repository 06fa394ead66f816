"""The simulated node (devstack/node.py) writes what dockerd / containerd / kubelet write."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

from devstack.node import MAX_PIECE, Container, expected_output
from devstack.pipeline import count_lines


def test_docker_layout_split_lines_and_rotation(tmp_path: Path) -> None:
    c = Container(tmp_path, "docker", 0)
    assert re.fullmatch(r"fakenerd-\w+-\w+_default_app-[0-9a-f]{64}\.log", c.link.name)
    assert c.link.parent == tmp_path / "var/log/containers"
    assert os.path.realpath(c.link) == str(c.log_path)
    assert c.log_path.parent.parent == tmp_path / "var/lib/docker/containers"
    c.write("stdout", "x" * (MAX_PIECE + 5))
    c.write("stderr", "hello")
    old = c.rotate()
    c.write("stdout", '{"name": "fakenerd", "time_ms": 1}')
    c.close()
    assert old.name == c.log_path.name + ".1"
    pieces = [json.loads(line) for line in old.read_text().splitlines()]
    assert [p["log"] for p in pieces] == ["x" * MAX_PIECE, "xxxxx\n", "hello\n"]
    assert [p["stream"] for p in pieces] == ["stdout", "stdout", "stderr"]
    (new,) = [json.loads(line) for line in c.log_path.read_text().splitlines()]
    assert new["log"] == '{"name": "fakenerd", "time_ms": 1}\n'
    assert c.written == 3
    assert c.expected == [
        json.dumps({"log": "x" * (MAX_PIECE + 5) + "\n"}, separators=(",", ":")),
        '{"log":"hello\\n"}',
        '{"name":"fakenerd","time_ms":1}',
    ]


def test_cri_layout_partial_lines_and_rotation(tmp_path: Path) -> None:
    c = Container(tmp_path, "cri", 1)
    assert c.log_path.name == "0.log"
    assert re.fullmatch(r"shop_fakenerd-\w+-\w+_[0-9a-f-]{36}", c.log_path.parent.parent.name)
    c.write("stdout", "y" * (MAX_PIECE + 1))
    old = c.rotate()
    c.close()
    assert re.fullmatch(r"0\.log\.\d{8}-\d{6}", old.name)
    lines = old.read_text().splitlines()
    assert [line.split(" ", 3)[1:3] for line in lines] == [["stdout", "P"], ["stdout", "F"]]
    assert "".join(line.split(" ", 3)[3] for line in lines) == "y" * (MAX_PIECE + 1)
    assert c.log_path.read_text() == ""


def test_expected_output_follows_the_seed_pipeline() -> None:
    seed = '{"name": "fakenerd", "time_ms": 1577521193704}'
    assert expected_output("docker", seed) == '{"name":"fakenerd","time_ms":1577521193704}'
    assert expected_output("cri", seed) == '{"name":"fakenerd","time_ms":1577521193704}'
    assert expected_output("docker", "text") == '{"log":"text\\n"}'
    assert expected_output("cri", "text") == '{"log":"text"}'
    assert expected_output("cri", "[1, 2]") == '{"log":"[1, 2]"}'


def test_count_lines_tells_forwarder_records_from_reingested_ones() -> None:
    header = b"\x1epodhose/1 src=a_b_c-" + b"0" * 64 + b".log"
    assert count_lines(header + b"\na\nb\n") == (2, False)
    assert count_lines(gzip.compress(header + b" n=1\na\n")) == (1, True)
    assert count_lines(b"raw\nlines\n") == (2, False)
