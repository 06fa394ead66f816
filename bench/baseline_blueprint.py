"""Baseline: the same transformation written with the standard library only.

This is how AWS's Python blueprint for Firehose processing is written (base64 + json,
one loop over records), extended to do the seed pipeline's job on packed, gzip, Docker
and CRI records: a fair baseline, not a strawman. It skips podhose's edge cases
(partials, exact big integers, Fluent Bit's whitespace rules). Not used by podhose.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any


def _render(log: Any) -> str:
    if isinstance(log, str) and log.lstrip(" ").startswith("{"):
        try:
            decoded = json.loads(log)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            return json.dumps(decoded, separators=(",", ":"), ensure_ascii=False)
    return json.dumps({"log": log}, separators=(",", ":"), ensure_ascii=False)


def _transform_line(line: str) -> str:
    try:
        envelope = json.loads(line)
    except ValueError:
        envelope = None
    if isinstance(envelope, dict):
        return _render(envelope.get("log"))
    parts = line.split(" ", 3)
    if len(parts) == 4 and parts[1] in ("stdout", "stderr") and parts[2] in ("F", "P"):
        return _render(parts[3])
    return _render(line)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    output = []
    for record in event["records"]:
        payload = base64.b64decode(record["data"])
        if payload[:2] == b"\x1f\x8b":
            payload = gzip.decompress(payload)
        if payload[:1] == b"\x1e":  # the forwarder's source header line (wire format)
            payload = payload.split(b"\n", 1)[1]
        lines = payload.decode("utf-8").split("\n")
        if lines[-1] == "":
            lines.pop()
        out = "".join(_transform_line(line) + "\n" for line in lines)
        output.append(
            {
                "recordId": record["recordId"],
                "result": "Ok" if out else "Dropped",
                "data": base64.b64encode(out.encode("utf-8")).decode("utf-8"),
            }
        )
    return {"records": output}
