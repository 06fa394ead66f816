"""Strict JSON reading and writing with Fluent Bit's ``Decode_Field_As json`` rules.

orjson does the work; the standard library steps in only where orjson would change a
value (integers beyond 64 bits, which orjson rounds to floats) or where Fluent Bit is more
lenient than strict JSON (raw control characters inside strings). Nothing here emits
invalid JSON: no ``NaN``/``Infinity``, no lone surrogates.

Example:
    >>> decode_object('  {"a": 1}\\n')
    {'a': 1}
    >>> decode_object('\\t{"a": 1}') is None   # Fluent Bit skips only spaces
    True
    >>> dumps_line({"n": 18446744073709551617})
    b'{"n":18446744073709551617}\\n'
"""

from __future__ import annotations

import json
import math
import re
from functools import partial
from typing import Any

import orjson

# orjson reads integers exactly only within [-2**63, 2**64 - 1] and silently rounds the
# rest to floats: runs of 20+ digits, or 19 digits after a minus sign, may be outside.
# Mapping every digit to "0" then searching is ~15x faster than a regex.
_DIGITS_TO_ZERO_STR = str.maketrans("123456789", "000000000")
_DIGITS_TO_ZERO_BYTES = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN_STR, _NEGATIVE_RUN_STR = "0" * 20, "-" + "0" * 19
_LONG_RUN_BYTES, _NEGATIVE_RUN_BYTES = b"0" * 20, b"-" + b"0" * 19
_CONTROL_CHAR = re.compile(r"[\x00-\x1f]")

#: ``orjson.dumps`` with a trailing newline: one NDJSON line. (Slower per call than plain
#: ``orjson.dumps``; bulk paths join plain dumps with newlines instead.)
dumps_nl = partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)


def dumps_objects(objects: list[dict[str, Any]]) -> bytes:
    """NDJSON for many objects at once; raises orjson.JSONEncodeError like orjson.dumps.

    One ``orjson.dumps`` of the whole list is ~20x faster than one call per object. In
    ``[{..},{..}]`` the top-level separators are ``},{``; when that sequence occurs exactly
    ``len(objects) - 1`` times, every occurrence is a separator and becomes ``}\n{``.
    Otherwise (an array of objects, or a string holding ``},{``) each object is dumped
    alone.
    """
    if not objects:
        return b""
    inner = orjson.dumps(objects)[1:-1]
    if inner.count(b"},{") == len(objects) - 1:
        return inner.replace(b"},{", b"}\n{") + b"\n"
    return b"\n".join(map(orjson.dumps, objects)) + b"\n"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} overflows a double")
    return value


def _stdlib_loads(text: str | bytes, *, strict: bool = True) -> Any:
    """json.loads that keeps integers exact but refuses NaN, Infinity and overflow."""
    try:
        return json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, strict=strict
        )
    except RecursionError:
        raise ValueError("nesting too deep") from None


def has_long_digits(text: str | bytes) -> bool:
    """True when ``text`` has a digit run orjson might not read exactly."""
    if isinstance(text, bytes):
        zeros = text.translate(_DIGITS_TO_ZERO_BYTES)
        return _LONG_RUN_BYTES in zeros or _NEGATIVE_RUN_BYTES in zeros
    zeros_str = text.translate(_DIGITS_TO_ZERO_STR)
    return _LONG_RUN_STR in zeros_str or _NEGATIVE_RUN_STR in zeros_str


def long_digit_lines(body: bytes) -> set[int]:
    """Indexes of the LF-separated lines of ``body`` with a digit run orjson might misread.

    >>> sorted(long_digit_lines(b'{"a":1}\\n{"id":123456789012345678901}\\n{"b":-1}\\n'))
    [1]
    """
    zeros = body.translate(_DIGITS_TO_ZERO_BYTES)
    found: set[int] = set()
    for run in (_LONG_RUN_BYTES, _NEGATIVE_RUN_BYTES):
        pos, line, counted = zeros.find(run), 0, 0
        while pos >= 0:
            line += zeros.count(b"\n", counted, pos)
            found.add(line)
            counted = zeros.find(b"\n", pos)
            if counted < 0:
                break
            pos = zeros.find(run, counted)
    return found


def loads_exact(text: str | bytes) -> Any:
    """Parse strict JSON keeping every number's value; raise ValueError when invalid."""
    if has_long_digits(text):
        return _stdlib_loads(text)
    return orjson.loads(text)


def decode_object(text: str) -> dict[str, Any] | None:
    """Decode ``text`` as Fluent Bit decodes a ``log`` field; None means keep the text.

    Only a JSON object is decoded. Leading spaces (not tabs or newlines) are skipped;
    trailing JSON whitespace (``\\r\\n`` included) is allowed; anything else is not.
    Raw control characters inside strings are accepted, as Fluent Bit's tokenizer does.
    """
    stripped = text.lstrip(" ")
    if not stripped.startswith("{"):
        return None
    try:
        value = loads_exact(stripped)
    except ValueError:
        if _CONTROL_CHAR.search(stripped.rstrip(" \t\r\n")) is None:
            return None
        try:
            value = _stdlib_loads(stripped, strict=False)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def dumps_line(value: dict[str, Any]) -> bytes | None:
    """One compact NDJSON line, or None when the value cannot be written as JSON.

    Falls back to the standard library for integers beyond 64 bits; returns None for
    nesting deeper than either encoder supports or strings with lone surrogates.
    """
    try:
        return dumps_nl(value)
    except orjson.JSONEncodeError:
        pass
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8") + b"\n"
    except (ValueError, RecursionError, UnicodeEncodeError):
        return None
