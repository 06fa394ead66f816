"""Run the handler on one sample event locally (no Docker, no AWS): ``make invoke``.

Usage: ``python -m devstack.invoke events/docker_seed.json``. Prints, per record,
its result and the decoded output lines (or the decoded original data when it failed).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

from devstack.lambda_context import LambdaContext
from transform_lambda import jsoncodec


def describe(response: dict) -> str:
    """Human-readable rendering of a handler response."""
    lines = []
    for record in response["records"]:
        meta = record.get("metadata")
        lines.append(f"== {record['recordId']}: {record['result']}" + (f" {meta}" if meta else ""))
        try:
            text = base64.b64decode(record.get("data") or b"").decode("utf-8", "replace")
        except ValueError:
            text = f"(not base64) {record['data']!r}"
        lines += ["   " + line for line in text.splitlines()]
    return "\n".join(lines)


def event_problem(event: object) -> str | None:
    """What keeps `event` from being a Firehose data-transformation event (None: nothing).

    >>> event_problem({"records": [{"recordId": "1"}]})
    'records[0] has no "data" string'
    """
    if not isinstance(event, dict):
        return "not a JSON object"
    records = event.get("records")
    if not isinstance(records, list):
        return 'no "records" list'
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            return f"records[{i}] is not an object"
        for key in ("recordId", "data"):
            if not isinstance(record.get(key), str):
                return f'records[{i}] has no "{key}" string'
    return None


def main(argv: list[str] | None = None) -> int:
    """Exit 0 with the rendering; 2 with one line when the event cannot be used."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m devstack.invoke EVENT.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        event = jsoncodec.loads(path.read_bytes())
        problem = event_problem(event)
    except OSError as error:
        problem = f"cannot read it: {error.strerror}"
    except ValueError as error:  # msgspec's DecodeError is a ValueError
        problem = f"not JSON: {error}"
    if problem is not None:
        print(f"invoke: error: {path}: {problem}", file=sys.stderr)
        return 2
    from transform_lambda.app import lambda_handler

    response = lambda_handler(event, LambdaContext())
    print(describe(response))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
