"""Gunzip by ISA-L reads what gzip.decompress reads, refuses what it refuses, and is capped."""

from __future__ import annotations

import gzip
import random
import zlib

import pytest

from transform_lambda import decompress as decompress_module
from transform_lambda.decompress import decompress
from transform_lambda.result import RecordUnreadableError

LINES = b"".join(b'{"log":"line %d\\n","stream":"stdout","time":"t"}\n' % i for i in range(500))


def _stdlib(data: bytes) -> bytes | None:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


def _ours(data: bytes) -> bytes | None:
    try:
        return decompress(data)
    except RecordUnreadableError:
        return None


@pytest.mark.parametrize(
    "data",
    [
        gzip.compress(LINES),
        gzip.compress(LINES[:100]) + gzip.compress(LINES[100:]),  # two members
        gzip.compress(LINES) + b"\x00" * 8,  # zero padding
        gzip.compress(LINES) + b"\x00\x00" + gzip.compress(b"more\n"),
        gzip.compress(b""),
    ],
)
def test_reads_what_gzip_reads(data: bytes) -> None:
    assert _ours(data) == gzip.decompress(data)


@pytest.mark.parametrize("seed", range(400))
def test_a_corrupt_member_is_refused_as_gzip_refuses_it(seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray(gzip.compress(LINES, compresslevel=1))
    kind = rng.choice(["flip", "truncate", "trailer"])
    if kind == "flip":
        data[rng.randrange(2, len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(2, len(data)) :]
    else:
        data += bytes([rng.randrange(1, 256)]) + rng.randbytes(rng.randrange(0, 20))
    assert _ours(bytes(data)) == _stdlib(bytes(data))


def test_more_than_the_cap_is_refused_not_inflated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decompress_module, "MAX_PAYLOAD_BYTES", 10_000)
    bomb = gzip.compress(b"\n" * 10_001)
    with pytest.raises(RecordUnreadableError, match="more than 10000 bytes"):
        decompress(bomb)
    assert decompress(gzip.compress(b"\n" * 10_000)) == b"\n" * 10_000
    with pytest.raises(RecordUnreadableError, match="more than"):
        decompress(gzip.compress(b"\n" * 6_000) + gzip.compress(b"\n" * 6_000))


def test_every_zstd_frame_of_a_record_is_read() -> None:
    import zstandard

    frames = [zstandard.ZstdCompressor().compress(LINES[i::2]) for i in range(2)]
    assert decompress(b"".join(frames)) == LINES[0::2] + LINES[1::2]


def test_a_header_number_of_odd_digits_fails_nothing() -> None:
    from transform_lambda.settings import TransformSettings
    from transform_lambda.transform import transform_record

    for n in ("²", "9" * 5000, "-1", ""):
        header = f"\x1epodhose/1 src=a_b_c-0123.log n={n}\n".encode()
        lines = b"".join(LINES.splitlines(keepends=True)[:20])
        result = transform_record(header + lines, TransformSettings())
        assert result.header is not None and result.header.attempt == 0
        assert result.counts.lines_out == 20


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
