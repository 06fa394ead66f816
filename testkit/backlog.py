"""Backlogs of Docker json-file lines in a node layout: what the forwarder benchmark reads
(bench/forwarder.py) and the end-to-end backlog test replays."""

from __future__ import annotations

import json
import random
import secrets
from pathlib import Path

from devstack.node_layout import add_container
from testkit import shapes
from testkit.lines import docker_line

FILES = 4
POOL = 20_000
WORDS = [
    "request",
    "handled",
    "user",
    "session",
    "cache",
    "miss",
    "upstream",
    "timeout",
    "retry",
    "ok",
    "failed",
    "order",
    "item",
    "cart",
    "payment",
    "token",
    "refresh",
    "db",
    "query",
    "rows",
    "returned",
    "latency",
]


def app_message(rng: random.Random, size: int, seq: int) -> str:
    """A JSON application log message of about `size` bytes (before Docker's escaping)."""
    base: dict[str, object] = {"ts": 1714557600000 + seq, "msg": " ".join(rng.sample(WORDS, 2))}
    base["id"] = secrets.token_hex(2)
    if size > 80:
        base["level"] = rng.choice(["info", "info", "info", "warn", "error"])
        base["req"] = secrets.token_hex(6)
    text = json.dumps(base, separators=(",", ":"))
    words: list[str] = []
    while len(text) + sum(len(w) + 1 for w in words) < size - 12:
        words.append(rng.choice(WORDS) if rng.random() < 0.95 else str(rng.randrange(100000)))
    if words:
        base["detail"] = " ".join(words)
        text = json.dumps(base, separators=(",", ":"))
    return text


def numbered_line(msg: str, seq: int) -> bytes:
    """A Docker json-file line for `msg`, stamped one millisecond per `seq`."""
    when = f"2024-05-01T10:{seq // 60000 % 60:02d}:{seq // 1000 % 60:02d}.{seq % 1000:03d}123456Z"
    return docker_line(msg + "\n", when=when)


def write_backlog(root: Path, line_bytes: int | str, total: int) -> tuple[int, int]:
    """Write `total` bytes over FILES container logs: lines of about `line_bytes` (from a
    pool of POOL lines), or of a realistic shape of testkit/shapes.py (all distinct)."""
    if isinstance(line_bytes, str):
        pool = shapes.lines(line_bytes, total // FILES + 1_000_000)
    else:
        rng = random.Random(line_bytes)
        content = max(20, (line_bytes - 66) * 9 // 10 - 8)  # envelope ~66 bytes, escaping
        pool = [numbered_line(app_message(rng, content, i), i) for i in range(POOL)]
    written = lines = 0
    per_file = total // FILES
    for n in range(FILES):
        target = add_container(root, f"bench-{n}", runtime="docker").log
        size = 0
        with open(target, "wb", buffering=4 * 1024 * 1024) as f:
            i = 0
            while size < per_file:
                block = pool[i % len(pool) : i % len(pool) + 1000]
                data = b"".join(block)
                f.write(data)
                size += len(data)
                lines += len(block)
                i += len(block)
        written += size
    return written, lines
