"""Strict JSON reading and writing with Fluent Bit's ``Decode_Field_As json`` rules.

msgspec does the work: it reads and writes integers of any size exactly (up to Python's
4,300-digit limit), refuses ``NaN``/``Infinity``, numbers beyond a double and lone
surrogates, and writes nothing that is not strict JSON. The standard library steps in only
where Fluent Bit is more lenient than strict JSON (raw control characters inside strings),
for the few numbers msgspec refuses that the standard library reads exactly (a minus sign
and 4,300 digits), and for nesting deeper than msgspec's recursion limit.

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
from typing import Any

import msgspec

_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
#: What msgspec raises for text it will not read (ValidationError, for a number out of
#: range, is a DecodeError) or nests too deeply.
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)
#: What msgspec raises for a value it will not write: lone surrogates, too deep nesting.
ENCODE_ERRORS = (msgspec.EncodeError, UnicodeEncodeError, RecursionError, TypeError)
_CONTROL_CHAR = re.compile(r"[\x00-\x1f]")

#: One strict JSON document from ``str`` or ``bytes``; raises one of DECODE_ERRORS.
loads = _DECODER.decode


def dumps_objects(objects: list[Any]) -> bytes:
    """NDJSON for many values in one call (compact, UTF-8 as is); raises one of
    ENCODE_ERRORS."""
    return _ENCODER.encode_lines(objects)


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


def loads_exact(text: str | bytes) -> Any:
    """Parse strict JSON keeping every number's value; raise ValueError when invalid."""
    try:
        return loads(text)
    except (msgspec.ValidationError, RecursionError):
        # A number msgspec will not hold, or nesting beyond its limit: the stdlib's rules.
        return _stdlib_loads(text)
    except msgspec.DecodeError as error:
        raise ValueError(str(error)) from None


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
    """One compact NDJSON line, or None when the value cannot be written as strict JSON
    (a lone surrogate, or nesting deeper than even the standard library writes)."""
    try:
        return _ENCODER.encode_lines((value,))
    except ENCODE_ERRORS:
        pass
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8") + b"\n"
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
