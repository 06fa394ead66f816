"""Throughput at 1 CPU, measured the peers' way: a kubelet-style ramp of generator pods.

The shape of VictoriaMetrics' log-collectors-benchmark (github.com/VictoriaMetrics/
log-collectors-benchmark): generator pods write JSON lines with a per-pod `sequence_id`
(from 1, +1 a line) and a `generated_at` nanosecond time, rates ramp up, containerd writes
the CRI files (`<RFC3339Nano> stdout F <json>`) that kubelet rotates at 10 MiB keeping 5,
the collector gets 1 CPU and 1 GiB, and loss = max sequence - count, per pod.

Here, on one machine:

- **generators**: --pods pods (10, as the peers' default), spread over --writers processes
  that write each pod's lines in batches (as containerd's CRI logger writes them: RFC3339Nano
  time with trailing zeros trimmed, `stdout F`) into
  `var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`, linked from
  `var/log/containers/<pod>_<ns>_<container>-<id>.log`; a writer re-opens a pod's `0.log`
  when kubelet renamed it (containerd's ReopenContainerLog);
- **kubelet**: one process doing what kubelet's container log manager does every
  --monitor-interval (10 s, kubelet's default): for a `0.log` over 10 MiB, drop temporary
  and already-compressed leftovers, remove the oldest rotated files beyond MaxFiles - 2,
  gzip every uncompressed rotated file (`.tmp`, then renamed to `.gz`), rename `0.log` to
  `0.log.<YYYYMMDD-hhmmss>` (the runtime then re-opens). gzip is ISA-L's igzip at level 1
  (kubelet uses Go's default level): the compression is load on the box, and the forwarder
  never reads `.gz`;
- **Firehose**: devstack.firehose_endpoint in its own process, storing each accepted
  record with its arrival time in a file (no decoding during the run);
- **the forwarder**: `python -m forwarder` with the DaemonSet's defaults, in a cgroup of
  1 CPU (`cpu.max 100000 100000` / `cpu.cfs_quota_us 100000`) and 1 GiB;
- **after the run**: every record is decoded with the transform (transform_lambda's
  `transform_record`, the seed pipeline: the CRI envelope parsed, `log` decoded and lifted),
  and each pod's `sequence_id`s are counted: lost = lines written - distinct ids received
  (per step: among the ids written in that step), duplicates = received - distinct; the
  peers' own formula, max id received - count, is reported beside it.

The ramp is in steps (--steps lines/s, --step-seconds each). Per step: offered and delivered
rate, the delivery lag of the step's lines (arrival at the endpoint - `generated_at`),
the forwarder's CPU (a fraction of 1 CPU, and CPU-s per million lines) and RSS. A step is
kept up with when none of its lines is lost and 99 % of them arrive within --max-lag
seconds. podhose does not drop lines it cannot keep up with (it holds rotated files open
and reads them late), so falling behind shows as lag, not loss.

Needs root and cgroup cpu and memory controllers (v1 or v2); exits 2 saying so otherwise.

    python -m bench.kubelet_load [--steps 50000,100000,...] [--step-seconds 20]
        [--plot docs/images/kubelet-load.png]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import itertools
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import plotting
from bench.forwarder import REPO, RESULTS, stats
from devstack.forwarder_process import forwarder_command
from devstack.node_layout import CONTAINERS_DIR, add_container
from testkit.forwarder import free_port

MIB = 1024 * 1024
MAX_SIZE = 10 * MIB  # kubelet's containerLogMaxSize default
MAX_FILES = 5  # kubelet's containerLogMaxFiles default
NAMESPACE = "log-generator"
CONTAINER = "log-generator"
PERIOD_US = 100_000
MEMORY_LIMIT = 1 << 30
# The peers' figures: highest rate without loss and RSS, 1 CPU / 1 GiB each, their machine
# (VictoriaMetrics, "log collectors benchmark 2026", published).
PEERS = {
    "vlagent": 178_000,
    "Fluent Bit": 41_000,
    "Grafana Alloy": 41_000,
    "Vector": 32_000,
    "OpenTelemetry Collector": 27_000,
}
PEERS_RSS_MB = (88, 178)
RECORD_HEAD = struct.Struct("<dI")  # arrival time, length of the record's data

# ---- the generator line (fields and probabilities of the peers' log-generator) -----------
MESSAGES = [
    "Request processed successfully", "User authentication completed",
    "Payment transaction initiated", "Database connection established", "Cache miss occurred",
    "Service health check passed", "API rate limit exceeded", "Session expired",
    "Data validation failed",
]  # fmt: skip
OPTIONAL = [  # (probability %, key, values or (low, high) for a number, quoted)
    (80, "level", ["DEBUG", "INFO", "WARN", "ERROR"], True),
    (90, "component", ["auth-service", "payment-service", "user-service",
                       "notification-service"], True),
    (70, "method", ["GET", "POST", "PUT", "DELETE"], True),
    (85, "status_code", [200, 201, 400, 401, 403, 404, 500, 503], False),
    (75, "duration_ms", (10, 1010), False),
    (60, "user_id", "user", True),
    (65, "bytes_sent", (100, 10100), False),
    (15, "environment", ["production", "staging", "development", "testing"], True),
    (20, "region", ["us-east-1", "us-west-2", "eu-central-1", "ap-southeast-1"], True),
    (10, "error_type", ["TimeoutError", "ConnectionError", "ValidationError",
                        "AuthenticationError", "DatabaseError"], True),
    (25, "trace_id", ["trace-a1b2c3d4", "trace-e5f6g7h8", "trace-i9j0k1l2",
                      "trace-m3n4o5p6"], True),
    (18, "protocol", ["HTTP/1.1", "HTTP/2", "gRPC", "WebSocket"], True),
]  # fmt: skip
TEMPLATE_LINES = 1024  # lines in one pre-built batch template
TEMPLATES = 16
_TRIM = (b"0Z stdout F ", b"Z stdout F ")


def line_template(rng: random.Random) -> bytes:
    """One CRI line as a %-template: (time's second prefix, nanoseconds, generated_at, seq)."""
    out = b'%s%09dZ stdout F {"generated_at":%d,"_msg":"' + rng.choice(MESSAGES).encode()
    out += b'","sequence_id":%d'
    for chance, key, values, quoted in OPTIONAL:
        if rng.randrange(100) >= chance:
            continue
        if key == "user_id":
            value = f'"user_{rng.randrange(10000)}"'
        elif isinstance(values, tuple):
            value = str(rng.randrange(*values))
        else:
            choice = rng.choice(values)
            value = f'"{choice}"' if quoted else str(choice)
        out += f',"{key}":{value}'.encode().replace(b"%", b"%%")
    return out + b"}\n"


class Batches:
    """Batches of a pod's lines from pre-built templates: one %-format per batch."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.templates: list[tuple[bytes, list[int]]] = []
        for _ in range(TEMPLATES):
            lines = [line_template(rng) for _ in range(TEMPLATE_LINES)]
            ends = list(itertools.accumulate(map(len, lines), initial=0))
            self.templates.append((b"".join(lines), ends))
        self.turn = 0

    def make(self, seq: int, count: int, now_ns: int, interval_ns: int) -> bytes:
        """`count` (<= TEMPLATE_LINES) lines with sequence ids seq, seq+1, ... spread
        `interval_ns` apart before `now_ns`, within its second."""
        template, ends = self.templates[self.turn]
        self.turn = (self.turn + 1) % TEMPLATES
        second, frac = divmod(now_ns, 1_000_000_000)
        step = min(interval_ns, frac // max(1, count))
        if step > 10 and step % 5 == 0:  # last digits vary: 1 time in 10 ends in 0 (trimmed)
            step -= 1
        first = frac - step * count
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        fracs = range(first, first + step * count, step) if step else itertools.repeat(frac)
        stamps = range(second * 1_000_000_000 + first, now_ns, step) if step else None
        values = zip(
            itertools.repeat(prefix, count),
            fracs,
            stamps if stamps is not None else itertools.repeat(now_ns),
            range(seq, seq + count),
            strict=False,  # the repeats are endless
        )
        data = template[: ends[count]] % tuple(itertools.chain.from_iterable(values))
        while _TRIM[0] in data:  # RFC3339Nano drops the fraction's trailing zeros
            data = data.replace(*_TRIM)
        return data.replace(b".Z stdout F ", b"Z stdout F ")


# ---- the node's layout ------------------------------------------------------------------
@dataclass
class Pod:
    """One generator pod: its 0.log and the /var/log/containers link to it."""

    name: str
    log: str  # var/log/pods/<ns>_<pod>_<uid>/<container>/0.log


def make_pods(root: Path, count: int) -> list[Pod]:
    """`count` pods with kubelet's layout under `root`."""
    rng = random.Random(7)
    pods = []
    for n in range(count):
        name = f"log-generator-6c9f{n:02d}d8b7-{rng.getrandbits(20):05x}"
        uid = f"{rng.getrandbits(32):08x}-{n:04x}-4d1e-9a7b-{rng.getrandbits(48):012x}"
        cid = f"{rng.getrandbits(256):064x}"
        files = add_container(
            root, name, namespace=NAMESPACE, name=CONTAINER, container_id=cid, uid=uid
        )
        pods.append(Pod(name, str(files.log)))
    return pods


# ---- the generators ---------------------------------------------------------------------
def rate_at(steps: list[int], step_seconds: float, elapsed: float) -> int:
    """Lines/s of the whole ramp `elapsed` seconds after its start (0 after the last step)."""
    index = int(elapsed // step_seconds)
    return steps[index] if 0 <= index < len(steps) else 0


def due_lines(steps: list[int], step_seconds: float, elapsed: float) -> float:
    """Lines the whole ramp has offered `elapsed` seconds after its start."""
    full = min(len(steps), int(elapsed // step_seconds))
    done = sum(steps[:full]) * step_seconds
    if full < len(steps):
        done += steps[full] * (elapsed - full * step_seconds)
    return done


class Writer:
    """One pod's file as containerd keeps it: appended to, re-opened after a rename."""

    def __init__(self, pod: Pod, seed: int) -> None:
        self.pod = pod
        self.batches = Batches(seed)
        self.seq = 1  # next sequence id
        self.fd = -1
        self.ino = -1
        self.reopen()

    def reopen(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(self.pod.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.ino = os.fstat(self.fd).st_ino

    def write(self, count: int, now_ns: int, interval_ns: int) -> None:
        try:
            if os.stat(self.pod.log).st_ino != self.ino:
                self.reopen()
        except FileNotFoundError:
            self.reopen()
        while count > 0:
            n = min(count, TEMPLATE_LINES)
            data = self.batches.make(self.seq, n, now_ns, interval_ns)
            os.write(self.fd, data)
            self.seq += n
            count -= n


@dataclass(frozen=True)
class Ramp:
    """The ramp the generators follow, all pods together."""

    steps: list[int]  # lines/s of each step
    step_seconds: float
    start: float  # time.time() of its start
    pods: int  # pods sharing it
    tick: float  # seconds between batches


def generate(pods: list[Pod], seed: int, ramp: Ramp) -> dict[str, object]:
    """A writer process: its pods' lines at their share of the ramp, in batches every
    `tick` s; returns the sequence id each pod reached at each step's start, its last id,
    and the lines written per second."""
    steps, step_seconds, start, tick = ramp.steps, ramp.step_seconds, ramp.start, ramp.tick
    total_pods = ramp.pods
    writers = [Writer(pod, seed + i) for i, pod in enumerate(pods)]
    per_second: dict[int, int] = {}
    bounds: list[list[int]] = []
    behind_s = 0.0
    end = start + len(steps) * step_seconds
    while time.time() < start:
        time.sleep(0.005)
    while True:
        now = time.time()
        elapsed = min(now, end) - start
        while len(bounds) <= min(len(steps) - 1, int(elapsed // step_seconds)):
            bounds.append([w.seq for w in writers])
        pod_rate = rate_at(steps, step_seconds, elapsed) / total_pods
        interval = int(1e9 / pod_rate) if pod_rate else 1
        target = int(due_lines(steps, step_seconds, elapsed) / total_pods)
        written = 0
        for w in writers:
            count = target - (w.seq - 1)
            if count > 0:
                w.write(count, time.time_ns(), interval)
                written += count
        second = int(now - start)
        per_second[second] = per_second.get(second, 0) + written
        if now >= end:
            break
        spent = time.time() - now
        behind_s = max(behind_s, spent - tick)
        time.sleep(max(0.0, tick - spent))
    for w in writers:
        os.close(w.fd)
    return {
        "pods": [p.name for p in pods],
        "bounds": bounds,
        "last": [w.seq - 1 for w in writers],
        "per_second": per_second,
        "behind_s": behind_s,
    }


# ---- kubelet's container log manager ------------------------------------------------------
def rotate(log: str, compress_level: int) -> bool:
    """kubelet's rotateLog for one container's `0.log` (when over MAX_SIZE). True if rotated."""
    try:
        if os.stat(log).st_size < MAX_SIZE:
            return False
    except FileNotFoundError:
        return False
    folder, name = os.path.split(log)
    rotated = sorted(f for f in os.listdir(folder) if f.startswith(name + "."))
    # cleanupUnusedLogs: temporary files, and uncompressed logs whose .gz exists
    for f in list(rotated):
        if f.endswith(".tmp") or (not f.endswith(".gz") and f + ".gz" in rotated):
            os.unlink(os.path.join(folder, f))
            rotated.remove(f)
    # removeExcessLogs: keep the newest MaxFiles-2 rotated logs (the current one and the
    # one rotated now make MaxFiles)
    rotated.sort(key=lambda f: f.removesuffix(".gz"))
    for f in rotated[: max(0, len(rotated) - (MAX_FILES - 2))]:
        os.unlink(os.path.join(folder, f))
    rotated = rotated[max(0, len(rotated) - (MAX_FILES - 2)) :]
    for f in rotated:  # compressLog: every uncompressed rotated log
        if not f.endswith(".gz"):
            compress(os.path.join(folder, f), compress_level)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    os.rename(log, f"{log}.{stamp}")  # rotateLatestLog; the runtime re-opens 0.log
    return True


def compress(path: str, level: int) -> None:
    """`path` gzip-compressed to `path`.gz through `path`.gz.tmp, then removed (kubelet's
    compressLog), with ISA-L's igzip when installed."""
    try:
        from isal import igzip as gz  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover
        gz = gzip
    tmp = path + ".gz.tmp"
    with open(path, "rb") as src, gz.open(tmp, "wb", compresslevel=level) as dst:
        shutil.copyfileobj(src, dst, 4 * MIB)
    os.rename(tmp, path + ".gz")
    os.unlink(path)


def kubelet(logs: list[str], interval: float, stop_at: float, level: int) -> int:
    """The container log manager's loop until `stop_at`; returns the rotations made."""
    rotations = 0
    next_look = time.time() + interval
    while time.time() < stop_at:
        time.sleep(max(0.0, min(next_look, stop_at) - time.time()))
        if time.time() >= stop_at:
            break
        next_look += interval
        rotations += sum(rotate(log, level) for log in logs)
    return rotations


# ---- Firehose -----------------------------------------------------------------------------
def serve(port: int, out: str) -> None:
    """The endpoint process: accept every call, store each record with its arrival time."""
    from devstack.firehose_endpoint import FirehoseEndpoint

    lock = threading.Lock()
    with open(out, "wb", buffering=MIB) as sink_file:

        def sink(_stream: str, datas: list[bytes]) -> None:
            now = time.time()
            with lock:
                for data in datas:
                    sink_file.write(RECORD_HEAD.pack(now, len(data)))
                    sink_file.write(data)

        endpoint = FirehoseEndpoint(port, store=False, sink=sink).start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print("ready", flush=True)
        stop.wait()
        endpoint.stop()
        with lock:
            sink_file.flush()


# ---- the cgroup -----------------------------------------------------------------------------
class CgroupError(RuntimeError):
    """No cgroup cpu and memory controllers this process may use."""


def make_cgroup(name: str) -> list[Path]:
    """Groups limiting a process to 1 CPU and 1 GiB: v1 cpu + memory, or one v2 group.
    The process joins them by writing its pid to each one's cgroup.procs."""
    if os.geteuid() != 0:
        raise CgroupError("needs root to create a cgroup")
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    v1 = {opt: Path(m[1]) for m in mounts if m[2] == "cgroup" for opt in m[3].split(",")}
    made: list[Path] = []
    try:
        if "cpu" in v1 and "memory" in v1:
            cpu, mem = v1["cpu"] / name, v1["memory"] / name
            for group in (cpu, mem):
                group.mkdir()
                made.append(group)
            (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(PERIOD_US))
            (mem / "memory.limit_in_bytes").write_text(str(MEMORY_LIMIT))
            return made
        v2 = [Path(m[1]) for m in mounts if m[2] == "cgroup2"]
        if not v2:
            raise CgroupError("no cgroup cpu and memory controllers are mounted")
        root = v2[0]
        if not {"cpu", "memory"} <= set((root / "cgroup.subtree_control").read_text().split()):
            (root / "cgroup.subtree_control").write_text("+cpu +memory")
        group = root / name
        group.mkdir()
        made.append(group)
        (group / "cpu.max").write_text(f"{PERIOD_US} {PERIOD_US}")
        (group / "memory.max").write_text(str(MEMORY_LIMIT))
        return made
    except OSError as error:
        remove_cgroup(made)
        raise CgroupError(f"cannot create a 1 CPU / 1 GiB cgroup: {error}") from None


def remove_cgroup(groups: list[Path]) -> None:
    """Remove the groups (their processes have exited)."""
    for group in reversed(groups):
        for _ in range(50):
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


def proc_figures(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, RSS bytes, peak RSS bytes) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
    return cpu, rss, hwm


# ---- decoding what arrived --------------------------------------------------------------------
_IDS = re.compile(rb'"generated_at":(\d+),"_msg":"[^"]*","sequence_id":(\d+)')


def record_spans(path: str) -> Iterator[tuple[int, int]]:
    """(offset, bytes) of runs of ~64 MB of whole stored records."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        start = pos = 0
        while pos < size:
            f.seek(pos)
            _t, length = RECORD_HEAD.unpack(f.read(RECORD_HEAD.size))
            pos += RECORD_HEAD.size + length
            if pos - start >= 64 * MIB:
                yield start, pos - start
                start = pos
        if pos > start:
            yield start, pos - start


def decode_span(path: str, offset: int, length: int) -> dict[str, tuple]:
    """Per pod: (sequence ids, generated_at ns, arrival s) of the lines of the stored records
    in the span, after the transform."""
    import numpy as np

    from transform_lambda.settings import TransformSettings
    from transform_lambda.transform import transform_record

    settings = TransformSettings()
    with open(path, "rb") as f:
        f.seek(offset)
        blob = f.read(length)
    found: dict[str, list[tuple]] = {}
    pos = 0
    while pos < len(blob):
        arrival, size = RECORD_HEAD.unpack_from(blob, pos)
        pos += RECORD_HEAD.size
        result = transform_record(blob[pos : pos + size], settings)
        pos += size
        source = result.header.source if result.header is not None else None
        pod = source.pod if source is not None else "?"
        pairs = _IDS.findall(result.data)
        if len(pairs) != result.counts.lines_out:
            raise RuntimeError(f"{result.counts.lines_out - len(pairs)} lines without ids")
        ids = np.array([p[1] for p in pairs]).astype(np.int64)
        gen = np.array([p[0] for p in pairs]).astype(np.int64)
        found.setdefault(pod, []).append((ids, gen, np.full(len(ids), arrival)))
    return {
        pod: tuple(np.concatenate([part[i] for part in parts]) for i in range(3))
        for pod, parts in found.items()
    }


def decode_all(path: str, workers: int) -> dict[str, tuple]:
    """Every pod's (ids, generated_at, arrival) over the whole stored file."""
    import numpy as np

    parts: dict[str, list[tuple]] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futures = [pool.submit(decode_span, path, o, n) for o, n in record_spans(path)]
        for future in futures:
            for pod, arrays in future.result().items():
                parts.setdefault(pod, []).append(arrays)
    return {
        pod: tuple(np.concatenate([a[i] for a in arrays]) for i in range(3))
        for pod, arrays in parts.items()
    }


# ---- the run ----------------------------------------------------------------------------------
@dataclass
class Step:
    """One step of the ramp."""

    step: int
    target_lines_per_s: int
    offered_lines_per_s: float
    delivered_lines_per_s: float
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    lost: int
    duplicates: int
    cpu_share: float  # of 1 CPU
    cpu_s_per_million: float  # the forwarder's CPU-s per million lines delivered in the step
    rss_mb: float
    kept_up: bool
    load_avg: float


def forwarder_cmd(root: Path, url: str, extra: list[str]) -> list[str]:
    """The forwarder as the DaemonSet runs it (defaults), against the local endpoint."""
    glob = str(root / CONTAINERS_DIR / "*.log")
    return forwarder_command(
        glob, "bench", url, root / "offsets.db", "--http-port", "0", "--log-level", "WARNING",
        *extra,
    )  # fmt: skip


def start_endpoint(sink: str) -> tuple[subprocess.Popen[bytes], str]:
    """The storing endpoint in its own process; (process, URL)."""
    port = free_port()
    endpoint = subprocess.Popen(
        [sys.executable, "-m", "bench.kubelet_load", "--serve", str(port), "--sink", sink],
        cwd=REPO, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert endpoint.stdout is not None
    if endpoint.stdout.readline().strip() != b"ready":
        endpoint.kill()
        raise RuntimeError("endpoint did not start")
    return endpoint, f"http://127.0.0.1:{port}"


def start_forwarder(
    root: Path, url: str, groups: list[Path], args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], int]:
    """The forwarder in the cgroup (under py-spy with --profile); (process, its pid)."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(REPO)}  # fmt: skip
    procs_files = [g / "cgroup.procs" for g in groups]
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    spy = [spy_bin, "record", "-o", args.profile, "-r", "50", "--threads"]
    if args.profile.endswith(".txt"):  # collapsed stacks, for reading
        spy += ["--format", "raw"]
    prefix = [*spy, "--"] if args.profile else []
    cmd = [*prefix, *forwarder_cmd(root, url, args.forwarder_args.split())]
    # A shell joins the cgroup(s), then becomes the forwarder (or py-spy).
    script = "set -e; " + "; ".join(f'echo $$ > "{f}"' for f in procs_files) + '; exec "$@"'
    fwd = subprocess.Popen(["sh", "-c", script, "sh", *cmd], cwd=REPO, env=env)
    pid = fwd.pid
    if args.profile:  # py-spy runs the forwarder as its child, inside the same cgroup
        time.sleep(1.0)
        pid = int(subprocess.check_output(["pgrep", "-P", str(fwd.pid)]).split()[0])
    return fwd, pid


def sample(pid: int, start: float, samples: list[tuple[float, float, int, float]]) -> int:
    """Append (seconds into the ramp, CPU s, RSS, load average) of the forwarder; its peak
    RSS so far."""
    cpu, rss, hwm = proc_figures(pid)
    samples.append((time.time() - start, cpu, rss, os.getloadavg()[0]))
    return hwm


def drive(pods: list[Pod], pid: int, args: argparse.Namespace) -> dict[str, object]:
    """The generators and kubelet through the ramp, the forwarder sampled meanwhile."""
    steps = [int(s) for s in args.steps.split(",")]
    ramp = Ramp(steps, args.step_seconds, time.time() + 1.0, len(pods), args.tick)
    end = ramp.start + len(steps) * args.step_seconds
    samples: list[tuple[float, float, int, float]] = []
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(args.writers + 1, mp_context=ctx) as pool:
        logs = [p.log for p in pods]
        rotations = pool.submit(kubelet, logs, args.monitor_interval, end, args.gzip_level)
        futures = [
            pool.submit(generate, pods[i :: args.writers], 1000 * i, ramp)
            for i in range(args.writers)
        ]
        while not all(f.done() for f in futures):
            sample(pid, ramp.start, samples)
            time.sleep(0.5)
        written = [f.result() for f in futures]
        rotated = rotations.result()
    return {"steps": steps, "step_seconds": args.step_seconds, "start": ramp.start,
            "written": written, "samples": samples, "rotations": rotated}  # fmt: skip


def drain(url: str, pid: int, raw: dict, seconds: float) -> None:
    """Wait until the endpoint has had no call for 4 s (at most `seconds`); sample."""
    calls, quiet_since, deadline = -1, time.time(), time.time() + seconds
    while time.time() < deadline:
        now_calls = stats(url)["calls"]
        if now_calls != calls:
            calls, quiet_since = now_calls, time.time()
        elif time.time() - quiet_since > 4:
            break
        sample(pid, raw["start"], raw["samples"])
        time.sleep(0.5)
    raw["peak_rss"] = sample(pid, raw["start"], raw["samples"])


def run(args: argparse.Namespace) -> dict[str, object]:
    """One ramp; returns the raw figures (see `summarise`)."""
    groups = make_cgroup(f"podhose-kubelet-load-{os.getpid()}")
    tmp = Path(tempfile.mkdtemp(prefix="podhose-kubelet-", dir=args.tmp))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        root = tmp / "node"
        pods = make_pods(root, args.pods)
        sink = str(tmp / "records.bin")
        endpoint, url = start_endpoint(sink)
        procs.append(endpoint)
        fwd, pid = start_forwarder(root, url, groups, args)
        procs.append(fwd)
        time.sleep(1.5)  # started, first scan done
        raw = drive(pods, pid, args)
        drain(url, pid, raw, args.drain_seconds)
        fwd.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
        fwd.wait(timeout=60)
        endpoint.terminate()
        endpoint.wait(timeout=30)
        print(f"run done: {raw['rotations']} rotations; decoding "
              f"{os.path.getsize(sink) / 1e6:.0f} MB of records with the transform",
              flush=True)  # fmt: skip
        raw["arrived"] = decode_all(sink, args.decode_workers)
        return raw
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        remove_cgroup(groups)
        shutil.rmtree(tmp, ignore_errors=True)


def written_by_pod(raw: dict) -> tuple[dict[str, tuple[list[int], int]], dict[int, int]]:
    """Per pod: (its first sequence id of each step, its last id); lines offered per second."""
    per_pod: dict[str, tuple[list[int], int]] = {}
    offered_per_s: dict[int, int] = {}
    for w in raw["written"]:
        for i, pod in enumerate(w["pods"]):
            per_pod[pod] = ([b[i] for b in w["bounds"]], w["last"][i])
        for sec, n in w["per_second"].items():
            offered_per_s[int(sec)] = offered_per_s.get(int(sec), 0) + n
    return per_pod, offered_per_s


def step_row(raw: dict, per_pod: dict, k: int, max_lag: float) -> Step:
    """Step k's figures: its lines (by sequence id) lost, duplicated and their lag; lines
    that arrived during it; the forwarder's CPU and RSS over it."""
    import numpy as np

    seconds, start, arrived = raw["step_seconds"], raw["start"], raw["arrived"]
    empty = (np.zeros(0, np.int64),) * 3
    lost = dups = offered = in_step = 0
    lags = []
    t0, t1 = start + k * seconds, start + (k + 1) * seconds
    for pod, (bounds, last) in per_pod.items():
        lo = bounds[k]
        hi = bounds[k + 1] - 1 if k + 1 < len(bounds) else last
        offered += hi - lo + 1
        ids, gen, arr = arrived.get(pod, empty)
        mask = (ids >= lo) & (ids <= hi)
        distinct = len(np.unique(ids[mask]))
        lost += (hi - lo + 1) - distinct
        dups += int(mask.sum()) - distinct
        lags.append(arr[mask] - gen[mask] / 1e9)
        in_step += int(((arr >= t0) & (arr < t1)).sum())
    lag = np.concatenate(lags)
    samples = np.array(raw["samples"])
    sel = samples[(samples[:, 0] >= k * seconds) & (samples[:, 0] <= (k + 1) * seconds)]
    cpu = (sel[-1, 1] - sel[0, 1]) / (sel[-1, 0] - sel[0, 0]) if len(sel) > 1 else 0.0
    p50, p99, top = (float(np.percentile(lag, q)) if len(lag) else float("inf")
                     for q in (50, 99, 100))  # fmt: skip
    return Step(
        step=k + 1,
        target_lines_per_s=raw["steps"][k],
        offered_lines_per_s=round(offered / seconds),
        delivered_lines_per_s=round(in_step / seconds),
        lag_p50_s=round(p50, 2),
        lag_p99_s=round(p99, 2),
        lag_max_s=round(top, 2),
        lost=lost,
        duplicates=dups,
        cpu_share=round(cpu, 3),
        cpu_s_per_million=round(cpu * seconds / (in_step / 1e6), 2) if in_step else 0.0,
        rss_mb=round(float(sel[:, 2].max()) / MIB, 1) if len(sel) else 0.0,
        kept_up=lost == 0 and p99 <= max_lag,
        load_avg=round(float(sel[:, 3].mean()), 2) if len(sel) else 0.0,
    )


def time_series(raw: dict, offered_per_s: dict[int, int]) -> dict[str, list]:
    """Per second of the ramp: lines offered, lines delivered, the largest lag of the lines
    generated in it; the forwarder's RSS and CPU samples."""
    import numpy as np

    start, arrived = raw["start"], raw["arrived"]
    samples = np.array(raw["samples"])
    arrival = np.concatenate([a for _i, _g, a in arrived.values()]) - start
    generated = np.concatenate([g for _i, g, _a in arrived.values()]) / 1e9 - start
    horizon = int(max(arrival.max(), len(raw["steps"]) * raw["step_seconds"])) + 1
    delivered = np.bincount(np.clip(arrival.astype(np.int64), 0, None), minlength=horizon)
    lag_max = np.full(horizon, -np.inf)
    np.maximum.at(lag_max, np.clip(generated.astype(np.int64), 0, horizon - 1),
                  arrival - generated)  # fmt: skip
    lag_max[lag_max == -np.inf] = np.nan  # no line generated in that second
    cpu = np.diff(samples[:, 1]) / np.diff(samples[:, 0])
    return {
        "second": list(range(horizon)),
        "offered": [offered_per_s.get(s, 0) for s in range(horizon)],
        "delivered": delivered[:horizon].tolist(),
        "lag_max": lag_max.tolist(),
        "rss_mb": [(float(t), float(r) / MIB) for t, _c, r, _l in samples],
        "cpu": list(zip(samples[1:, 0].tolist(), cpu.tolist(), strict=True)),
    }


def summarise(raw: dict, max_lag: float) -> tuple[list[Step], dict[str, object], dict]:
    """Per-step figures, the totals, and the time series for the plot."""
    import numpy as np

    per_pod, offered_per_s = written_by_pod(raw)
    rows = [step_row(raw, per_pod, k, max_lag) for k in range(len(raw["steps"]))]
    lost = dups = peers_lost = 0
    for pod, (_bounds, last) in per_pod.items():
        ids = raw["arrived"].get(pod, (np.zeros(0, np.int64),))[0]
        distinct = np.unique(ids)
        dups += len(ids) - len(distinct)
        lost += last - len(distinct[distinct <= last])
        peers_lost += (int(distinct.max()) if len(distinct) else 0) - len(ids)
    sustained = 0  # the ramp is kept up with to the step before the first one that is not
    for r in rows:
        if not r.kept_up:
            break
        sustained = r.target_lines_per_s
    written = sum(last for _b, last in per_pod.values())
    samples = np.array(raw["samples"])
    totals = {
        "highest_kept_up_lines_per_s": sustained,
        "highest_step_kept_up_lines_per_s": max(
            (r.target_lines_per_s for r in rows if r.kept_up), default=0
        ),
        "lines_written": written,
        "lost": lost,
        "duplicates": dups,
        "lost_peers_formula": peers_lost,
        "peak_rss_mb": round(max(raw["peak_rss"], float(samples[:, 2].max())) / MIB, 1),
        "cpu_s_per_million_lines": round(
            float(samples[-1, 1] - samples[0, 1]) / (written / 1e6), 2
        ),
        "rotations": raw["rotations"],
        "generator_behind_s": round(max(w["behind_s"] for w in raw["written"]), 3),
        "load_avg": round(float(samples[:, 3].mean()), 2),
    }
    return rows, totals, time_series(raw, offered_per_s)


def table(rows: list[Step]) -> str:
    """The steps as a fixed-width table."""
    cols = [
        ("target/s", "target_lines_per_s"), ("offered/s", "offered_lines_per_s"),
        ("delivered/s", "delivered_lines_per_s"), ("lag p50 s", "lag_p50_s"),
        ("lag p99 s", "lag_p99_s"), ("lag max s", "lag_max_s"), ("lost", "lost"),
        ("dups", "duplicates"), ("CPU", "cpu_share"), ("CPU-s/M", "cpu_s_per_million"),
        ("RSS MB", "rss_mb"), ("load", "load_avg"), ("kept up", "kept_up"),
    ]  # fmt: skip
    out = [[h for h, _ in cols]] + [[str(getattr(r, a)) for _, a in cols] for r in rows]
    widths = [max(len(row[i]) for row in out) for i in range(len(cols))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in out)


def plot(series: dict, rows: list[Step], totals: dict, path: Path) -> None:
    """Offered vs delivered lines/s and the delivery lag over the ramp, peers' figures."""
    plt = plotting.pyplot()
    fig, (ax, lag_ax) = plt.subplots(2, 1, figsize=(11, 7), sharex=True,
                                     gridspec_kw={"height_ratios": [3, 2]})  # fmt: skip
    sec = series["second"]
    ax.plot(sec, [v / 1000 for v in series["offered"]], label="offered (generators)", lw=1.2)
    ax.plot(sec, [v / 1000 for v in series["delivered"]], label="delivered (podhose, 1 CPU)",
            lw=1.2)  # fmt: skip
    by_rate: dict[int, list[str]] = {}
    for name, rate in PEERS.items():
        by_rate.setdefault(rate, []).append(name)
    for n, (rate, names) in enumerate(by_rate.items()):
        ax.axhline(rate / 1000, color=f"C{n + 2}", ls=":", lw=1)
        ax.text(sec[-1], rate / 1000, f"{', '.join(names)} {rate // 1000}k",
                fontsize=7, va="bottom", ha="right", color=f"C{n + 2}")  # fmt: skip
    ax.text(0.01, 0.02, "dotted: the peers' highest rate without loss at 1 CPU / 1 GiB "
            "(published by VictoriaMetrics, their machine)", transform=ax.transAxes,
            fontsize=7)  # fmt: skip
    ax.set_ylabel("thousand lines/s")
    ax.set_title(
        f"podhose at 1 CPU / 1 GiB, kubelet-style ramp: kept up to "
        f"{totals['highest_kept_up_lines_per_s'] // 1000}k lines/s, lost "
        f"{totals['lost']}, peak RSS {totals['peak_rss_mb']} MB"
    )
    ax.legend(fontsize=8, loc="upper left")
    lag_ax.plot(sec, series["lag_max"], color="C3", lw=1, label="max lag of lines generated that s")
    lag_ax.set_ylabel("lag s")
    lag_ax.set_xlabel("seconds into the ramp")
    rss = lag_ax.twinx()
    rss.plot(*zip(*series["rss_mb"], strict=True), color="C4", lw=1, label="forwarder RSS MB")
    rss.set_ylabel("RSS MB")
    lines = lag_ax.get_legend_handles_labels()
    more = rss.get_legend_handles_labels()
    lag_ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    plotting.save(fig, path)


def main() -> None:
    """Parse arguments; run the ramp, or be the endpoint process (--serve)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="50000,100000,150000,200000,250000,300000",
                        help="lines/s of each step, all pods together")  # fmt: skip
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--writers", type=int, default=2, help="generator processes")
    parser.add_argument("--tick", type=float, default=0.02, help="seconds between batches")
    parser.add_argument("--monitor-interval", type=float, default=10.0,
                        help="kubelet's containerLogMonitorInterval")  # fmt: skip
    parser.add_argument("--gzip-level", type=int, default=1)
    parser.add_argument(
        "--max-lag",
        type=float,
        default=5.0,
        help="a step is kept up with when 99 %% of its lines arrive this fast",
    )
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--forwarder-args", default="", help="extra forwarder options")
    parser.add_argument(
        "--profile",
        default="",
        help="py-spy profile of the forwarder: SVG flame graph, or collapsed stacks (.txt)",
    )
    parser.add_argument("--tmp", default=None, help="folder for the node's files")
    parser.add_argument("--out", type=Path, default=RESULTS / "kubelet-load.csv")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sink", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.sink)
        return
    try:
        raw = run(args)
    except CgroupError as error:
        print(f"bench.kubelet_load: {error}", file=sys.stderr)
        sys.exit(2)
    rows, totals, series = summarise(raw, args.max_lag)
    print(table(rows))
    print()
    for key, value in totals.items():
        print(f"{key}: {value}")
    peers = ", ".join(f"{name} ~{rate // 1000}k" for name, rate in PEERS.items())
    print(f"peers (published, their machine, 1 CPU / 1 GiB): {peers} logs/s; "
          f"RSS {PEERS_RSS_MB[0]}-{PEERS_RSS_MB[1]} MB")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    summary = args.out.with_suffix(".json")
    doc = {"command": " ".join(["python -m bench.kubelet_load", *sys.argv[1:]]),
           "totals": totals, "steps": [asdict(r) for r in rows]}  # fmt: skip
    summary.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written to {args.out} and {summary}")
    if args.plot:
        plot(series, rows, totals, args.plot)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
