"""Compression bombs: the transform, run as a process with the Lambda's memory size, refuses
records that expand to 64 MiB and stays within that memory."""

from __future__ import annotations

import zlib

import pytest

BOMB_SCRIPT = """
import json, re, sys
from transform_lambda.app import process_event
from transform_lambda.settings import TransformSettings
from aws_lambda_powertools.utilities.data_classes import KinesisFirehoseEvent
with open(sys.argv[2]) as f:
    event = json.load(f)
settings = TransformSettings.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": sys.argv[1]})
response = process_event(KinesisFirehoseEvent(event), settings).asdict()["records"]
# VmHWM: this process's peak (ru_maxrss would carry over the parent's across exec)
with open("/proc/self/status") as f:
    peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1))
print(json.dumps({"peak_mb": peak_kb // 1024,
                  "results": [r["result"] for r in response],
                  "same_data": [r.get("data") == e["data"]
                                for r, e in zip(response, event["records"], strict=True)]}))
"""


def _bombs() -> tuple[bytes, bytes]:
    """A zstd and a gzip record of 64 MiB of zeros each, made without holding them."""
    import zstandard

    chunk = bytes(1024 * 1024)
    packer = zstandard.ZstdCompressor(level=19).compressobj(size=64 * len(chunk))
    zstd_bomb = b"".join(packer.compress(chunk) for _ in range(64)) + packer.flush()
    gzipper = zlib.compressobj(9, wbits=31)
    gzip_bomb = b"".join(gzipper.compress(chunk) for _ in range(64)) + gzipper.flush()
    return zstd_bomb, gzip_bomb


@pytest.mark.parametrize("memory_mb", ["512", "128"])
def test_compression_bombs_are_refused_within_the_lambda_memory(memory_mb: str, tmp_path) -> None:
    """Small records that expand to 64 MiB each get ProcessingFailed with their original
    data; the invocation's peak memory stays within the function's memory size."""
    import json
    import os
    import subprocess
    import sys

    from testkit.events import firehose_event
    from testkit.forwarder import REPO

    zstd_bomb, gzip_bomb = _bombs()
    assert len(zstd_bomb) < 4096
    legit = b'{"log":"{\\"a\\": 1}\\n","stream":"stdout","time":"t"}\n' * 100
    event = tmp_path / "event.json"
    event.write_text(json.dumps(firehose_event([zstd_bomb] * 4 + [gzip_bomb] * 4 + [legit])))
    env = {**os.environ, "AWS_ENDPOINT_URL_FIREHOSE": "http://127.0.0.1:9",  # re-ingest: refused
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, memory_mb, str(event)], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["results"] == ["ProcessingFailed"] * 8 + ["Ok"], report
    assert all(report["same_data"][:8])
    assert report["peak_mb"] < int(memory_mb) * 0.8, report
