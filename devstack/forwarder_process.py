"""The real forwarder as a subprocess: the one command line the demo, the tests and the
benchmarks start it with, and the demo's process handle.

>>> forwarder_command("/n/*.log", "s", "http://e", Path("o.db"), python="py")[:5]
['py', '-m', 'forwarder', '--path', '/n/*.log']
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from devstack.stack_config import LOCAL_CREDENTIALS, REGION, REPO_ROOT

FileKey = tuple[int, int]


def forwarder_command(
    glob: str, stream: str, endpoint_url: str, db: Path, *extra: str, python: str = sys.executable
) -> list[str]:
    """``python -m forwarder`` on `glob`'s files to `stream` at `endpoint_url`, offsets in `db`."""
    return [
        python, "-m", "forwarder", "--path", glob, "--delivery-stream", stream,
        "--endpoint-url", endpoint_url, "--db", str(db), *extra,
    ]  # fmt: skip


def held_files(pid: int) -> set[FileKey]:
    """(dev, inode) of every file a process holds open (/proc/PID/fd); empty once gone."""
    keys = set()
    with contextlib.suppress(OSError):  # the process may be gone
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                st = fd.stat()
                keys.add((st.st_dev, st.st_ino))
    return keys


def local_environment() -> dict[str, str]:
    """The demo forwarder's environment: the local stack's credentials and region, and
    nothing of the Lambda's or the caller's AWS setup."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PODHOSE_", "POWERTOOLS_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID=LOCAL_CREDENTIALS["aws_access_key_id"],
        AWS_SECRET_ACCESS_KEY=LOCAL_CREDENTIALS["aws_secret_access_key"],
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    return env


class ForwarderProcess:
    """The real forwarder as a subprocess, stdout and stderr appended to a log file.

    ``own_session``: a terminal Ctrl-C reaches only the caller (the demo), which then
    SIGTERMs this.
    """

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, *, own_session: bool = False
    ) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def local(
        cls,
        *,
        glob: str,
        stream: str,
        endpoint_url: str,
        db: Path,
        log_path: Path,
        extra_args: list[str] | None = None,
    ) -> ForwarderProcess:
        """The demo's forwarder against the local stack (1 s flush and scan intervals)."""
        db.parent.mkdir(parents=True, exist_ok=True)  # the forwarder does not create it
        args = forwarder_command(
            glob, stream, endpoint_url, db, "--region", REGION, "--flush-interval", "1.0",
            "--scan-interval", "1.0", "--http-host", "127.0.0.1", "--http-port", "0",
            *(extra_args or []),
        )  # fmt: skip
        return cls(args, local_environment(), log_path, own_session=True)

    def start(self) -> ForwarderProcess:
        """Start the process."""
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float = 60) -> int:
        """Wait for exit; return the exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def signal(self, signum: int) -> None:
        """Send a signal."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def terminate(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (the forwarder flushes and exits); SIGKILL after the timeout."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stop(self) -> None:
        """Kill the process if it still runs (cleanup)."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        """Everything the process printed."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log()
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def held(self) -> set[FileKey]:
        """(dev, inode) of every file the process holds open (/proc/PID/fd); empty once gone."""
        return set() if self.proc is None else held_files(self.proc.pid)
