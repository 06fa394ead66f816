"""Firehose dynamic-partitioning keys of a record, from its source header.

Example:
    >>> from transform_lambda.wire_decoder import split_header
    >>> header, _ = split_header(b"\\x1epodhose/1 src=web-1_prod_app-" + b"a" * 64 + b".log\\n")
    >>> partition_keys(("namespace", "label:app.kubernetes.io/name"), header)
    {'namespace': 'prod', 'label_app_kubernetes_io_name': 'unknown'}
"""

from __future__ import annotations

import re

from transform_lambda.wire_decoder import RecordHeader

UNKNOWN_PARTITION = "unknown"
_NOT_KEY_CHARACTER = re.compile(r"[^A-Za-z0-9_]")


def partition_keys(keys: tuple[str, ...], header: RecordHeader | None) -> dict[str, str] | None:
    """The value of each of `keys` (PODHOSE_PARTITION_KEYS) for a record with `header`,
    ``unknown`` where the header does not tell; None without keys."""
    if not keys:
        return None
    return {
        partition_key_name(key): (header.partition_value(key) if header else None)
        or UNKNOWN_PARTITION
        for key in keys
    }


def partition_key_name(key: str) -> str:
    """The key name Firehose sees: ``label:app.kubernetes.io/name`` ->
    ``label_app_kubernetes_io_name``; the other keys as they are."""
    return _NOT_KEY_CHARACTER.sub("_", key)
