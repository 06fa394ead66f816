"""Bulk paths for the seed pipeline: whole batches of ordinary Docker or CRI lines.

Per-line Python is the cost that matters in the Lambda, so when every line of a batch is
an ordinary Docker json-file line (or an ordinary CRI line), the batch is transformed with
a few C-level passes: one msgspec call reads every Docker envelope (or one LF-anchored
regex substitution strips every CRI prefix), partial pieces are joined per stream, ``map``
decodes the logs that start with ``{``, and one msgspec call writes the whole output. A
text log starting with a space gets a Python call (it may be an object after spaces), and
so do the logs of a 256-line chunk holding a ``{`` log that is not strict JSON. Each
function returns None as soon as the batch holds anything else — a line of another shape,
invalid UTF-8, values msgspec will not write — and path_choice.py then sends the record
line by line (render.py), which implements every rule. Both paths emit the same bytes; the
tests check it on every oracle case and on random mixes of odd lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from itertools import compress
from operator import attrgetter, itemgetter, methodcaller, not_
from typing import Any, NamedTuple

import msgspec

from transform_lambda.jsoncodec import (
    DECODE_ERRORS,
    ENCODE_ERRORS,
    decode_object,
    dumps_objects,
    loads,
)


class _DockerEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    """A Docker json-file line, every field typed: a field msgspec only skipped could hold
    what the line-by-line path refuses (a number beyond a double, invalid UTF-8)."""

    log: str
    stream: str
    time: str
    attrs: dict[str, str] = {}  # msgspec copies mutable defaults


_read_envelopes = msgspec.json.Decoder(_DockerEnvelope).decode_lines
_read_strings = msgspec.json.Decoder(list[str]).decode
_get_log = attrgetter("log")
_get_stream = attrgetter("stream")
_ends_with_newline = methodcaller("endswith", "\n")
_starts_with_brace = methodcaller("startswith", "{")
_starts_with_brace_bytes = methodcaller("startswith", b"{")
_starts_with_space = methodcaller("startswith", " ")
_as_text_object = partial(dict.fromkeys, ("log",))  # log -> {"log": log}, in C
#: Logs retried together after a batch that is not all strict JSON; a chunk that fails
#: again goes log by log.
RETRY_CHUNK_LINES = 256
# After a LF, the prefix of a CRI line whose time is one RFC 3339 token: the common shape,
# which can be neither a Docker JSON line nor read as CRI in another way.
_CRI_TIME = rb"\n[0-9][0-9A-Za-z:.+\-]* "
_CRI_FULL_PREFIX = re.compile(_CRI_TIME + rb"std(?:out|err) F ")
_CRI_PREFIX = re.compile(_CRI_TIME + rb"(std(?:out|err)) ([FP]) ")
_FULL_TAG = b"F"
_first, _second = itemgetter(0), itemgetter(1)


def _log_object(log: str) -> dict[str, Any]:
    decoded = decode_object(log)
    return {"log": log} if decoded is None else decoded


def _str_objects(logs: list[str]) -> tuple[list[dict[str, Any]], int] | None:
    """(each log decoded or wrapped, decode failures: logs that looked like an object but
    stay text)."""
    return _objects(logs, list(map(_starts_with_brace, logs)), _as_is)


def _bytes_objects(contents: list[bytes]) -> tuple[list[dict[str, Any]], int] | None:
    """_str_objects for UTF-8 contents without LF (msgspec reads the JSON ones as bytes,
    checking their UTF-8); None when a content is not valid UTF-8."""
    return _objects(contents, list(map(_starts_with_brace_bytes, contents)), _utf8)


def _as_is(logs: list[str]) -> list[str]:
    return logs


def _objects(
    logs: list[Any], starts: list[bool], to_text: Callable[[list[Any]], list[str] | None]
) -> tuple[list[dict[str, Any]], int] | None:
    found = _decode_all(list(compress(logs, starts)), to_text)
    texts = to_text(list(compress(logs, map(not_, starts))))
    if found is None or texts is None:
        return None
    decoded, failures = found
    objects, text_failures = _with_texts(starts, decoded, texts)
    return objects, failures + text_failures


def _decode_all(
    logs: list[Any], to_text: Callable[[list[Any]], list[str] | None]
) -> tuple[list[dict[str, Any]], int] | None:
    """(each log, all starting with ``{``, decoded or kept as text; decode failures).

    One C-level pass when all are strict JSON. Otherwise the pass is retried in chunks,
    and only a chunk that fails again goes line by line (with Fluent Bit's leniencies), so
    one bad line (a Python dict's repr, say) does not slow down the whole record.
    """
    try:
        return list(map(loads, logs)), 0
    except DECODE_ERRORS:
        pass
    decoded: list[dict[str, Any]] = []
    failures = 0
    for start in range(0, len(logs), RETRY_CHUNK_LINES):
        chunk = logs[start : start + RETRY_CHUNK_LINES]
        try:
            decoded.extend(list(map(loads, chunk)))
            continue
        except DECODE_ERRORS:
            pass
        texts = to_text(chunk)
        if texts is None:
            return None
        objects = list(map(_log_object, texts))
        failures += _stayed_text(texts, objects)
        decoded.extend(objects)
    return decoded, failures


def _utf8(contents: list[bytes]) -> list[str] | None:
    if not contents:
        return []
    try:
        return b"\n".join(contents).decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None


def _with_texts(
    starts: list[bool], decoded: list[Any], texts: list[str]
) -> tuple[list[dict[str, Any]], int]:
    """The decoded objects and the text logs, back in order."""
    if not texts:
        return decoded, 0
    if not any(map(_starts_with_space, texts)):
        return _interleave(starts, decoded, map(_as_text_object, texts)), 0
    wrapped = list(map(_log_object, texts))  # spaces may precede an object
    return _interleave(starts, decoded, wrapped), _stayed_text(texts, wrapped)


def _interleave(starts: list[bool], objects: Any, texts: Any) -> list[dict[str, Any]]:
    """objects where starts is True, texts elsewhere, in order (C-level selection)."""
    sources = (iter(texts), iter(objects))
    return list(map(next, map(sources.__getitem__, starts)))


def _stayed_text(logs: list[str], objects: list[dict[str, Any]]) -> int:
    """How many logs looked like a JSON object but were kept as text."""
    return sum(
        1
        for log, obj in zip(logs, objects, strict=True)
        if obj.get("log") is log and log.lstrip(" ").startswith("{")
    )


class Bulk(NamedTuple):
    """What a bulk path made of a batch of lines."""

    ndjson: bytes
    entries: int  # output lines: the input lines, less the pieces joined into others
    decode_failures: int


def _to_ndjson(found: tuple[list[dict[str, Any]], int] | None) -> Bulk | None:
    """The NDJSON for the objects, or None if they cannot be written."""
    if found is None:
        return None
    objects, failures = found
    try:
        return Bulk(dumps_objects(objects), len(objects), failures)
    except ENCODE_ERRORS:
        return None


def join_pieces(logs: list[Any], streams: list[Any], complete: list[bool]) -> list[Any]:
    """Partial pieces joined as envelope.parse_lines joins them: a piece waits, per stream,
    for the piece that completes its line; lines still open at the end come last, in the
    order of their last piece."""
    pending: dict[Any, Any] = {}
    joined = []
    for piece, stream, done in zip(logs, streams, complete, strict=True):
        head = pending.pop(stream, None)
        line = piece if head is None else head + piece
        if done:
            joined.append(line)
        else:
            pending[stream] = line
    joined += pending.values()
    return joined


def docker_texts(texts: list[bytes]) -> Bulk | None:
    """Seed-pipeline NDJSON from the JSON-escaped `log` strings of Docker lines (the texts
    column of podhose's wire format), decoded in one call, or None."""
    if not texts:
        return Bulk(b"", 0, 0)
    try:
        logs = _read_strings(b'["' + b'","'.join(texts) + b'"]')
    except DECODE_ERRORS:
        return None
    if len(logs) != len(texts) or not all(map(_ends_with_newline, logs)):
        return None  # a text that was not one JSON string; or a partial line's piece
    return _to_ndjson(_str_objects(logs))


def cri_texts(texts: list[bytes]) -> Bulk | None:
    """Seed-pipeline NDJSON from the contents of full CRI lines (the texts column of
    podhose's wire format), or None; the same rules as cri_lines."""
    joined = b"\n".join(texts)
    if b"\r" in joined or joined.count(b"\n") != len(texts) - 1:
        return None  # CR handling is the line-by-line path's; a text is one line
    return _to_ndjson(_bytes_objects(texts))


def docker_lines(line_count: int, body: bytes, *, join: bool = True) -> Bulk | None:
    """Seed-pipeline NDJSON for a body of `line_count` Docker json-file lines, or None.
    Partial pieces are joined; with ``join=False`` they make it None instead."""
    try:
        envelopes = _read_envelopes(body)
    except DECODE_ERRORS:  # not all Docker envelopes, or not all strict JSON
        return None
    if len(envelopes) != line_count:
        return None  # blank lines, which decode_lines skips
    logs = list(map(_get_log, envelopes))
    complete = list(map(_ends_with_newline, logs))
    if not all(complete):
        if not join:
            return None
        logs = join_pieces(logs, list(map(_get_stream, envelopes)), complete)
    return _to_ndjson(_str_objects(logs))


def cri_lines(line_count: int, body: bytes, *, join: bool = True) -> Bulk | None:
    """Seed-pipeline NDJSON for a body of `line_count` CRI lines, or None. Partial (`P`)
    pieces are joined; with ``join=False`` they make it None instead."""
    if b"\r" in body:
        if body.endswith(b"\r"):
            return None
        body = body.replace(b"\r\n", b"\n")  # the terminator, as strip_terminator does
    # Removing each line's prefix leaves the contents; one match per line means every line
    # had one. (A pattern starting with a literal LF is searched far faster than ^.)
    contents, prefixes = _CRI_FULL_PREFIX.subn(b"\n", b"\n" + body)
    if prefixes == line_count:
        return _to_ndjson(_bytes_objects(_cri_contents(contents)))
    if not join:
        return None
    marks = _CRI_PREFIX.findall(b"\n" + body)  # (stream, tag) of every line
    if len(marks) != line_count:
        return None  # not all CRI lines of the common shape
    contents = _cri_contents(_CRI_PREFIX.sub(b"\n", b"\n" + body))
    streams = list(map(_first, marks))
    complete = list(map(_FULL_TAG.__eq__, map(_second, marks)))
    return _to_ndjson(_bytes_objects(join_pieces(contents, streams, complete)))


def _cri_contents(stripped: bytes) -> list[bytes]:
    """The contents from ``LF content LF content ...``, the prefixes removed."""
    stripped = stripped[1:-1] if stripped.endswith(b"\n") else stripped[1:]
    return stripped.split(b"\n")
