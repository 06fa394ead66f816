"""Transform settings, read from environment variables that template.yaml sets.

Every default reproduces the seed Fluent Bit pipeline's S3 output byte for byte.

Example:
    >>> TransformSettings.from_env({"PODHOSE_KEEP_KEYS": "log,stream"}).keep_keys
    ('log', 'stream')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from transform_lambda.multiline import MODES
from transform_lambda.wire_decoder import LABEL_KEY_PREFIX

ENV_PARSE_ENVELOPE = "PODHOSE_PARSE_ENVELOPE"
ENV_DECODE_JSON = "PODHOSE_DECODE_JSON"
ENV_KEEP_KEYS = "PODHOSE_KEEP_KEYS"
ENV_LIFT_KEY = "PODHOSE_LIFT_KEY"
ENV_ADD_KUBERNETES_METADATA = "PODHOSE_ADD_KUBERNETES_METADATA"
ENV_PARTITION_KEYS = "PODHOSE_PARTITION_KEYS"
ENV_MAX_REINGEST_ATTEMPTS = "PODHOSE_MAX_REINGEST_ATTEMPTS"
ENV_MULTILINE = "PODHOSE_MULTILINE"
ENV_MULTILINE_START = "PODHOSE_MULTILINE_START"
ENV_MULTILINE_MAX_BYTES = "PODHOSE_MULTILINE_MAX_BYTES"

#: Every environment variable the transform reads (template.yaml must set exactly these).
ENV_VARS: tuple[str, ...] = (
    ENV_PARSE_ENVELOPE,
    ENV_DECODE_JSON,
    ENV_KEEP_KEYS,
    ENV_LIFT_KEY,
    ENV_ADD_KUBERNETES_METADATA,
    ENV_PARTITION_KEYS,
    ENV_MAX_REINGEST_ATTEMPTS,
    ENV_MULTILINE,
    ENV_MULTILINE_START,
    ENV_MULTILINE_MAX_BYTES,
)

DEFAULT_MULTILINE_MAX_BYTES = 256 * 1024
#: Set by Lambda: the function's memory size in MB (512, the template's default, elsewhere).
ENV_LAMBDA_MEMORY = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
DEFAULT_MEMORY_MB = 512
#: Memory the runtime, the modules and the response need besides the decompressed data.
BASE_MEMORY_MB = 96
#: Memory per decompressed byte held (the data, its lines, the output): measured 3.1x on
#: Firehose's largest buffer (3 MB) of gzip-9 records expanding 44x, 465 MB at 512 MB.
MEMORY_PER_DECOMPRESSED_BYTE = 3

#: Partition keys the transform can return (values come from the record's source header).
PARTITION_KEY_NAMES: tuple[str, ...] = ("namespace", "pod", "container", "container_id")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """An environment variable holds a value the transform cannot use."""


@dataclass(frozen=True, slots=True)
class TransformSettings:
    """What the transform does to each log line, in pipeline order.

    Attributes:
        parse_envelope: step 1, read Docker json-file / CRI lines (Fluent Bit's ``docker``
            parser); when off every line is plain text: ``{"log": line}``. Default on.
        decode_json: step 2, decode the ``log`` field when it holds a JSON object
            (``Decode_Field_As json log``). Default on.
        keep_keys: step 3, keys kept on the record (``record_modifier Whitelist_key``);
            empty keeps all. Default ``("log",)``.
        lift_key: step 4, the key whose map is lifted to the top level
            (``nest Operation lift``); empty turns lifting off. Default ``"log"``.
        add_kubernetes_metadata: add a ``kubernetes`` object (namespace_name, pod_name,
            container_name, docker_id) to each line of records that carry a source header.
            Default off.
        partition_keys: Firehose dynamic-partitioning keys to return per record, from
            ``namespace``, ``pod``, ``container``, ``container_id``, and ``label:<name>``
            (a pod label; the forwarder's ``--kubernetes-metadata`` sends labels; returned
            as ``label_<name>`` with other characters than letters, digits and ``_``
            replaced by ``_``). Default none.
        max_reingest_attempts: how often a record that does not fit the 6 MB response may
            be put back into the stream before it is returned as ``ProcessingFailed``.
            Default 3.
        multiline: join multi-line events (stack traces) within each record: ``java``,
            ``python``, ``go`` (Fluent Bit's built-in parsers) or ``regex``; empty is off.
            Default off (the seed's output).
        multiline_start: with ``regex``, the pattern (Python ``re``, searched) a line
            matches when it starts an event; other lines continue the event before them.
        multiline_max_bytes: an event is closed when joining the next line would make
            it longer; that line continues it as a new event. Default 262144 (256 KiB).
        decompressed_budget_bytes: decompressed bytes one invocation may make, from the
            function's memory: (MB - 96) / 3 MiB, 138 MiB at 512 MB. Records beyond it
            (compression bombs) are answered ProcessingFailed with their original data.
    """

    parse_envelope: bool = True
    decode_json: bool = True
    keep_keys: tuple[str, ...] = ("log",)
    lift_key: str = "log"
    add_kubernetes_metadata: bool = False
    partition_keys: tuple[str, ...] = ()
    max_reingest_attempts: int = 3
    multiline: str = ""
    multiline_start: str = ""
    multiline_max_bytes: int = DEFAULT_MULTILINE_MAX_BYTES
    decompressed_budget_bytes: int = (
        (DEFAULT_MEMORY_MB - BASE_MEMORY_MB) * 2**20 // MEMORY_PER_DECOMPRESSED_BYTE
    )

    @property
    def is_seed_pipeline(self) -> bool:
        """True when the settings are the seed's: the bulk path applies (path_choice.py)."""
        return (
            self.parse_envelope
            and self.decode_json
            and self.keep_keys == ("log",)
            and self.lift_key == "log"
            and not self.add_kubernetes_metadata
            and not self.multiline
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TransformSettings:
        """Build settings from ``environ`` (default ``os.environ``); raise SettingsError."""
        env = os.environ if environ is None else environ
        partition_keys = _names(env.get(ENV_PARTITION_KEYS, ""))
        unknown = sorted(
            key
            for key in set(partition_keys) - set(PARTITION_KEY_NAMES)
            if not (key.startswith(LABEL_KEY_PREFIX) and key != LABEL_KEY_PREFIX)
        )
        if unknown:
            raise SettingsError(
                f"{ENV_PARTITION_KEYS}: unknown key(s) {unknown}; "
                f"choose from {list(PARTITION_KEY_NAMES)} or {LABEL_KEY_PREFIX}<pod label>"
            )
        return cls(
            parse_envelope=_flag(env, ENV_PARSE_ENVELOPE, default=True),
            decode_json=_flag(env, ENV_DECODE_JSON, default=True),
            keep_keys=_names(env.get(ENV_KEEP_KEYS, "log")),
            lift_key=env.get(ENV_LIFT_KEY, "log").strip(),
            add_kubernetes_metadata=_flag(env, ENV_ADD_KUBERNETES_METADATA, default=False),
            partition_keys=partition_keys,
            max_reingest_attempts=_count(env, ENV_MAX_REINGEST_ATTEMPTS, default=3),
            decompressed_budget_bytes=decompressed_budget(env),
            **_multiline(env),
        )


def decompressed_budget(env: Mapping[str, str]) -> int:
    """Decompressed bytes one invocation may make with the function's memory size.

    >>> decompressed_budget({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}) // 2**20
    138
    """
    memory = _count(env, ENV_LAMBDA_MEMORY, default=DEFAULT_MEMORY_MB)
    return max(memory - BASE_MEMORY_MB, 32) * 2**20 // MEMORY_PER_DECOMPRESSED_BYTE


def _multiline(env: Mapping[str, str]) -> dict[str, object]:
    mode = env.get(ENV_MULTILINE, "").strip().lower()
    start = env.get(ENV_MULTILINE_START, "")
    if mode and mode not in MODES:
        raise SettingsError(f"{ENV_MULTILINE}: unknown mode {mode!r}; choose from {list(MODES)}")
    if mode == "regex":
        if not start:
            raise SettingsError(f"{ENV_MULTILINE}=regex needs {ENV_MULTILINE_START}")
        try:
            re.compile(start)
        except re.error as error:
            raise SettingsError(f"{ENV_MULTILINE_START}: {error}") from None
    max_bytes = _count(env, ENV_MULTILINE_MAX_BYTES, default=DEFAULT_MULTILINE_MAX_BYTES)
    if max_bytes < 1:
        raise SettingsError(f"{ENV_MULTILINE_MAX_BYTES}: must be >= 1")
    return {"multiline": mode, "multiline_start": start, "multiline_max_bytes": max_bytes}


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{name}: expected true or false, got {raw!r}")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _count(env: Mapping[str, str], name: str, *, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name}: must be >= 0, got {value}")
    return value
