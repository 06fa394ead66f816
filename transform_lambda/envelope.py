"""Step 1: read each log-file line as Docker json-file, CRI, or plain text.

The format is detected per line, as Fluent Bit's ``multiline.parser docker, cri`` does:

- Docker json-file: ``{"log":"...\\n","stream":"stdout","time":"..."}`` (any JSON object);
- CRI: ``<time> <stdout|stderr> <F|P> <content>`` (Fluent Bit's own CRI regex);
- anything else: ``{"log": "<the line>"}``.

Partial lines are joined per stream within a record: CRI ``P`` pieces up to the ``F``
piece, Docker entries whose ``log`` lacks the trailing newline (the 16 KB split) up to
the one that has it. A piece still open at the end of the record is emitted as it is.

Example:
    >>> [e.fields for e in parse_lines([b'2019-12-28T08:19:53Z stdout F hi'])]
    [{'time': '2019-12-28T08:19:53Z', 'stream': 'stdout', '_p': 'F', 'log': 'hi'}]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from transform_lambda.jsoncodec import loads_exact

# Fluent Bit's FLB_ML_CRI_REGEX: ^(?<time>.+?) (?<stream>stdout|stderr) (?<_p>F|P) (?<log>.*)$
_CRI_LINE = re.compile(rb"(.+?) (stdout|stderr) ([FP]) (.*)", re.DOTALL)


@dataclass(slots=True)
class Entry:
    """One logical log entry: the envelope's fields, ``log`` holding the content."""

    fields: dict[str, Any]
    invalid_utf8: bool = False
    #: A CRI piece's content as the file held it. Pieces are joined as bytes, then decoded:
    #: the runtime cuts a long line at a byte count, which can split a UTF-8 character.
    raw_log: bytes | None = None


def strip_terminator(line: bytes) -> bytes:
    """Drop one trailing CR: the line terminator is LF or CRLF, nothing more."""
    return line[:-1] if line.endswith(b"\r") else line


def _text(raw: bytes) -> tuple[str, bool]:
    """Decode UTF-8, replacing invalid bytes with U+FFFD; report whether any were."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def _docker_fields(line: bytes) -> tuple[dict[str, Any] | None, bool]:
    try:
        value = loads_exact(line)
    except ValueError:
        text, repaired = _text(line)
        if not repaired:
            return None, False
        try:
            value = loads_exact(text)
        except ValueError:
            return None, False
        return (value, True) if isinstance(value, dict) else (None, False)
    return (value, False) if isinstance(value, dict) else (None, False)


def parse_line(raw: bytes) -> tuple[str, Entry]:
    """Classify one line (terminator removed): ``("docker"|"cri"|"text", entry)``."""
    line = strip_terminator(raw)
    if line.lstrip()[:1] == b"{":
        fields, repaired = _docker_fields(line)
        if fields is not None:
            return "docker", Entry(fields, repaired)
    match = _CRI_LINE.fullmatch(line)
    if match is not None:
        time, stream, tag, content = match.groups()
        text, repaired = _text(content)
        fields = {"time": time.decode("utf-8", "replace"), "stream": stream.decode()}
        fields |= {"_p": tag.decode(), "log": text}
        return "cri", Entry(fields, repaired, content)
    return "text", text_entry(line)


def text_entry(line: bytes) -> Entry:
    """A line that is not read as an envelope: ``{"log": "<the line>"}``."""
    text, repaired = _text(line)
    return Entry({"log": text}, repaired)


def _is_docker_partial(entry: Entry) -> bool:
    log = entry.fields.get("log")
    return isinstance(log, str) and not log.endswith("\n")


def _stream_of(entry: Entry) -> str:
    stream = entry.fields.get("stream")
    return stream if isinstance(stream, str) else ""


def parse_lines(lines: Iterable[bytes]) -> Iterator[Entry]:
    """Parse lines and join partial pieces; yields one Entry per logical line."""
    open_cri: dict[str, Entry] = {}
    open_docker: dict[str, Entry] = {}
    for raw in lines:
        kind, entry = parse_line(raw)
        if kind == "cri":
            yield from _join(open_cri, entry, complete=entry.fields["_p"] == "F")
        elif kind == "docker" and isinstance(entry.fields.get("log"), str):
            yield from _join(open_docker, entry, complete=not _is_docker_partial(entry))
        else:
            yield entry
    yield from map(_decoded_cri, open_cri.values())
    yield from open_docker.values()


def _join(pending: dict[str, Entry], entry: Entry, *, complete: bool) -> Iterator[Entry]:
    stream = _stream_of(entry)
    head = pending.pop(stream, None)
    if head is not None:
        if head.raw_log is not None and entry.raw_log is not None:
            head.raw_log += entry.raw_log
            head.fields["log"] = None  # decoded once the line is complete
            head.fields["_p"] = entry.fields["_p"]
        else:
            head.fields["log"] += entry.fields["log"]
            head.invalid_utf8 = head.invalid_utf8 or entry.invalid_utf8
        entry = head
    if complete:
        yield _decoded_cri(entry)
    else:
        pending[stream] = entry


def _decoded_cri(entry: Entry) -> Entry:
    """The entry with its joined CRI content decoded (once, whatever the piece count)."""
    if entry.raw_log is not None and entry.fields["log"] is None:
        entry.fields["log"], entry.invalid_utf8 = _text(entry.raw_log)
    return entry
