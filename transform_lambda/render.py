"""The line-by-line path: every rule, one line at a time, each entry rendered as JSON.

Each line goes through the seed Fluent Bit pipeline's steps (see settings.py):

1. parse the envelope (Docker json-file or CRI, detected per line; partials joined),
   then, when configured, join multi-line events (multiline.py);
2. decode ``log`` when it holds a JSON object;
3. keep only the listed keys;
4. lift the map under the lift key to the top level;

then optionally gets Kubernetes metadata, and is written as one compact JSON line.
bulk.py gives the same bytes for whole records of ordinary lines (path_choice.py).

Example:
    >>> from transform_lambda.settings import TransformSettings
    >>> body = b'2019-12-28T08:19:53Z stdout F {"a": 1}\\nplain'
    >>> ndjson, counts = render_lines(body, TransformSettings(), None)
    >>> ndjson, counts.lines_out
    (b'{"a":1}\\n{"log":"plain"}\\n', 2)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from transform_lambda import multiline
from transform_lambda.envelope import Entry, parse_lines, strip_terminator, text_entry
from transform_lambda.jsoncodec import decode_object, dumps_line
from transform_lambda.result import LineCounts, Output
from transform_lambda.settings import TransformSettings
from transform_lambda.wire_decoder import RecordHeader


def split_lines(body: bytes) -> list[bytes]:
    """Split on LF; an unterminated last line still counts as a line."""
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def render_lines(body: bytes, settings: TransformSettings, header: RecordHeader | None) -> Output:
    """The NDJSON of a record's lines (`body`, without its header) and their counts."""
    lines = split_lines(body)
    counts = LineCounts(lines_in=len(lines))
    if settings.parse_envelope:
        entries: Iterable[Entry] = parse_lines(lines)
    else:
        entries = (text_entry(strip_terminator(line)) for line in lines)
    if settings.multiline:
        join = multiline.joiner(
            settings.multiline, settings.multiline_start, settings.multiline_max_bytes
        )
        entries = join.join(entries)
    metadata = header.kubernetes() if header and settings.add_kubernetes_metadata else None
    out = [_render(entry, settings, metadata, counts) for entry in entries]
    counts.lines_out = len(out) - counts.without_kept_keys
    return b"".join(out), counts


def _render(
    entry: Entry,
    settings: TransformSettings,
    metadata: dict[str, str] | None,
    counts: LineCounts,
) -> bytes:
    """Steps 2-4 and metadata for one entry, as one JSON line (b"" when it is dropped)."""
    counts.invalid_utf8 += entry.invalid_utf8
    fields = entry.fields
    if settings.keep_keys and not any(key in fields for key in settings.keep_keys):
        # Nothing would be left: Fluent Bit writes no `{}` for such an entry (in a batch it
        # drops it), so neither do we.
        counts.without_kept_keys += 1
        return b""
    log = fields.get("log")
    decoded = decode_object(log) if settings.decode_json and isinstance(log, str) else None
    if decoded is None and isinstance(log, str) and log.lstrip(" ").startswith("{"):
        counts.decode_failures += 1
    if decoded is not None:
        line = dumps_line(_reshape({**fields, "log": decoded}, settings, metadata))
        if line is not None:
            return line
        counts.unencodable += 1
    line = dumps_line(_reshape(fields, settings, metadata))
    if line is None:  # e.g. a kept envelope key nested deeper than JSON encoders allow
        counts.unencodable += 1
        # str(log) can only fail to encode by a lone surrogate (from the stdlib's lenient
        # read): written as U+FFFD rather than losing the line.
        text = str(log).encode("utf-8", "replace").decode("utf-8")
        line = dumps_line({"log": text}) or b""
    return line


def _reshape(
    fields: dict[str, Any], settings: TransformSettings, metadata: dict[str, str] | None
) -> dict[str, Any]:
    """Steps 3 and 4 plus metadata: keep, lift, add ``kubernetes``."""
    if settings.keep_keys:
        fields = {key: value for key, value in fields.items() if key in settings.keep_keys}
    lifted = fields.get(settings.lift_key) if settings.lift_key else None
    if isinstance(lifted, dict):
        # The lifted keys win over same-named outer keys, as in Fluent Bit's output.
        outer = {k: v for k, v in fields.items() if k != settings.lift_key and k not in lifted}
        fields = outer | lifted
    if metadata is not None and "kubernetes" not in fields:
        fields = fields | {"kubernetes": metadata}
    return fields
