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
from typing import IO

from devstack.stack_config import LOCAL_CREDENTIALS, REGION

REPO = Path(__file__).resolve().parent.parent

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


class ForwarderProcess:
    """The real forwarder as a subprocess (``python -m forwarder``), output to a log file."""

    def __init__(
        self,
        *,
        glob: str,
        stream: str,
        endpoint_url: str,
        db: Path,
        log_path: Path,
        extra_args: list[str] | None = None,
    ) -> None:
        db.parent.mkdir(parents=True, exist_ok=True)  # the forwarder does not create it
        self.args = forwarder_command(
            glob,
            stream,
            endpoint_url,
            db,
            "--region",
            REGION,
            "--flush-interval",
            "1.0",
            "--scan-interval",
            "1.0",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            "0",
            *(extra_args or []),
        )
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ForwarderProcess:
        env = {
            k: v
            for k, v in os.environ.items()
            # nothing of the Lambda's or the caller's AWS setup leaks into the forwarder
            if not k.startswith(("AWS_", "PODHOSE_", "POWERTOOLS_"))
        }
        env.update(
            AWS_ACCESS_KEY_ID=LOCAL_CREDENTIALS["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=LOCAL_CREDENTIALS["aws_secret_access_key"],
            AWS_DEFAULT_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONUNBUFFERED="1",
        )
        self._log = self.log_path.open("wb")
        # Own session: a terminal Ctrl-C reaches only the demo, which then SIGTERMs this.
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
