"""Command-line flags, their environment-variable equivalents and defaults (one dataclass)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import botocore.session

from forwarder import limits

LOCAL_ENDPOINT_REGION = "us-east-1"

ENV_PREFIX = "PODHOSE_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class Config:
    """Every setting of the forwarder, after flags, environment and defaults were merged."""

    delivery_stream: str
    paths: list[str] = field(default_factory=lambda: ["/var/log/containers/*.log"])
    excludes: list[str] = field(default_factory=list)
    region: str | None = None
    endpoint_url: str | None = None
    db: str = "/var/lib/podhose/offsets.db"
    exit_on_eof: bool = False
    scan_interval: float = 1.0
    flush_interval: float = 1.0
    max_line_bytes: int = 512 * 1024
    max_record_bytes: int = 1024 * 1024
    compression: str = "gzip"
    gzip_level: int = 1
    one_line_per_record: bool = False
    max_buffer_bytes: int = 32 * 1024 * 1024
    shutdown_timeout: float = 20.0
    http_host: str = "0.0.0.0"
    http_port: int = 2020
    log_level: str = "INFO"
    include_self: bool = False
    pod_name: str | None = None
    pod_namespace: str | None = None
    send_concurrency: int = 2

    @property
    def self_prefix(self) -> str | None:
        """Basename prefix of this forwarder's own container log files, if known."""
        if self.include_self or not self.pod_name or not self.pod_namespace:
            return None
        return f"{self.pod_name}_{self.pod_namespace}_"

    @property
    def read_size(self) -> int:
        """Bytes per read: one more than the line limit, so a chunk without '\\n' is oversize."""
        return self.max_line_bytes + 1


def _bool(text: str) -> bool:
    return text.strip().lower() in TRUE_WORDS


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


# (flag, dest, env suffix, converter for env text, default, help, argparse extras)
_OPTIONS: list[tuple[str, str, str, Callable[[str], Any], Any, str, dict[str, Any]]] = [
    (
        "--path",
        "paths",
        "PATH",
        _list,
        ["/var/log/containers/*.log"],
        "glob of log files to tail (repeatable; env comma-separated)",
        {"action": "append"},
    ),
    (
        "--exclude",
        "excludes",
        "EXCLUDE",
        _list,
        [],
        "glob of paths to skip (repeatable; env comma-separated)",
        {"action": "append"},
    ),
    (
        "--delivery-stream",
        "delivery_stream",
        "DELIVERY_STREAM",
        str,
        None,
        "Firehose delivery stream name (required)",
        {},
    ),
    (
        "--region",
        "region",
        "REGION",
        str,
        None,
        "AWS region (else boto3's default chain, e.g. AWS_REGION)",
        {},
    ),
    (
        "--endpoint-url",
        "endpoint_url",
        "ENDPOINT_URL",
        str,
        None,
        "Firehose endpoint URL override",
        {},
    ),
    ("--db", "db", "DB", str, "/var/lib/podhose/offsets.db", "SQLite offsets database", {}),
    (
        "--exit-on-eof",
        "exit_on_eof",
        "EXIT_ON_EOF",
        _bool,
        False,
        "read every matched file to its end, deliver everything, save offsets, exit 0",
        {"action": "store_const", "const": True},
    ),
    (
        "--scan-interval",
        "scan_interval",
        "SCAN_INTERVAL",
        float,
        1.0,
        "seconds between glob re-scans",
        {"type": _non_negative_float},
    ),
    (
        "--flush-interval",
        "flush_interval",
        "FLUSH_INTERVAL",
        float,
        1.0,
        "max seconds a line waits before its record is sent",
        {"type": _non_negative_float},
    ),
    (
        "--max-line-bytes",
        "max_line_bytes",
        "MAX_LINE_BYTES",
        int,
        512 * 1024,
        "longest logical line; longer ones are shipped in pieces",
        {"type": _positive_int},
    ),
    (
        "--max-record-bytes",
        "max_record_bytes",
        "MAX_RECORD_BYTES",
        int,
        1024 * 1024,
        "uncompressed payload bytes per record (record as sent stays <= 1,024,000)",
        {"type": _positive_int},
    ),
    (
        "--compression",
        "compression",
        "COMPRESSION",
        str,
        "gzip",
        "gzip or none",
        {"choices": ["gzip", "none"]},
    ),
    (
        "--gzip-level",
        "gzip_level",
        "GZIP_LEVEL",
        int,
        1,
        "gzip level 1-9",
        {"type": int, "choices": range(1, 10)},
    ),
    (
        "--one-line-per-record",
        "one_line_per_record",
        "ONE_LINE_PER_RECORD",
        _bool,
        False,
        "one raw line per record, no header, no gzip (the seed's shape)",
        {"action": "store_const", "const": True},
    ),
    (
        "--max-buffer-bytes",
        "max_buffer_bytes",
        "MAX_BUFFER_BYTES",
        int,
        32 * 1024 * 1024,
        "stop reading while more than this is read but unacknowledged",
        {"type": _positive_int},
    ),
    (
        "--shutdown-timeout",
        "shutdown_timeout",
        "SHUTDOWN_TIMEOUT",
        float,
        20.0,
        "seconds to flush after SIGTERM/SIGINT",
        {"type": _non_negative_float},
    ),
    ("--http-host", "http_host", "HTTP_HOST", str, "0.0.0.0", "/healthz and /metrics host", {}),
    (
        "--http-port",
        "http_port",
        "HTTP_PORT",
        int,
        2020,
        "/healthz and /metrics port (0 disables)",
        {"type": int},
    ),
    ("--log-level", "log_level", "LOG_LEVEL", str, "INFO", "DEBUG, INFO, WARNING, ERROR", {}),
    (
        "--include-self",
        "include_self",
        "INCLUDE_SELF",
        _bool,
        False,
        "also ship this forwarder's own container logs (POD_NAME/POD_NAMESPACE)",
        {"action": "store_const", "const": True},
    ),
    (
        "--send-concurrency",
        "send_concurrency",
        "SEND_CONCURRENCY",
        int,
        2,
        "PutRecordBatch calls in flight at once",
        {"type": _positive_int},
    ),
]


_METAVARS = {"paths": "GLOB", "excludes": "GLOB", "delivery_stream": "NAME", "endpoint_url": "URL",
             "db": "PATH", "region": "REGION", "log_level": "LEVEL", "http_host": "HOST",
             "http_port": "PORT", "compression": None, "gzip_level": "N"}  # fmt: skip


def _metavar(dest: str) -> str | None:
    if dest in _METAVARS:
        return _METAVARS[dest]
    return "SECONDS" if dest.endswith(("interval", "timeout")) else "N"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every flag defaults to None so the environment can fill it in."""
    parser = argparse.ArgumentParser(
        prog="podhose-forwarder",
        description="Tail Kubernetes container logs and put raw lines to Amazon Data Firehose.",
    )
    for flag, dest, env, _conv, default, help_text, extra in _OPTIONS:
        shown = ",".join(default) if isinstance(default, list) else default
        shown = "none" if shown in (None, "") else shown
        options = dict(extra)
        if options.get("action") != "store_const":
            options.setdefault("metavar", _metavar(dest))
        parser.add_argument(
            flag,
            dest=dest,
            default=None,
            help=f"{help_text} [env {ENV_PREFIX}{env}; default {shown}]",
            **options,
        )
    return parser


def _flatten(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(_list(value))
    return out


def resolve_region(cfg: Config) -> Config:
    """Fill in the region: the flag, else AWS_REGION or boto3's chain (AWS_DEFAULT_REGION,
    ~/.aws/config), else us-east-1 when --endpoint-url points at a local or test endpoint
    (which ignores it).

    Raises SystemExit with a clear message when no region is configured anywhere.
    """
    if cfg.region:
        return cfg
    # AWS_REGION (set on EKS by IRSA) is not in botocore's chain; AWS_DEFAULT_REGION is.
    chain = botocore.session.get_session().get_config_variable("region")
    found = os.environ.get("AWS_REGION") or chain
    if found:
        return dataclasses.replace(cfg, region=str(found))
    if cfg.endpoint_url:
        return dataclasses.replace(cfg, region=LOCAL_ENDPOINT_REGION)
    raise SystemExit(
        "podhose-forwarder: error: no AWS region: set --region, PODHOSE_REGION or AWS_REGION"
    )


def parse_config(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Merge flags (which win), PODHOSE_* environment variables and defaults into a Config."""
    env = dict(os.environ) if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for _flag, dest, suffix, conv, default, _help, _extra in _OPTIONS:
        value = getattr(args, dest)
        if value is None and env.get(ENV_PREFIX + suffix, "").strip():
            try:
                value = conv(env[ENV_PREFIX + suffix])
            except ValueError as exc:
                parser.error(f"{ENV_PREFIX}{suffix}: {exc}")
        if value is None:
            value = default
        if dest in ("paths", "excludes"):
            value = _flatten(value)
        values[dest] = value
    if not values["delivery_stream"]:
        parser.error("--delivery-stream (or PODHOSE_DELIVERY_STREAM) is required")
    if values["compression"] not in ("gzip", "none"):
        parser.error("--compression must be gzip or none")
    if values["max_line_bytes"] > limits.MAX_LINE_LIMIT:
        parser.error(f"--max-line-bytes must be <= {limits.MAX_LINE_LIMIT}")
    if values["max_record_bytes"] < values["max_line_bytes"] + limits.RECORD_OVERHEAD:
        parser.error(
            f"--max-record-bytes must be at least --max-line-bytes + {limits.RECORD_OVERHEAD}"
        )
    values["pod_name"] = env.get("POD_NAME") or None
    values["pod_namespace"] = env.get("POD_NAMESPACE") or None
    return Config(**values)
