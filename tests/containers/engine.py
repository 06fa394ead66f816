"""A Docker engine for the container tests: the one already running, or one started here.

`make container-test` needs a Docker engine and nothing else from the machine. When none
answers, Debian's ``docker.io`` is installed (if ``dockerd`` is missing) and ``dockerd`` is
started in the background with the storage and network settings that work without a kernel
overlay module or bridge networking:

    dockerd --storage-driver=vfs --bridge=none --iptables=false --ip6tables=false

Its data root is ``~/.cache/podhose/dockerd`` (under ``$XDG_CACHE_HOME`` when set), so the
locally built base images survive between runs; its socket, pid file and runtime state live in a
temporary directory that is removed when the engine started here is stopped. No network is
ever created: containers run with ``--network none`` or ``--network host``.

Example::

    with DockerEngine.acquire() as engine:
        engine.docker("version")
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

#: dockerd flags for a machine without overlayfs, bridge networking or iptables rules.
DOCKERD_FLAGS = (
    "--storage-driver=vfs",
    "--bridge=none",
    "--iptables=false",
    "--ip6tables=false",
)
#: How long dockerd may take to answer after it starts, and to exit after SIGTERM.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def cache_dir() -> Path:
    """Where the container tests keep what survives between runs: the user cache directory.

    Not a PODHOSE_* variable: the forwarder reads those and warns about unknown ones.
    """
    path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "podhose"
    path.mkdir(parents=True, exist_ok=True)
    return path


#: One apt-get at a time: the arm64 image is built in a thread beside the amd64 tests, and
#: apt-get fails at once when another holds the dpkg lock.
_APT_LOCK = threading.Lock()


def apt_install(*packages: str) -> None:
    """Install Debian packages (``apt-get update`` first only if the plain install fails)."""
    with _APT_LOCK:
        _apt_install(packages)


def _apt_install(packages: tuple[str, ...]) -> None:
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command, check=False, env=env, capture_output=True).returncode == 0:
        return
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
    subprocess.run(command, env=env, check=True, capture_output=True)


def ensure_command(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` when it is missing."""
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if found is None:
        with _APT_LOCK:  # the other thread may have installed it meanwhile
            found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
            if found is None:
                _apt_install((package,))
        found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError(f"{command} not found after installing {package}")
    return found


BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
#: Debian's qemu-user-static registration for aarch64 (flag F: the interpreter is opened
#: when registered, so chroots and containers use it without a copy inside).
QEMU_AARCH64_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")


def ensure_arm64_emulation() -> str:
    """Make arm64 programs run here (debootstrap's second stage, ``docker run --platform
    linux/arm64``): Debian's qemu-user-static, registered with the kernel's binfmt_misc.

    Returns how (for the test summary); raises RuntimeError saying what is missing when the
    kernel refuses (no binfmt_misc, or not root).
    """
    if platform.machine() in ("aarch64", "arm64"):
        return "native arm64"
    ensure_command("qemu-aarch64-static", "qemu-user-static")
    if not (BINFMT_DIR / "register").exists():
        subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
            check=False,
            capture_output=True,
        )
    entry = BINFMT_DIR / "qemu-aarch64"
    if not entry.exists():
        try:
            (BINFMT_DIR / "register").write_bytes(QEMU_AARCH64_CONF.read_bytes().strip())
        except OSError as exc:
            raise RuntimeError(f"cannot register qemu-aarch64 with binfmt_misc: {exc}") from None
    if "enabled" not in entry.read_text():
        raise RuntimeError(f"{entry} is registered but disabled")
    return "qemu-user-static through binfmt_misc"


def _unmount_under(root: Path) -> None:
    """Lazily unmount whatever is still mounted below ``root`` (deepest first)."""
    prefix = str(root) + "/"
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


@dataclass
class DockerEngine:
    """A reachable Docker engine; ``started`` when this process started it (and will stop it)."""

    env: dict[str, str]
    started: subprocess.Popen[bytes] | None = None
    runtime_dir: Path | None = None
    log_path: Path | None = None
    client: str = field(default_factory=lambda: ensure_command("docker", "docker.io"))

    # --- finding or starting -------------------------------------------------------------

    @classmethod
    def acquire(cls) -> DockerEngine:
        """The engine at ``DOCKER_HOST`` or the default socket if it answers, else a new one."""
        existing = cls(env=dict(os.environ))
        if existing.answers():
            return existing
        return cls.start_dockerd()

    @classmethod
    def start_dockerd(cls) -> DockerEngine:
        dockerd = ensure_command("dockerd", "docker.io")
        runtime_dir = Path(tempfile.mkdtemp(prefix="podhose-dockerd-"))
        socket = runtime_dir / "docker.sock"
        log_path = runtime_dir / "dockerd.log"
        command = [
            dockerd,
            *DOCKERD_FLAGS,
            f"--data-root={cache_dir() / 'dockerd'}",
            f"--exec-root={runtime_dir / 'exec'}",
            f"--pidfile={runtime_dir / 'dockerd.pid'}",
            f"--host=unix://{socket}",
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        env = {**os.environ, "DOCKER_HOST": f"unix://{socket}"}
        engine = cls(env=env, started=proc, runtime_dir=runtime_dir, log_path=log_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not engine.answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                engine.stop()
                raise RuntimeError(f"dockerd did not come up:\n{tail}")
            time.sleep(0.5)
        return engine

    def answers(self) -> bool:
        try:
            result = self.docker("version", "--format", "{{.Server.Version}}", timeout=15)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            return False
        return bool(result.stdout.strip())

    def stop(self) -> None:
        """Stop dockerd if it was started here (it stops its containers first)."""
        proc, self.started = self.started, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.runtime_dir is not None:
            _unmount_under(self.runtime_dir)  # dockerd leaves its netns/default mounted
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- using ---------------------------------------------------------------------------

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = 900,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker client against this engine; stdout and stderr captured as text."""
        return subprocess.run(
            [self.client, *args],
            env=self.env,
            check=check,
            timeout=timeout,
            capture_output=True,
            text=input is None,
            input=input,
        )

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float = 900,
        cwd: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run any command with this engine's DOCKER_HOST (make image, sam local invoke)."""
        return subprocess.run(
            list(args),
            check=False,
            env={**self.env, **(extra_env or {})},
            cwd=cwd,
            timeout=timeout,
            capture_output=True,
            text=True,
        )

    def image_id(self, tag: str) -> str | None:
        result = self.docker("image", "inspect", "--format", "{{.Id}}", tag, check=False)
        return result.stdout.strip() or None if result.returncode == 0 else None
