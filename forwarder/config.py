"""Settings: every option declared once (flag, environment variable, parser, default, help).

Flags and `PODHOSE_*` variables go through the same parser, so both accept and refuse the
same values. An invalid value exits with code 2 and a message naming the flag or variable
and the accepted range:

    >>> parse_config(["--delivery-stream", "s", "--gzip-level", "15"], {})
    Traceback (most recent call last):
    SystemExit: 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import botocore.session

from forwarder import limits
from forwarder.routing import Route, Router

LOCAL_ENDPOINT_REGION = "us-east-1"

ENV_PREFIX = "PODHOSE_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
# Firehose's rule for delivery stream names.
STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,64}")
# A glob of namespaces (lower-case DNS labels) with fnmatch's * ? [ ] and !.
NAMESPACE_GLOB = re.compile(r"[a-z0-9*?!\[\]-]+")
# An AWS region name: us-east-1, eu-central-2, us-gov-west-1, cn-northwest-1, ap-southeast-5.
REGION_NAME = re.compile(r"[a-z]{2,4}(-[a-z0-9]+){1,3}-[0-9]{1,2}")


class StartupError(Exception):
    """A setting, or a file or port it names, cannot be used: said in one line, exit 2."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Config:
    """Every setting of the forwarder, after flags, environment and defaults were merged.

    One field per option of OPTIONS below (its `dest`), plus the pod's own name and namespace
    (POD_NAME, POD_NAMESPACE). No defaults here: OPTIONS holds them (`podhose-forwarder --help`),
    and parse_config is the one way to build a Config.
    """

    delivery_stream: str
    routes: list[Route]
    paths: list[str]
    excludes: list[str]
    region: str | None
    endpoint_url: str | None
    db: str
    exit_on_eof: bool
    scan_interval: float
    flush_interval: float
    max_line_bytes: int
    partial_flush_timeout: float
    max_record_bytes: int
    compression: str
    gzip_level: int
    zstd_level: int
    zstd_catch_up_level: int
    one_line_per_record: bool
    max_buffer_bytes: int
    max_raw_bytes: int
    malloc_trim_interval: float
    max_deleted_bytes: int
    max_deleted_files: int
    shutdown_timeout: float
    max_delivery_lag: float
    http_host: str
    http_port: int
    metrics_file_labels: bool
    log_level: str
    include_self: bool
    pod_name: str | None
    pod_namespace: str | None
    send_concurrency: int
    pacing: str
    multiline: str
    multiline_start: str
    multiline_flush_timeout: float
    kubernetes_metadata: bool
    kubernetes_api: str | None
    kubernetes_token_file: str
    kubernetes_annotations: list[str]
    node_name: str | None
    full_botocore_data: bool

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


# ----- value parsers: text -> value, or ValueError saying what is accepted. Each carries
# `json_schema`, the JSON Schema of the values it accepts (forwarder/config_schema.py).


def _accepts(parse: Callable[[str], Any], **schema: Any) -> Callable[[str], Any]:
    parse.json_schema = schema  # type: ignore[attr-defined]
    return parse


def boolean(text: str) -> bool:
    """true/1/yes/on or false/0/no/off (any case)."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"must be true/1/yes/on or false/0/no/off, got {text!r}")


_accepts(boolean, type="boolean")


def integer(low: int, high: int) -> Callable[[str], int]:
    """A whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, got {text!r}")
        return value

    return _accepts(parse, type="integer", minimum=low, maximum=high)


def seconds(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """A number of seconds in [low, high] (or (low, high] when `low_open`)."""
    bracket = "(" if low_open else "["

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = None
        fits = value is not None and (value > low if low_open else value >= low) and value <= high
        if not fits:
            raise ValueError(f"must be seconds in {bracket}{low:g}, {high:g}], got {text!r}")
        return value  # type: ignore[return-value]

    bound = {"exclusiveMinimum": low} if low_open else {"minimum": low}
    return _accepts(parse, type="number", maximum=high, **bound)


def choice(*words: str, upper: bool = False) -> Callable[[str], str]:
    """One of `words` (case-insensitive when `upper`: normalised to upper case)."""

    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip()
        if value not in words:
            raise ValueError(f"must be one of {', '.join(words)}, got {text!r}")
        return value

    return _accepts(parse, enum=[*words, *(w.lower() for w in words if upper)])


def text(value: str) -> str:
    """Any non-empty text."""
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


_accepts(text, type="string", pattern=r"\S")


def stream_name(value: str) -> str:
    """A Firehose delivery stream name: 1-64 of a-z A-Z 0-9 _ . -"""
    if not STREAM_NAME.fullmatch(value.strip()):
        raise ValueError(f"must be 1-64 characters of a-z A-Z 0-9 _ . -, got {value!r}")
    return value.strip()


_accepts(stream_name, type="string", pattern=f"^\\s*{STREAM_NAME.pattern}\\s*$")


def region(value: str) -> str:
    """An AWS region name, e.g. us-east-1 or eu-central-2."""
    if not REGION_NAME.fullmatch(value.strip()):
        raise ValueError(f"must be an AWS region name such as us-east-1, got {value!r}")
    return value.strip()


_accepts(region, type="string", pattern=f"^\\s*{REGION_NAME.pattern}\\s*$")


def url(value: str) -> str:
    """An http:// or https:// URL."""
    if not value.strip().startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    return value.strip()


_accepts(url, type="string", pattern=r"^\s*https?://")


def namespace_glob(value: str) -> str:
    """A glob of pod namespaces: lower-case letters, digits and '-' (what a namespace may
    hold), with the glob's * ? [ ] and !; a glob of anything else could never match."""
    if not NAMESPACE_GLOB.fullmatch(value.strip()):
        raise ValueError(
            "must be a namespace glob (a-z, 0-9, '-' and * ? [ ] !: namespaces are "
            f"lower-case DNS labels), got {value!r}"
        )
    return value.strip()


_accepts(namespace_glob, type="string", pattern=f"^\\s*{NAMESPACE_GLOB.pattern}\\s*$")


def routes(value: str) -> list[Route]:
    """Comma-separated GLOB=STREAM routes: a namespace glob and a delivery stream name."""
    found = []
    for part in (p.strip() for p in value.split(",")):
        glob, equals, stream = part.partition("=")
        if not equals or not glob.strip():
            raise ValueError(f"must be GLOB=STREAM (a namespace glob), got {part!r}")
        found.append(Route(namespace_glob(glob), stream_name(stream)))
    return found


def globs(value: str) -> list[str]:
    """Comma-separated globs (one flag may also carry several)."""
    return [part.strip() for part in value.split(",") if part.strip()]


_accepts(globs, type="string")


@dataclass(frozen=True)
class Option:
    """One setting: its flag, its environment variable (derived), parser, default and help."""

    flag: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    switch: bool = False  # a flag without a value; the variable is a boolean
    repeatable: bool = False  # the flag may repeat; values are lists of globs
    field: str = ""  # the Config field, when not the flag's name
    variable: str = ""  # the environment variable, when not the one the flag's name gives

    @property
    def dest(self) -> str:
        """The Config field."""
        return self.field or self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        """The environment variable."""
        return self.variable or ENV_PREFIX + self.flag.removeprefix("--").upper().replace("-", "_")


KIB = 1024
MIB = 1024 * KIB
OPTIONS: tuple[Option, ...] = (
    Option("--path", globs, ["/var/log/containers/*.log"], "glob of log files to tail",
           "GLOB", repeatable=True, field="paths"),
    Option("--exclude", globs, [], "glob of paths to skip", "GLOB", repeatable=True,
           field="excludes"),
    Option("--delivery-stream", stream_name, None, "Firehose delivery stream name (required)",
           "NAME"),
    Option("--route", routes, [],
           "GLOB=STREAM: files of pods whose namespace matches GLOB go to STREAM (first match "
           "wins; others to --delivery-stream)", "GLOB=STREAM", repeatable=True,
           field="routes", variable="PODHOSE_ROUTES"),
    Option("--region", region, None, "AWS region (else AWS_REGION or boto3's default chain)",
           "REGION"),
    Option("--endpoint-url", url, None, "Firehose endpoint URL override", "URL"),
    Option("--db", text, "/var/lib/podhose/offsets.db", "SQLite offsets database", "PATH"),
    Option("--exit-on-eof", boolean, False,
           "read every file to its last complete line, deliver everything, exit 0",
           switch=True),
    Option("--scan-interval", seconds(0, 3600, low_open=True), 1.0,
           "seconds between glob re-scans, in (0, 3600]", "SECONDS"),
    Option("--flush-interval", seconds(0, 900), 1.0,
           "max seconds a line waits before its record is sent, in [0, 900]", "SECONDS"),
    Option("--max-line-bytes", integer(1024, limits.MAX_LINE_LIMIT), 512 * KIB,
           f"longest logical line shipped whole, 1024 to {limits.MAX_LINE_LIMIT}", "N"),
    Option("--partial-flush-timeout", seconds(0, 3600, low_open=True), 4.0,
           "seconds an unfinished partial line (CRI P, Docker entry without \\n) waits for "
           "its end before it is shipped as it is so far, in (0, 3600]", "SECONDS"),
    Option("--max-record-bytes", integer(1024 + limits.RECORD_OVERHEAD, 64 * MIB), 1 * MIB,
           "uncompressed payload bytes per record (a record as sent stays <= 1,024,000)", "N"),
    Option("--compression", choice("zstd", "gzip", "none"), "zstd",
           "zstd (envelope in columns), gzip or none", "KIND"),
    Option("--zstd-level", integer(1, 19), 6, "zstd level 1-19 (with --compression zstd)", "N"),
    Option("--zstd-catch-up-level", integer(1, 19), 1,
           "zstd level 1-19 while the forwarder falls behind growing files with room to "
           "send (CPU-bound), until it caught up; --zstd-level's value disables it", "N"),
    Option("--gzip-level", integer(1, 9), 1, "gzip level 1-9 (with --compression gzip)", "N"),
    Option("--one-line-per-record", boolean, False,
           "one raw line per record, no header, no gzip (the seed's shape)", switch=True),
    Option("--max-buffer-bytes", integer(1, 4096 * MIB), 32 * MIB,
           "stop reading while more than this is read but unacknowledged, 1 to 4 GiB", "N"),
    Option("--max-raw-bytes", integer(1, 4096 * MIB), 8 * MIB,
           "raw line bytes waiting in records not yet compressed, all files together; above "
           "it the largest such records are compressed at once, 1 to 4 GiB", "N"),
    Option("--max-deleted-bytes", integer(1, 1024 * 1024 * MIB), 2048 * MIB,
           "disk the deleted files still being read may hold (their space is freed only when "
           "closed); above it the oldest are given up, their unread lines lost (counted)", "N"),
    Option("--max-deleted-files", integer(1, 1_000_000), 1000,
           "deleted files held open, at most; above it the oldest are given up (counted)",
           "N"),
    Option("--malloc-trim-interval", seconds(0, 3600), 10.0,
           "seconds between giving freed heap back to the system (glibc malloc_trim), "
           "0 never, in [0, 3600]", "SECONDS"),
    Option("--shutdown-timeout", seconds(0, 3600), 20.0,
           "seconds to flush after SIGTERM/SIGINT, in [0, 3600]", "SECONDS"),
    Option("--max-delivery-lag", seconds(0, 86400, low_open=True), 30.0,
           "/readyz fails when a line waited this long with no acknowledgement for as long",
           "SECONDS"),
    Option("--http-host", text, "0.0.0.0", "/healthz, /readyz and /metrics address", "HOST"),
    Option("--http-port", integer(0, 65535), 2020,
           "/healthz, /readyz and /metrics port (0 disables)", "PORT"),
    Option("--metrics-file-labels", boolean, False,
           "also expose podhose_file_lag_bytes per log file (its file name as a label: pod, "
           "namespace and container names become visible to whoever reads /metrics)",
           switch=True),
    Option("--log-level", choice(*LOG_LEVELS, upper=True), "INFO", ", ".join(LOG_LEVELS),
           "LEVEL"),
    Option("--include-self", boolean, False,
           "also ship this forwarder's own container logs (POD_NAME/POD_NAMESPACE)",
           switch=True),
    Option("--send-concurrency", integer(1, 64), 2, "PutRecordBatch calls in flight, 1 to 64",
           "N"),
    Option("--pacing", choice("aimd", "off"), "aimd",
           "after Firehose says \"Slow down.\": aimd paces the stream's calls at the rate it "
           "accepts (cut 30 %% on a throttle, +5 %%/s after); off only backs off", "MODE"),
    Option("--multiline", choice("none", "java", "python", "go", "regex"), "none",
           "the transform's multi-line mode: records are not cut inside such events", "MODE"),
    Option("--multiline-start", text, "",
           "with --multiline regex: the transform's start-of-event pattern", "REGEX"),
    Option("--multiline-flush-timeout", seconds(0, 60), 2.0,
           "with --multiline: an aged record whose last line may still be continued waits "
           "this long after its last line, in [0, 60]", "SECONDS"),
    Option("--kubernetes-metadata", boolean, False,
           "add the pod's labels, chosen annotations, node and uid to each record's header "
           "(watches this node's pods; needs --node-name and RBAC to list/watch pods)",
           switch=True),
    Option("--kubernetes-api", url, None,
           "API server URL (default: in-cluster, KUBERNETES_SERVICE_HOST/PORT)", "URL"),
    Option("--kubernetes-token-file", text, "/var/run/secrets/kubernetes.io/serviceaccount/token",
           "bearer token file for the API server (re-read on every connection)", "PATH"),
    Option("--kubernetes-annotations", globs, [],
           "globs of pod annotation names to include (none by default)", "GLOB",
           repeatable=True),
    Option("--node-name", text, None,
           "this node's name (the DaemonSet sets it from spec.nodeName)", "NAME"),
    Option("--full-botocore-data", boolean, False,
           "give botocore its full data (endpoints of every AWS service, ~8 MB more memory) "
           "instead of the Firehose-only copy of AWS_DATA_PATH or the cache directory",
           switch=True),
)  # fmt: skip


def defaults() -> dict[str, Any]:
    """Each option's default, by Config field.

    >>> defaults()["flush_interval"], defaults()["paths"]
    (1.0, ['/var/log/containers/*.log'])
    """
    return {opt.dest: opt.default for opt in OPTIONS}


class OneLineParser(argparse.ArgumentParser):
    """Errors in one line (no usage dump; `--help` has it), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; values stay text (None when absent) until parse_config."""
    parser = OneLineParser(
        prog="podhose-forwarder",
        description="Tail Kubernetes container logs and put raw lines to Amazon Data Firehose.",
    )
    for opt in OPTIONS:
        shown = ",".join(opt.default) if isinstance(opt.default, list) else opt.default
        shown = "none" if shown in (None, "") else shown
        kwargs: dict[str, Any] = {"dest": opt.dest, "default": None}
        if opt.switch:
            kwargs |= {"action": "store_const", "const": "true"}
        else:
            kwargs |= {"metavar": opt.metavar, "action": "append" if opt.repeatable else None}
        parser.add_argument(opt.flag, help=f"{opt.help} [env {opt.env}; default {shown}]",
                            **kwargs)  # fmt: skip
    return parser


def unknown_variables(env: dict[str, str]) -> list[str]:
    """PODHOSE_* variables that are no option (a typo would otherwise be ignored silently)."""
    known = {opt.env for opt in OPTIONS}
    return sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)


def resolve_region(cfg: Config) -> Config:
    """Fill in the region: the flag, else AWS_REGION or boto3's chain (AWS_DEFAULT_REGION,
    ~/.aws/config), else us-east-1 when --endpoint-url points at a local or test endpoint
    (which ignores it).

    Raises StartupError when no region is configured anywhere, or the one found is no region
    name.
    """
    if cfg.region:
        return cfg
    # AWS_REGION (set on EKS by IRSA) is not in botocore's chain; AWS_DEFAULT_REGION is.
    chain = botocore.session.get_session().get_config_variable("region")
    source = "AWS_REGION" if os.environ.get("AWS_REGION") else "AWS_DEFAULT_REGION or ~/.aws"
    found = os.environ.get("AWS_REGION") or chain
    if found:
        try:
            return dataclasses.replace(cfg, region=region(str(found)))
        except ValueError as exc:
            raise StartupError(f"{source}: {exc}") from None
    if cfg.endpoint_url:
        return dataclasses.replace(cfg, region=LOCAL_ENDPOINT_REGION)
    raise StartupError("no AWS region: set --region, PODHOSE_REGION or AWS_REGION")


def _value(opt: Option, flag_value: Any, env: dict[str, str]) -> tuple[str, Any]:
    """(where the value came from, the value): the flag, else the variable, else the default."""
    if flag_value is not None:
        if opt.repeatable:
            return opt.flag, [g for item in flag_value for g in opt.parse(item)]
        return opt.flag, opt.parse(flag_value)
    raw = env.get(opt.env, "")
    if raw.strip():
        return opt.env, opt.parse(raw)
    return "default", opt.default


def _check_multiline(
    parser: argparse.ArgumentParser, values: dict[str, Any], sources: dict[str, str]
) -> None:
    if values["multiline"] != "regex":
        return
    if not values["multiline_start"]:
        parser.error("--multiline regex needs --multiline-start (PODHOSE_MULTILINE_START)")
    try:
        re.compile(values["multiline_start"])
    except re.error as exc:
        parser.error(f"{sources['multiline_start']}: not a regular expression: {exc}")


def parse_config(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Merge flags (which win), PODHOSE_* environment variables and defaults into a Config.

    Exits with code 2 and a message naming the flag or variable on any invalid value.
    """
    env = dict(os.environ) if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        try:
            sources[opt.dest], values[opt.dest] = _value(opt, getattr(args, opt.dest), env)
        except ValueError as exc:
            source = opt.flag if getattr(args, opt.dest) is not None else opt.env
            parser.error(f"{source}: {exc}")
    if not values["delivery_stream"]:
        parser.error("--delivery-stream (or PODHOSE_DELIVERY_STREAM) is required")
    overhead = limits.RECORD_OVERHEAD
    overhead += limits.METADATA_RESERVE if values["kubernetes_metadata"] else 0
    if values["max_record_bytes"] < values["max_line_bytes"] + overhead:
        parser.error(
            f"{sources['max_record_bytes']}: --max-record-bytes must be at least "
            f"--max-line-bytes + {overhead}"
            + (" (with --kubernetes-metadata)" if values["kubernetes_metadata"] else "")
        )
    globs_ = [route.glob for route in values["routes"]]
    for glob in {g for g in globs_ if globs_.count(g) > 1}:
        parser.error(f"{sources['routes']}: the namespace glob {glob!r} is routed twice "
                     "(the first route wins: the others could never match)")  # fmt: skip
    streams = len(Router(values["delivery_stream"], values["routes"]).streams)
    if values["max_buffer_bytes"] < 2 * values["max_line_bytes"] * streams:
        parser.error(
            f"{sources['max_buffer_bytes']}: --max-buffer-bytes must be at least twice "
            "--max-line-bytes (a read and an unfinished line must fit together)"
            + (f" per delivery stream ({streams} with --route)" if streams > 1 else "")
        )
    _check_multiline(parser, values, sources)
    if values["kubernetes_metadata"] and not values["node_name"]:
        parser.error("--kubernetes-metadata needs --node-name (PODHOSE_NODE_NAME)")
    if values["one_line_per_record"]:
        for name, on in (("--kubernetes-metadata", values["kubernetes_metadata"]),
                         ("--multiline", values["multiline"] != "none")):  # fmt: skip
            if on:
                parser.error(f"{name} needs record headers and whole records: "
                             "not with --one-line-per-record")  # fmt: skip
    values["pod_name"] = env.get("POD_NAME") or None
    values["pod_namespace"] = env.get("POD_NAMESPACE") or None
    return Config(**values)
