"""Forwarder memory: RSS in steady state, on a backlog, over many files and under pod churn.

    python -m bench.memory --plot bench/results/memory.png         (make bench; ~75 minutes)
    python -m bench.memory --minutes 5 --scenarios churn           (one scenario, short churn)
    python -m bench.memory --quick                                 (every scenario, ~6 minutes)
    python -m bench.memory --python /path/to/python3.13 --image-env  (the image's Python)
    python -m bench.memory --image podhose-forwarder:dev           (the image itself, in Docker)

Every scenario runs the real forwarder (`python -m forwarder`, its default intervals, under
`--python`) as a subprocess against the local Firehose endpoint in a process of its own
(counting the lines it receives), once per setting (SETTINGS below), and samples the
forwarder's RSS (VmRSS of /proc/PID/status) over time; the peak is its VmHWM. Every line
written must be delivered (the endpoint's line count; the run fails otherwise). With --image
the forwarder is the image's own entrypoint in a container (`docker run --network host`, the
node's folder mounted at its own path), measured from the host by the container's PID.

- steady: STEADY_FILES containers logging STEADY_LINES_PER_S lines a second each;
  the figure is the median RSS over the second half of the run.
- backlog: --backlog-mb MB of lines already in one file, read as fast as the endpoint
  takes them: peak RSS.
- files-10/100/1000: the same backlog spread over 10, 100 and 1,000 files: peak RSS.
- churn: testkit/churn.py's pod churn (5 new pods a second, each logging 3 lines a second,
  deleted after 15 s; Docker and CRI) for --minutes: drift = median RSS of the last minute
  minus that of the first minute after WARM_UP_S, and the least-squares slope after it.

Writes <out>.csv (scenario, setting, python, elapsed_s, rss_mb), <out>.json (the summary)
and <out>.md (the table), and with --plot a PNG of RSS over time beside the published
figures of other forwarders (labelled as such: not measured here).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import plotting
from bench.forwarder import start_endpoint, stats
from devstack.forwarder_process import forwarder_command
from devstack.node_layout import CONTAINERS_DIR
from testkit import shapes
from testkit.churn import Churn, peak_rss_mb, rss_mb, slope_per_min
from testkit.forwarder import Node

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
MB = 1_000_000

# ----- the two settings every scenario runs with
# Tuned: the forwarder's defaults. Untuned: its memory levers switched off.
TUNED_ARGS: tuple[str, ...] = ()
TUNED_ENV: dict[str, str] = {}
UNTUNED_ARGS: tuple[str, ...] = (
    "--malloc-trim-interval", "0",  # no periodic malloc_trim
    "--max-raw-bytes", "33554432",  # raw bytes held before compression: 32 MiB
)  # fmt: skip
# botocore's full data (endpoints of every AWS service) instead of the Firehose-only copy
# (forwarder/botocore_data.py): ~8 MB more.
UNTUNED_ENV: dict[str, str] = {"PODHOSE_FULL_BOTOCORE_DATA": "true"}
# With --image-env: how the image runs the forwarder, added to the tuned setting. The image's
# AWS_DATA_PATH names the Firehose-only copy generated at build; from source (AWS_DATA_PATH is
# unset here) the forwarder uses the same copy generated into ~/.cache/podhose, for the
# botocore of --python (`botocore_data()` below checks which copy each setting gets).
IMAGE_ENV: dict[str, str] = {"PYTHONOPTIMIZE": "2"}
IMAGE_PYTHON = "/opt/podhose/bin/python3"  # forwarder/Dockerfile's venv
# The forwarder's credentials and region, from source and in the image: the local endpoint
# takes any.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
SETTINGS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "untuned": (UNTUNED_ARGS, UNTUNED_ENV),
    "tuned": (TUNED_ARGS, TUNED_ENV),
}

# ----- published figures of other forwarders (theirs, not measured here), MB
FLUENT_BIT_IDLE = (19.0, 27.0)
PUBLISHED_UNDER_LOAD = (
    ("Grafana Alloy under load", 88.0),
    ("Vector under load", 122.0),
    ("OpenTelemetry Collector under load", 178.0),
)
FLUENT_BIT_OOM = 400.0  # OOM-killed at this limit in the same benchmark
# The memory issue's goals (Python 3.13, the image's): MB, and MB of drift for churn.
GOALS = {"steady": 45.0, "backlog": 60.0, "files-1000": 70.0, "churn_drift": 2.0}

STEADY_FILES = 10
STEADY_LINES_PER_S = 10.0
WARM_UP_S = 60.0  # churn: start-up and the first pods' lifetime, not counted in the drift
DRIFT_WINDOW_S = 60.0
DELIVERY_TIMEOUT_S = 300.0
FILE_COUNTS = (10, 100, 1000)
SCENARIOS = ("steady", "backlog", "files", "churn")


@dataclass
class Run:
    """One scenario under one setting: its RSS over time and its figures."""

    scenario: str
    setting: str
    python: str
    lines_written: int = 0
    lines_delivered: int = 0
    seconds: float = 0.0
    steady_mb: float | None = None  # median RSS over the second half (steady)
    peak_mb: float = 0.0  # VmHWM (or the highest sample, if higher)
    botocore_data: str = ""  # the botocore data directory this setting's forwarder uses
    drift_mb: float | None = None  # churn: last minute's median - the first minute's
    slope_mb_per_min: float | None = None  # churn: least squares after the warm-up
    samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every line written was delivered."""
        return self.lines_delivered == self.lines_written


@dataclass
class Options:
    """What every run shares: interpreter, its version, levers it knows, sampling."""

    python: str
    version: str
    image_env: bool
    known_flags: set[str]
    image: str = ""  # a Docker image to run the forwarder from, instead of `python`
    missing: list[str] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)  # setting: its botocore data

    def setting(self, name: str) -> tuple[list[str], dict[str, str]]:
        """(args, env) of a setting, without the flags this forwarder does not have yet."""
        args, env = SETTINGS[name]
        kept: list[str] = []
        for flag, value in zip(args[::2], args[1::2], strict=True):
            if flag in self.known_flags:
                kept += [flag, value]
            elif flag not in self.missing:
                self.missing.append(flag)
        extra = IMAGE_ENV if self.image_env and name == "tuned" else {}
        return kept, {**env, **extra}


def forwarder_env(extra: dict[str, str]) -> dict[str, str]:
    """The forwarder's environment: the repository on the path, dummy credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PODHOSE_", "MALLOC_"))}
    env.pop("PYTHONOPTIMIZE", None)
    env.pop("AWS_DATA_PATH", None)  # the forwarder's own choice: the cache directory
    return {**env, **CREDENTIALS, "PYTHONPATH": str(REPO), **extra}


def probe(python: str, extra: dict[str, str], image: str = "") -> tuple[str, set[str]]:
    """(the interpreter's version, the forwarder's flags under it). Run with `extra` (the
    image's PYTHONOPTIMIZE) so that the byte code a measured run loads is already cached."""
    env = forwarder_env(extra)
    version_code = "import platform; print(platform.python_version())"
    version = subprocess.run(python_command(python, image, ["-c", version_code]),
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    help_text = subprocess.run(python_command(python, image, ["-m", "forwarder", "--help"]),
                               cwd=REPO, env=env, capture_output=True, text=True,
                               check=True).stdout  # fmt: skip
    flags = {word.strip("[],") for word in help_text.split() if word.startswith(("--", "[--"))}
    return version, flags


def python_command(
    python: str, image: str, python_args: list[str], env: dict[str, str] | None = None
) -> list[str]:
    """`python` with `python_args`; with an `image`, its Python in `docker run` without
    network, given `env` (from source, the caller's environment carries it)."""
    if not image:
        return [python, *python_args]
    return ["docker", "run", "--rm", "--network", "none", *docker_env(env or {}),
            "--entrypoint", IMAGE_PYTHON, image, *python_args]  # fmt: skip


def docker_env(env: dict[str, str]) -> list[str]:
    """`docker run`'s `-e NAME=VALUE` options for `env`."""
    return [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]


# None from data_path leaves botocore's choice: AWS_DATA_PATH as set (the image's), else its
# own data; its own directory named is the full data too.
BOTOCORE_PROBE = """
import logging, os, sys
from botocore.loaders import Loader
from forwarder import botocore_data
from forwarder.config import parse_config
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
cfg = parse_config(sys.argv[1:] + ["--delivery-stream", "bench"])
path = botocore_data.data_path(cfg.full_botocore_data, regions=(cfg.region,))
path = path or os.environ.get("AWS_DATA_PATH") or "full"
print("full" if path == Loader.BUILTIN_DATA_PATH else path)
"""


def botocore_data(opts: Options, setting: str) -> str:
    """The botocore data directory the forwarder of `setting` uses, as its sender asks for it
    (botocore_data.data_path; this generates the cache directory when it is missing, so no
    measured run does): a directory, or "full" for botocore's own data. A tuned setting that
    gets the full data, or an untuned one that does not, stops the benchmark."""
    args, env = opts.setting(setting)
    cmd = python_command(opts.python, opts.image, ["-c", BOTOCORE_PROBE, *args], env)
    out = subprocess.run(cmd, cwd=REPO, check=True, env=forwarder_env(env), capture_output=True,
                         text=True)  # fmt: skip
    path = out.stdout.strip().splitlines()[-1]
    full = env.get("PODHOSE_FULL_BOTOCORE_DATA") == "true"
    if (path == "full") != full:
        sys.exit(f"{setting}: botocore data {path!r}, expected {'full' if full else 'a copy'}:\n"
                 + out.stderr)  # fmt: skip
    return path


class Sampler(threading.Thread):
    """RSS of a process every `every` seconds, from its start."""

    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.halt.is_set():
            rss = rss_mb(self.pid)
            if rss is not None:
                self.samples.append((round(time.monotonic() - self.t0, 2), rss))
            self.halt.wait(self.every)


def measure(
    opts: Options,
    scenario: str,
    setting: str,
    root: Path,
    drive: Callable[[], int],
    *,
    every: float,
) -> Run:
    """Start the endpoint and the forwarder on `root`'s node, run `drive` (which writes and
    returns the lines written), wait for every line, and return the figures."""
    args, env = opts.setting(setting)
    endpoint, url = start_endpoint()
    db = root / "state" / f"offsets-{scenario}-{setting}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    glob = str(root / "node" / CONTAINERS_DIR / "*.log")
    cmd = forwarder_command(
        glob, "bench", url, db, "--http-port", "0", "--log-level", "WARNING", *args,
        python=opts.python,
    )  # fmt: skip
    run = Run(scenario, setting, opts.version, botocore_data=opts.data[setting])
    forwarder = Launched(opts.image)
    sampler: Sampler | None = None
    try:
        proc, pid = forwarder.start(cmd, env, root)
        sampler = Sampler(pid, every)
        sampler.start()
        run.lines_written = drive()
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            run.lines_delivered = stats(url)["lines"]
            if run.lines_delivered >= run.lines_written:
                break
            time.sleep(0.2)
        time.sleep(every)  # one more sample once everything is delivered
        run.seconds = round(time.monotonic() - sampler.t0, 1)
        # VmHWM of the forwarder's own process: its peak since exec (ru_maxrss of a child
        # would also count the pages of this, larger, process copied at fork before exec).
        highest = max((v for _, v in sampler.samples), default=0.0)
        run.peak_mb = round(max(peak_rss_mb(pid) or 0.0, highest), 1)
        run.lines_delivered = stats(url)["lines"]
    finally:
        if sampler is not None:
            sampler.halt.set()
            sampler.join()
        forwarder.stop()
        endpoint.kill()
        endpoint.wait()
    run.samples = sampler.samples
    return run


class Launched:
    """The forwarder of one run: from source (`image` empty) or in a container of `image`;
    `start` it, then `stop` it whatever happened (a container outlives its `docker run`)."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.name = f"podhose-bench-{os.getpid()}-{time.monotonic_ns()}" if image else ""
        self.proc: subprocess.Popen | None = None

    def start(
        self, cmd: list[str], env: dict[str, str], root: Path
    ) -> tuple[subprocess.Popen, int]:
        """Start `cmd` (forwarder_command's: `python -m forwarder ARGS`) with `env`: (the
        process to wait for, the forwarder's PID to measure). With an image, ARGS go to its
        entrypoint in a container on the host's network with `root` mounted at its own path;
        its PID must be a forwarder in this PID namespace (not so under a remote engine)."""
        if not self.image:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=forwarder_env(env))
            return self.proc, self.proc.pid
        self.proc = subprocess.Popen(["docker", "run", "--rm", "--name", self.name, "--network",
                                      "host", "-v", f"{root}:{root}",
                                      *docker_env({**CREDENTIALS, **env}), self.image,
                                      *cmd[3:]])  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            inspect = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", self.name],
                                     check=False, capture_output=True, text=True)  # fmt: skip
            pid = inspect.stdout.strip() if inspect.returncode == 0 else ""
            if pid not in ("", "0"):
                return self.proc, self._forwarder(int(pid))
            time.sleep(0.1)
        raise RuntimeError(f"{self.image}: the forwarder's container did not start within 60 s")

    def _forwarder(self, pid: int) -> int:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            cmdline = []
        if b"forwarder" not in cmdline:
            raise RuntimeError(f"PID {pid} of container {self.name} is not its forwarder "
                               "here (a remote engine, or another PID namespace)")  # fmt: skip
        return pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s; a container is removed in any case."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # docker run passes it on to the container
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.name:
            subprocess.run(["docker", "rm", "--force", self.name], check=False,
                           capture_output=True)  # fmt: skip


# ----- workloads


def line_pool(count: int = 20_000, seed: int = 11) -> list[str]:
    """Application log lines of Fluent Bit's throughput backlog shape (testkit/shapes.py)."""
    return shapes.fluentbit_backlog(random.Random(seed), count)


def write_backlog(node: Node, total: int, files: int) -> int:
    """`total` bytes of lines over `files` containers (Docker and CRI in turn); lines."""
    pool = line_pool()
    per_file = total // files
    lines = 0
    nanos = shapes.START_NANOS
    for n in range(files):
        runtime = "docker" if n % 2 == 0 else "cri"
        c = node.add(f"backlog-{n:04d}", runtime=runtime)
        size = 0
        with open(c.target, "wb", buffering=1024 * 1024) as f:
            while size < per_file:
                nanos += 7_000
                line = shapes.wrap(pool[lines % len(pool)], runtime, nanos)
                f.write(line)
                size += len(line)
                lines += 1
    return lines


def run_backlog(opts: Options, setting: str, scenario: str, total: int, files: int) -> Run:
    """The backlog written before the forwarder starts; read as fast as it can."""
    with tempfile.TemporaryDirectory(prefix="podhose-mem-") as tmp:
        node = Node(Path(tmp) / "node")
        lines = write_backlog(node, total, files)
        return measure(opts, scenario, setting, Path(tmp), lambda: lines, every=0.25)


def run_steady(opts: Options, setting: str, seconds: float) -> Run:
    """A few containers logging at a steady rate for `seconds`."""
    with tempfile.TemporaryDirectory(prefix="podhose-mem-") as tmp:
        node = Node(Path(tmp) / "node")
        churn = Churn(node, pods_per_s=1.0, lines_per_s=STEADY_LINES_PER_S, lifetime_s=1e9,
                      line_bytes=250)  # fmt: skip

        def drive() -> int:
            churn.add(STEADY_FILES)
            end = time.monotonic() + seconds
            try:
                while time.monotonic() < end:
                    churn.step(create=False)
                    time.sleep(0.05)
            finally:
                churn.close()
            return churn.written

        run = measure(opts, "steady", setting, Path(tmp), drive, every=1.0)
    half = [v for t, v in run.samples if t >= seconds / 2]
    run.steady_mb = round(statistics.median(half), 1) if half else None
    return run


def run_churn(opts: Options, setting: str, minutes: float) -> Run:
    """Pod churn for `minutes`, then the last pods live out their time."""
    with tempfile.TemporaryDirectory(prefix="podhose-mem-") as tmp:
        node = Node(Path(tmp) / "node")
        churn = Churn(node)

        def drive() -> int:
            try:
                churn.run(minutes * 60)
                churn.finish()
            finally:
                churn.close()
            return churn.written

        run = measure(opts, "churn", setting, Path(tmp), drive, every=2.0)
    end = minutes * 60
    after = [(t, v) for t, v in run.samples if WARM_UP_S <= t <= end]
    first = [v for t, v in after if t < WARM_UP_S + DRIFT_WINDOW_S]
    last = [v for t, v in after if t > end - DRIFT_WINDOW_S]
    if first and last and end - DRIFT_WINDOW_S > WARM_UP_S:
        run.drift_mb = round(statistics.median(last) - statistics.median(first), 2)
        run.slope_mb_per_min = round(slope_per_min(after), 3)
    return run


# ----- output


def table(runs: list[Run]) -> str:
    """The summary as a markdown table."""
    head = ("| scenario | setting | Python | lines delivered | steady MB | peak MB | "
            "churn drift MB | churn slope MB/min |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    rows = [head]
    for r in runs:
        ok = f"{r.lines_delivered:,} / {r.lines_written:,}" + ("" if r.ok else " **LOST**")

        def cell(value: float | None) -> str:
            return "" if value is None else f"{value:g}"

        figures = (cell(r.steady_mb), f"{r.peak_mb:g}", cell(r.drift_mb),
                   cell(r.slope_mb_per_min))  # fmt: skip
        rows.append(
            f"| {r.scenario} | {r.setting} | {r.python} | {ok} | " + " | ".join(figures) + " |"
        )
    return "\n".join(rows)


def write_csv(runs: list[Run], path: Path) -> None:
    """RSS over time, one row per sample."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(("scenario", "setting", "python", "elapsed_s", "rss_mb"))
        for r in runs:
            for t, v in r.samples:
                out.writerow((r.scenario, r.setting, r.python, f"{t:.2f}", f"{v:.1f}"))


def plot(runs: list[Run], path: Path, title: str) -> None:
    """RSS over time per scenario and setting, beside the published figures of others."""
    plt = plotting.pyplot()
    panels = (("steady", "steady: 10 files logging", 1.0),
              ("backlog", "backlog read (1 file; 10/100/1,000 files)", 1.0),
              ("churn", "pod churn (5 new pods/s, deleted after 15 s)", 60.0))  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), sharey=True)
    styles = {"tuned": "-", "untuned": "--"}
    for ax, (kind, label, scale) in zip(axes, panels, strict=True):
        for r in runs:
            if (r.scenario == kind) or (kind == "backlog" and r.scenario.startswith("files-")):
                t = [s / scale for s, _ in r.samples]
                ax.plot(t, [v for _, v in r.samples], styles.get(r.setting, "-"),
                        linewidth=1.0, label=f"{r.scenario}, {r.setting}")  # fmt: skip
        ax.legend(fontsize=7, loc="center right")
        ax.axhspan(*FLUENT_BIT_IDLE, color="grey", alpha=0.2)
        notes = [(FLUENT_BIT_IDLE[1], "Fluent Bit idle, 19-27 MB")]
        for name, value in PUBLISHED_UNDER_LOAD:
            ax.axhline(value, color="grey", linestyle=":", linewidth=1.2)
            notes.append((value, f"{name}, {value:g} MB"))
        for value, note in notes:
            ax.annotate(f"{note} (published, not measured here)", (0.01, value),
                        xycoords=("axes fraction", "data"), xytext=(0, 2),
                        textcoords="offset points", fontsize=6.5, color="dimgrey")  # fmt: skip
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("minutes" if scale == 60 else "seconds")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("forwarder RSS (MB, MiB)")
    axes[0].set_ylim(0, 200)
    fig.suptitle(f"{title}  —  Fluent Bit under the same published load: OOM-killed at "
                 f"{FLUENT_BIT_OOM:g} MB (off the scale)", fontsize=10)  # fmt: skip
    plotting.save(fig, path)


def run_scenario(opts: Options, args: argparse.Namespace, scenario: str, setting: str) -> list[Run]:
    """One scenario under one setting (the files scenario: once per file count)."""
    total = int(args.backlog_mb * MB)
    if scenario == "steady":
        return [run_steady(opts, setting, args.steady_seconds)]
    if scenario == "backlog":
        return [run_backlog(opts, setting, "backlog", total, 1)]
    if scenario == "files":
        return [
            run_backlog(opts, setting, f"files-{n}", total, n)
            for n in map(int, args.files.split(","))
        ]
    return [run_churn(opts, setting, args.minutes)]


def main() -> int:
    """Run the chosen scenarios under both settings; print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of pod churn")
    parser.add_argument("--steady-seconds", type=float, default=300.0)
    parser.add_argument("--backlog-mb", type=float, default=100.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, of {', '.join(SCENARIOS)}")  # fmt: skip
    parser.add_argument("--settings", default=",".join(SETTINGS), help="untuned,tuned")
    parser.add_argument("--files", default=",".join(map(str, FILE_COUNTS)),
                        help="file counts of the files scenario")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="2 min churn, 60 s steady, 20 MB backlogs, 10, 100 files")  # fmt: skip
    parser.add_argument("--python", default=sys.executable, help="the forwarder's interpreter")
    parser.add_argument("--image-env", action="store_true",
                        help=f"the tuned setting as the image runs it: {IMAGE_ENV}")  # fmt: skip
    parser.add_argument("--image", default="",
                        help="run the forwarder from this Docker image (make image) in a "
                             "container; needs a Docker engine and root")  # fmt: skip
    parser.add_argument("--out", default=str(RESULTS / "memory"), help="path prefix of outputs")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of RSS over time")
    parser.add_argument("--merge", nargs="+", metavar="PREFIX", default=None,
                        help="run nothing: combine the outputs of earlier runs (their --out "
                             "prefixes, e.g. scenarios run in parallel) into --out")  # fmt: skip
    args = parser.parse_args()
    if args.merge:
        return merge([Path(prefix) for prefix in args.merge], Path(args.out), args.plot)
    if args.quick:
        args.minutes, args.steady_seconds, args.backlog_mb = 2.0, 60.0, 20.0
        args.files = "10,100"
    if args.image and args.image_env:
        parser.error("--image runs the image's own environment; --image-env is for --python")
    version, flags = probe(args.python, IMAGE_ENV if args.image_env else {}, args.image)
    if args.image:
        version += f" ({args.image})"  # the label of its runs: not the same as from source
    opts = Options(args.python, version, args.image_env, flags, args.image)
    for setting in args.settings.split(","):
        opts.data[setting] = botocore_data(opts, setting)
        print(f"{setting}: botocore data {opts.data[setting]}", flush=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load = os.getloadavg()
    runs: list[Run] = []
    chosen = args.scenarios.split(",")
    if unknown := set(chosen) - set(SCENARIOS):
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}")
    for scenario in chosen:
        for setting in args.settings.split(","):
            done = run_scenario(opts, args, scenario, setting)
            for r in done:
                print(table([r]).splitlines()[-1], flush=True)
            runs += done
    if opts.missing:
        print(f"\nnot in this forwarder yet, left out of the untuned setting: "
              f"{', '.join(opts.missing)}", flush=True)  # fmt: skip
    command = " ".join(["python -m bench.memory", *sys.argv[1:]])
    summary = {
        "commands": [command], "python": version, "image_env": args.image_env,
        "image": args.image,
        "settings": {name: {"args": list(a), "env": e} for name, (a, e) in SETTINGS.items()},
        "image_env_vars": IMAGE_ENV if args.image_env else {},
        "levers_missing": opts.missing, "goals": GOALS, "started": started,
        "load_before": load, "load_after": os.getloadavg(),
    }  # fmt: skip
    return write_outputs(runs, summary, Path(args.out), args.plot)


def write_outputs(runs: list[Run], summary: dict, out: Path, plot_path: Path | None) -> int:
    """Print the table; write <out>.csv, .json, .md and the plot; 0 when no line was lost."""
    text = table(runs)
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(runs, out.with_suffix(".csv"))
    summary["runs"] = [{k: v for k, v in asdict(r).items() if k != "samples"} for r in runs]
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    commands = "\n".join(f"`{c}`" for c in summary["commands"])
    out.with_suffix(".md").write_text(f"{commands} (Python {summary['python']})\n\n{text}\n")
    if plot_path:
        plot(runs, plot_path, f"podhose forwarder RSS, Python {summary['python']}")
        print(f"plot written to {plot_path}")
    print(f"wrote {out.with_suffix('.csv')}, .json, .md")
    return 0 if all(r.ok for r in runs) else 1


def merge(prefixes: list[Path], out: Path, plot_path: Path | None) -> int:
    """Combine the outputs of earlier runs (their .json and .csv) into `out`."""
    runs: list[Run] = []
    summary: dict = {"commands": [], "parts": []}
    for prefix in prefixes:
        part = json.loads(prefix.with_suffix(".json").read_text())
        samples: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        with open(prefix.with_suffix(".csv"), newline="") as f:
            for row in csv.DictReader(f):
                key = (row["scenario"], row["setting"], row["python"])
                samples.setdefault(key, []).append((float(row["elapsed_s"]), float(row["rss_mb"])))
        for fields in part.pop("runs"):
            run = Run(**fields)
            run.samples = samples.get((run.scenario, run.setting, run.python), [])
            runs.append(run)
        summary["commands"] += part.get("commands", [part.get("command", "")])
        summary["parts"].append(part)
        summary.setdefault("python", part["python"])
        summary.setdefault("goals", part["goals"])
    return write_outputs(runs, summary, out, plot_path)


def _stop(signum: int, frame: object) -> None:
    """SIGTERM: leave through the finally blocks (the forwarder and endpoint are stopped)."""
    del frame
    sys.exit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            sys.exit(main())
        except RuntimeError as exc:  # a forwarder that cannot be measured: one line
            sys.exit(f"bench.memory: {exc}")
