"""Bulk paths for the seed pipeline: whole batches of ordinary Docker or CRI lines.

Per-line Python is the cost that matters in the Lambda, so when every line of a batch is
an ordinary Docker json-file line (or an ordinary full CRI line), the batch is
transformed with a few C-level passes (``map`` over orjson, one regex scan, one
``orjson.dumps`` for the whole output); only lines whose ``log`` is not a JSON object get
a Python call each. Each function returns None as soon as the batch holds anything
unusual — partial lines, invalid UTF-8, nesting orjson cannot write — and the caller then
takes the general path, which implements every rule. Lines with digit runs orjson might
misread never reach these functions (transform.py takes them out, line by line). Both
paths emit the same bytes; the tests check it on every oracle case.
"""

from __future__ import annotations

import re
from itertools import compress
from operator import itemgetter, methodcaller
from typing import Any

import orjson

from transform_lambda.jsoncodec import decode_object, dumps_objects

_get_log = itemgetter("log")
_ends_with_newline = methodcaller("endswith", "\n")
_starts_with_brace = methodcaller("startswith", "{")
# A full CRI line whose time is one token starting with a digit: the common shape, which
# can be neither a Docker JSON line nor read as CRI in another way.
_CRI_FULL_LINE = re.compile(r"^[0-9][^ \n]* std(?:out|err) F ([^\r\n]*)\r?$", re.MULTILINE)


def _log_object(log: str) -> dict[str, Any]:
    decoded = decode_object(log)
    return {"log": log} if decoded is None else decoded


def _text_object(log: str) -> dict[str, Any]:
    # Only spaces may precede a decodable object; any other text stays text.
    return _log_object(log) if log[:1] == " " else {"log": log}


def _objects(logs: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """(each log decoded or wrapped, whether all were decoded); ``{``-lines in one pass."""
    starts = list(map(_starts_with_brace, logs))
    try:
        decoded = list(map(orjson.loads, compress(logs, starts)))
    except orjson.JSONDecodeError:  # some "{" line is not strict JSON: line by line
        return list(map(_log_object, logs)), False
    if len(decoded) == len(logs):
        return decoded, True
    parsed = iter(decoded)
    pairs = zip(starts, logs, strict=True)
    return [next(parsed) if start else _text_object(log) for start, log in pairs], False


def _decode_failures(logs: list[str], objects: list[dict[str, Any]]) -> int:
    """Logs that looked like a JSON object but were kept as text."""
    return sum(
        1
        for log, obj in zip(logs, objects, strict=True)
        if obj.get("log") is log and log.lstrip(" ").startswith("{")
    )


def _to_ndjson(logs: list[str]) -> tuple[bytes, int] | None:
    """(NDJSON, decode failures) for the logs, or None if orjson cannot write one."""
    objects, all_decoded = _objects(logs)
    failures = 0 if all_decoded else _decode_failures(logs, objects)
    try:
        return dumps_objects(objects), failures
    except orjson.JSONEncodeError:
        return None


def docker_texts(texts: list[bytes]) -> tuple[bytes, int] | None:
    """Seed-pipeline NDJSON from the JSON-escaped `log` strings of Docker lines (the texts
    column of podhose's wire format), decoded in one call, or None."""
    if not texts:
        return b"", 0
    try:
        logs = orjson.loads(b'["' + b'","'.join(texts) + b'"]')
    except orjson.JSONDecodeError:
        return None
    if len(logs) != len(texts) or not all(map(_ends_with_newline, logs)):
        return None  # a text that was not one JSON string; or a partial line's piece
    return _to_ndjson(logs)


def cri_texts(texts: list[bytes]) -> tuple[bytes, int] | None:
    """Seed-pipeline NDJSON from the contents of full CRI lines (the texts column of
    podhose's wire format), or None; the same rules as cri_lines."""
    joined = b"\n".join(texts)
    if b"\r" in joined:
        return None  # CR handling is the general path's
    try:
        contents = joined.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    return _to_ndjson(contents)


def docker_lines(lines: list[bytes], body: bytes) -> tuple[bytes, int] | None:
    """Seed-pipeline NDJSON for Docker json-file lines, or None."""
    try:
        envelopes = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    if set(map(type, envelopes)) != {dict}:
        return None
    try:
        logs = list(map(_get_log, envelopes))
    except KeyError:
        return None
    if set(map(type, logs)) != {str} or not all(map(_ends_with_newline, logs)):
        return None
    return _to_ndjson(logs)


def cri_lines(line_count: int, body: bytes) -> tuple[bytes, int] | None:
    """Seed-pipeline NDJSON for full CRI lines, or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    contents = _CRI_FULL_LINE.findall(text)
    if len(contents) != line_count:
        return None
    return _to_ndjson(contents)
