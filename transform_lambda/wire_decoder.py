"""The transform's reading of a record (docs/architecture.md, "Record wire format"; the
header, the kubelet file name and the column body are podhose_wire's): the header with the
pod metadata it carries, and a column body expanded back into lines.

Records without a header (raw lines from Fluent Bit, the Kinesis Agent, ...) are unchanged.

Example:
    >>> header, body = split_header(b"\\x1epodhose/1 src=web-1_prod_app-" + b"a" * 64
    ...                             + b".log\\nline\\n")
    >>> header.source.namespace, body
    ('prod', b'line\\n')
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from podhose_wire import header as wire_header
from podhose_wire.columns import (
    ENC_COLUMNS,
    ENC_TRANSPOSED_COLUMNS,
    Columns,
    WireFormatError,
)
from podhose_wire.kubelet_name import KubeletName
from transform_lambda import jsoncodec

#: PODHOSE_PARTITION_KEYS entry for a pod label (needs the forwarder's --kubernetes-metadata).
LABEL_KEY_PREFIX = "label:"


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """The parsed header line; ``fields`` keeps every key, known or not."""

    fields: dict[str, str]

    @property
    def source_file(self) -> str | None:
        return self.fields.get(wire_header.SRC)

    @property
    def source(self) -> KubeletName | None:
        name = self.source_file
        return KubeletName.parse(name) if name else None

    @property
    def pod_metadata(self) -> dict[str, Any] | None:
        """What the forwarder's ``--kubernetes-metadata`` put in ``k8s=`` (``pod_id``,
        ``host``, ``labels``, ``annotations``), or None (absent or unreadable)."""
        raw = self.fields.get(wire_header.K8S)
        if not raw:
            return None
        try:
            value = jsoncodec.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (ValueError, *jsoncodec.DECODE_ERRORS):
            return None
        return value if isinstance(value, dict) else None

    def kubernetes(self) -> dict[str, Any] | None:
        """The ``kubernetes`` object for this record's lines: the file name's fields plus
        the pod metadata, in Fluent Bit's key names; None without a kubelet file name."""
        source = self.source
        if source is None:
            return None
        return {**source.as_metadata(), **(self.pod_metadata or {})}

    def partition_value(self, key: str) -> str | None:
        """A dynamic-partitioning key's value: a file-name field, or ``label:<name>``."""
        if key.startswith(LABEL_KEY_PREFIX):
            labels = (self.pod_metadata or {}).get("labels") or {}
            value = labels.get(key.removeprefix(LABEL_KEY_PREFIX))
            return value if isinstance(value, str) else None
        source = self.source
        return source.partition_value(key) if source is not None else None

    @property
    def attempt(self) -> int:
        """Re-ingest attempt number (0 for a record straight from a forwarder)."""
        return wire_header.short_number(self.fields.get(wire_header.ATTEMPT, "0")) or 0

    def encode(self) -> bytes:
        """The header line, newline included."""
        return wire_header.encode(self.fields)

    def with_attempt(self, attempt: int) -> RecordHeader:
        return RecordHeader({**self.fields, wire_header.ATTEMPT: str(attempt)})


def split_header(payload: bytes) -> tuple[RecordHeader | None, bytes]:
    """Split a (decompressed) record payload into its header, if any, and its lines."""
    fields, body = wire_header.split(payload)
    return (RecordHeader(fields) if fields is not None else None), body


def expand(payload: bytes) -> bytes:
    """The payload with its lines as the files held them: a column body (``enc=cols2`` or
    ``cols1``) is rebuilt byte for byte and the header loses its ``enc``; other payloads are
    returned as they are. Raises WireFormatError for an unknown encoding or a corrupt column body.
    """
    header, body = split_header(payload)
    if header is None or wire_header.ENC not in header.fields:
        return payload
    header, columns = read_encoded(header, body)
    return (header.encode() if header else b"") + columns.lines()


def read_encoded(header: RecordHeader, body: bytes) -> tuple[RecordHeader | None, Columns]:
    """(the header without ``enc``, or None when nothing else is left; the columns) of a
    record whose header names an encoding; raise WireFormatError for an unknown one."""
    enc = header.fields.get(wire_header.ENC)
    if enc not in (ENC_COLUMNS, ENC_TRANSPOSED_COLUMNS):
        raise WireFormatError(f"unknown record encoding enc={enc}")
    fields = {key: value for key, value in header.fields.items() if key != wire_header.ENC}
    return (RecordHeader(fields) if fields else None), Columns.read(
        body, transposed=enc == ENC_TRANSPOSED_COLUMNS
    )
