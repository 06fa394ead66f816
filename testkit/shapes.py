"""Realistic log shapes for the transform benchmark: what apps on real clusters print.

Each generator returns the lines an app writes (without the runtime's envelope); `wrap`
puts them in Docker json-file or CRI lines, `records` packs them as the forwarder does
(gzip level 1, 1 MiB of lines per record, with the source header).

- fluentbit_backlog: Fluent Bit's throughput backlog as the cost issue describes it: half
  the seed app's line, half a ~245-byte JSON request log (ISO timestamp, 32-hex-digit
  request id, float duration); its gzip-1 records bill 0.110x the raw bytes, as the issue
  measured on Fluent Bit's own backlog (0.109x).
- fluentbit_mix: the same two lines with more random fields (path ids, client addresses,
  byte counts) and so more entropy: gzip-1 bills 0.15x.
- access_json: nginx/envoy JSON access logs: quoted user agents with escaped quotes,
  non-ASCII paths, float request times, upstream timings as strings.
- go_zap: Go zap/logrus JSON: float epoch timestamps, nested error objects, and in 3 % of
  lines 19-20-digit integer ids.
- java_text: Java plain-text logs with multi-line stack traces, each stack line its own line.
- python_structlog: structlog JSON with nested dicts, lists, booleans, nulls and non-ASCII,
  as CRI lines.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from forwarder.wire_encoder import RecordEncoder
from testkit.lines import cri_line, docker_line

START_NANOS = 1714557600 * 10**9  # 2024-05-01T10:00:00Z
SOURCE = "app-7d4b9c8f6-x2x9q_default_app-" + "ab" * 32 + ".log"
RECORD_BYTES = 1024 * 1024


def _iso(rng: random.Random, i: int) -> str:
    return f"2024-05-01T10:{(i // 600) % 60:02d}:{(i // 10) % 60:02d}.{rng.randint(0, 999):03d}Z"


def fluentbit_backlog(rng: random.Random, count: int) -> list[str]:
    """Half the seed's line, half a ~245-byte request log, timed a few microseconds apart."""
    out = []
    ms = 1764662400000
    for i in range(count):
        ms += rng.random() < 0.02  # lines ~20 µs apart, as `lines` times them
        if i % 2 == 0:
            out.append(json.dumps({"name": "fakenerd", "time_ms": ms}))
            continue
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
        out.append(json.dumps({
            "timestamp": f"{stamp}.{ms % 1000:03d}Z", "level": "info",
            "message": "request completed", "request_id": f"{rng.getrandbits(128):032x}",
            "method": rng.choice(["GET", "GET", "POST"]),
            "path": rng.choice(["/api/v1/users", "/api/v1/orders", "/healthz", "/api/v1/items"]),
            "status": rng.choice([200, 200, 200, 201, 404]),
            "duration_ms": round(rng.uniform(0.1, 250), 3), "service": "checkout",
            "version": "1.4.2",
        }))  # fmt: skip
    return out


def fluentbit_mix(rng: random.Random, count: int) -> list[str]:
    """Half the seed's line, half a ~245-byte request log."""
    out = []
    for i in range(count):
        if i % 2 == 0:
            out.append(json.dumps({"name": "fakenerd", "time_ms": 1577521193704 + i}))
        else:
            out.append(json.dumps({
                "timestamp": _iso(rng, i), "level": "info", "logger": "http.access",
                "request_id": f"{rng.getrandbits(128):032x}", "method": "GET",
                "path": f"/api/v1/orders/{rng.randint(1, 99999)}", "status": 200,
                "duration": round(rng.uniform(0.0005, 2.5), 6), "bytes": rng.randint(80, 9000),
                "client": f"10.0.{rng.randint(0, 255)}.{rng.randint(0, 255)}",
            }))  # fmt: skip
    return out


AGENTS = [
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0',
    'curl/8.5.0', 'kube-probe/1.29', 'Go-http-client/2.0',
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) "quoted" Safari/604.1',
]  # fmt: skip
PATHS = ["/", "/api/v1/users", "/café/menü", "/検索?q=ログ", "/static/app.3f9a.js", "/healthz"]


def access_json(rng: random.Random, count: int) -> list[str]:
    """nginx/envoy JSON access logs."""
    out = []
    for i in range(count):
        upstream = ", ".join(f"{rng.uniform(0, 0.3):.3f}" for _ in range(rng.randint(1, 2)))
        out.append(json.dumps({
            "time_local": _iso(rng, i), "remote_addr": f"203.0.113.{rng.randint(1, 254)}",
            "request": f"GET {rng.choice(PATHS)} HTTP/1.1", "status": rng.choice([200, 304, 404]),
            "body_bytes_sent": rng.randint(0, 50000), "request_time": round(rng.random(), 3),
            "upstream_response_time": upstream, "http_referer": "-",
            "http_user_agent": rng.choice(AGENTS), "x_forwarded_for": "-",
        }, ensure_ascii=rng.random() < 0.5))  # fmt: skip
    return out


def go_zap(rng: random.Random, count: int) -> list[str]:
    """Go zap/logrus JSON with float epochs, nested errors and a few huge integer ids."""
    out = []
    for i in range(count):
        entry: dict[str, object] = {
            "level": rng.choice(["info", "info", "debug", "error"]),
            "ts": 1714557600.0 + i * 0.001 + rng.random() / 1000,
            "caller": f"server/handler.go:{rng.randint(10, 400)}", "msg": "handled request",
            "latency": rng.uniform(0.0001, 0.9), "attempt": rng.randint(1, 3),
        }  # fmt: skip
        if entry["level"] == "error":
            entry["error"] = {"kind": "timeout", "op": "dial", "detail": {"addr": "db:5432"}}
        if rng.random() < 0.03:
            entry["trace_id"] = rng.randint(10**18, 10**20)  # 19-20 digits: beyond int64 too
        out.append(json.dumps(entry))
    return out


def java_text(rng: random.Random, count: int) -> list[str]:
    """Java plain-text logs; every 10th event carries a 12-line stack trace."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        i += 1
        when = f"2024-05-01 10:00:{i % 60:02d}.{rng.randint(0, 999):03d}"
        thread = f"[nio-8080-exec-{i % 10}]"
        out.append(f"{when}  INFO 1 --- {thread} c.e.demo.OrderController : order {i} placed")
        if i % 10 == 0:
            out.append(
                "java.lang.IllegalStateException: inventory check failed for order " + str(i)
            )
            out += [f"\tat com.example.demo.Service{k}.call(Service{k}.java:{rng.randint(10, 500)})"
                    for k in range(10)]  # fmt: skip
            out.append("\t... 42 common frames omitted")
    return out[:count]


def python_structlog(rng: random.Random, count: int) -> list[str]:
    """structlog JSON: nested dicts, lists, booleans, nulls, non-ASCII."""
    out = []
    for i in range(count):
        out.append(json.dumps({
            "event": rng.choice(["user signed in", "Zahlung verbucht", "注文を受け付けました"]),
            "timestamp": _iso(rng, i), "level": "info", "logger": "app.views",
            "user": {"id": rng.randint(1, 10**6), "roles": ["admin", "ops"][: rng.randint(0, 2)],
                     "verified": rng.random() < 0.7, "manager": None},
            "tags": ["eu-west-1", f"v{rng.randint(1, 9)}"], "cached": rng.random() < 0.5,
        }, ensure_ascii=False))  # fmt: skip
    return out


SHAPES: dict[str, tuple[Callable[[random.Random, int], list[str]], str]] = {
    "fluentbit_backlog": (fluentbit_backlog, "docker"),
    "fluentbit_mix": (fluentbit_mix, "docker"),
    "access_json": (access_json, "docker"),
    "go_zap": (go_zap, "docker"),
    "java_text": (java_text, "docker"),
    "python_structlog": (python_structlog, "cri"),
}


def wrap(content: str, runtime: str, nanos: int) -> bytes:
    """One runtime line (Docker json-file or CRI) for `content`, written at `nanos` since
    the epoch: Docker writes nine fraction digits, containerd drops trailing zeros."""
    seconds, fraction = divmod(nanos, 10**9)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if runtime == "cri":
        return cri_line(
            content, when=stamp + (f".{fraction:09d}".rstrip("0") if fraction else "") + "Z"
        )
    return docker_line(content + "\n", when=f"{stamp}.{fraction:09d}Z")


def lines(shape: str, total_bytes: int, seed: int = 11) -> list[bytes]:
    """About `total_bytes` of runtime lines of one shape, 1-40 microseconds apart."""
    make, runtime = SHAPES[shape]
    rng = random.Random(seed)
    sample = sum(len(content) for content in make(random.Random(seed), 200)) / 200
    contents = make(rng, int(total_bytes / (sample + 80)) + 200)  # one run: ids stay unique
    out: list[bytes] = []
    size = 0
    nanos = START_NANOS
    for content in contents:
        if size >= total_bytes:
            break
        nanos += rng.randint(1_000, 40_000)
        line = wrap(content, runtime, nanos)
        out.append(line)
        size += len(line)
    return out


def records(
    raw_lines: list[bytes], compression: str = "gzip", head: bytes | None = None
) -> list[bytes]:
    """Forwarder-style records: header (``head``, else SOURCE's) + up to 1 MiB of lines,
    gzip level 1 (what `--compression gzip` sends) or zstd level 1 with the envelope in
    columns (the default)."""
    encoder = RecordEncoder(compression, 1, 1)
    head = head or encoder.header(SOURCE)
    out, current, size = [], [], 0
    for line in raw_lines:
        if current and size + len(line) > RECORD_BYTES:
            out.append(encoder.encode(head, b"".join(current)))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        out.append(encoder.encode(head, b"".join(current)))
    return out
