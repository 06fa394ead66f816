"""Entry point: settings, logging, signals, the HTTP server, then the main loop."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from forwarder import logs
from forwarder.config import StartupError, parse_config, resolve_region, unknown_variables
from forwarder.health import serve
from forwarder.mainloop import Forwarder
from forwarder.memory import tune_malloc

log = logging.getLogger("forwarder")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (`podhose-forwarder`): 0 when done, 1 when --exit-on-eof found
    something it could not read, 2 on a setting, file or port that cannot be used."""
    try:
        return run(argv)
    except StartupError as exc:
        print(f"podhose-forwarder: error: {exc}", file=sys.stderr)
        return 2


def run(argv: Sequence[str] | None) -> int:
    """Set up from the settings, then run the main loop."""
    tune_malloc()
    raise_open_files_limit()
    cfg = resolve_region(parse_config(argv))
    logs.setup(cfg.log_level)
    for name in unknown_variables(dict(os.environ)):
        log.warning("unknown setting ignored", extra={"variable": name})
    fwd = Forwarder(cfg)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("signal received, shutting down", extra={"signal": signum})
        fwd.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if cfg.http_port:
        try:
            serve(fwd.health, cfg.http_host, cfg.http_port)
        except OSError as exc:  # in use, no such address, a name that does not resolve
            where = f"--http-host {cfg.http_host} --http-port {cfg.http_port}"
            raise StartupError(f"{where}: cannot serve there: {exc.strerror or exc}") from None
    log.info("starting", extra={"stream": cfg.delivery_stream, "paths": cfg.paths})
    return fwd.run()


def raise_open_files_limit() -> None:
    """Raise the soft limit of open descriptors to the hard one (often 1,024 of 1,048,576 in
    containers): files drained but unacknowledged keep theirs during an outage."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
