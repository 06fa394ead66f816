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
