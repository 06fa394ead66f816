"""Checking transform output against oracle cases (../shared/fluentbit/README.md rules).

A case passes when its input, fed as the data of one Firehose record to the handler,
comes back ``Ok`` (``Dropped`` when the accepted output is empty) with newline-terminated
NDJSON whose lines equal one of the ``accept`` lists line by line as JSON values.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
SHARED_CASES = REPO.parent / "shared" / "fluentbit" / "cases.jsonl"
OWN_CASES = REPO / "tests" / "cases" / "podhose_cases.jsonl"


def load_cases(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"oracle corpus missing: {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def case_input(case: dict[str, Any]) -> bytes:
    if "input_b64" in case:
        return base64.b64decode(case["input_b64"])
    return case["input"].encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-strict JSON constant {name}")


def strict_json(line: str) -> Any:
    """Parse one output line as strict JSON (no NaN/Infinity, valid UTF-8, no lone surrogates)."""
    orjson.loads(line.encode("utf-8"))  # rejects lone surrogates and NaN/Infinity
    return json.loads(line, parse_constant=_reject_constant)


def same_value(a: Any, b: Any) -> bool:
    """JSON value equality that tells booleans from numbers, and keys and order of arrays."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        both_float = isinstance(a, float) and isinstance(b, float)
        if both_float and math.copysign(1, a) != math.copysign(1, b):
            return False
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _expected(line: str) -> Any:
    # Accepted lines are parsed like the corpus README says (json.loads); a Fluent Bit
    # line may hold a double just past the largest one, which orjson would refuse.
    return json.loads(line, parse_constant=_reject_constant)


def output_matches(data: bytes, accept: list[list[str]]) -> bool:
    """True when ``data`` (NDJSON) equals one of the accepted outputs."""
    text = data.decode("utf-8")
    if text and not text.endswith("\n"):
        return False
    got = [strict_json(line) for line in text.split("\n")[:-1]] if text else []
    return any(
        len(lines) == len(got)
        and all(same_value(_expected(want), value) for want, value in zip(lines, got, strict=True))
        for lines in accept
    )
