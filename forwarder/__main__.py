"""Entry point: settings, logging, signals, the HTTP server, then the main loop."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from forwarder import logs
from forwarder.config import parse_config, resolve_region, unknown_variables
from forwarder.health import serve
from forwarder.mainloop import Forwarder
from forwarder.memory import tune_malloc

log = logging.getLogger("forwarder")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (`podhose-forwarder`)."""
    tune_malloc()
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
        serve(fwd.health, cfg.http_host, cfg.http_port)
    log.info("starting", extra={"stream": cfg.delivery_stream, "paths": cfg.paths})
    return fwd.run()


if __name__ == "__main__":
    sys.exit(main())
