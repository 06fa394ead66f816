"""The forwarder's settings as a JSON Schema: the Helm chart's `config` values.

Each option of forwarder/config.py's OPTIONS becomes a camelCase key (`--max-buffer-bytes` ->
`maxBufferBytes`, the chart's ConfigMap turns it back into `PODHOSE_MAX_BUFFER_BYTES`),
accepting what the option's parser accepts: typed values with their ranges (numbers must be
numbers: a text form would escape the range), booleans also as the words the forwarder reads,
lists of globs as lists or comma-separated text. Rules between two settings (`--multiline
regex` needs `--multiline-start`, the buffer at least twice the line limit...) are the
forwarder's: it exits 2 at start naming them. The chart's values.schema.json carries it;
`--write` refreshes it there and a test checks it is current.

    >>> option_key(next(o for o in OPTIONS if o.flag == "--zstd-catch-up-level"))
    'zstdCatchUpLevel'
    >>> config_schema()["properties"]["zstdLevel"]["anyOf"][0]
    {'type': 'integer', 'minimum': 1, 'maximum': 19}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from forwarder.config import (
    FALSE_WORDS,
    OPTIONS,
    TRUE_WORDS,
    Option,
    namespace_glob,
    stream_name,
)

# Set elsewhere in the chart: the port by `metricsPort` (probes, scrape annotations and
# NetworkPolicy use it too), routes by the `routes` list, pod metadata by `podMetadata`
# (with its RBAC, token and NetworkPolicy rule).
CHART_OWNED = {
    "--http-port": "metricsPort",
    "--route": "routes",
    "--kubernetes-metadata": "podMetadata.enabled",
    "--node-name": "podMetadata.enabled",
    "--kubernetes-annotations": "podMetadata.annotations",
}
CHART_SCHEMA = Path(__file__).resolve().parents[1] / "charts" / "podhose" / "values.schema.json"
# A boolean as the words the forwarder reads (config.TRUE_WORDS, FALSE_WORDS).
BOOLEAN_TEXT = {
    "type": "string",
    "pattern": rf"^\s*(?i:{'|'.join(sorted(TRUE_WORDS | FALSE_WORDS))})\s*$",
}
# One glob of a list: the ConfigMap joins the list with commas.
LIST_ITEM = {"type": "string", "pattern": r"^[^,]*[^,\s][^,]*$"}


def option_key(opt: Option) -> str:
    """The option's key in the chart's `config`: its flag in camelCase."""
    first, *rest = opt.flag.removeprefix("--").split("-")
    return first + "".join(word.capitalize() for word in rest)


def option_schema(opt: Option) -> dict[str, Any]:
    """What the option accepts: its parser's schema, or the same as text; a list for globs."""
    accepted: dict[str, Any] = dict(opt.parse.json_schema)  # type: ignore[attr-defined]
    forms = [accepted]
    if accepted.get("type") == "boolean":
        forms.append(BOOLEAN_TEXT)
    if opt.repeatable:
        forms.append({"type": "array", "items": LIST_ITEM})
    default = ",".join(opt.default) if isinstance(opt.default, list) else opt.default
    return {"description": f"{opt.help} ({opt.env}; default {default})", "anyOf": forms}


def config_schema() -> dict[str, Any]:
    """The schema of the chart's `config`: every option but those the chart sets itself."""
    properties = {
        option_key(opt): option_schema(opt) for opt in OPTIONS if opt.flag not in CHART_OWNED
    }
    return {
        "type": "object",
        "description": "Forwarder settings, one PODHOSE_* variable each (values.yaml).",
        "additionalProperties": False,
        "required": ["deliveryStream"],
        "properties": properties,
    }


def chart_schema_text(current: str) -> str:
    """The chart's values.schema.json with `config` replaced by config_schema(), and each
    route's stream checked as --delivery-stream is."""
    schema = json.loads(current)
    schema["properties"]["config"] = config_schema()
    route = schema["properties"]["routes"]["items"]["properties"]
    route["deliveryStream"] = dict(stream_name.json_schema)  # type: ignore[attr-defined]
    route["namespaces"] = {
        **namespace_glob.json_schema,  # type: ignore[attr-defined]
        "description": "A namespace glob: a-z, 0-9, '-' and the glob's * ? [ ] !.",
    }
    return json.dumps(schema, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"refresh {CHART_SCHEMA}")
    args = parser.parse_args()
    text = chart_schema_text(CHART_SCHEMA.read_text())
    if args.write:
        CHART_SCHEMA.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
