"""Regenerate the sample Firehose events in events/: ``python events/generate.py``.

Each event has the shape Firehose sends a data-transformation Lambda; ``make invoke
EVENT=events/<file>.json`` or ``sam local invoke TransformFunction -e events/<file>.json``
runs the handler on it.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

from forwarder.wire_encoder import RecordEncoder

HERE = Path(__file__).parent
STREAM_ARN = "arn:aws:firehose:us-east-1:123456789012:deliverystream/podhose"
TIME = "2019-12-28T08:19:53.704659587Z"
SOURCE = b"fakenerd-7d4b9c8f6-x2x9q_default_fakenerd-" + b"0123456789abcdef" * 4 + b".log"


ZSTD = RecordEncoder("zstd", 1, 1)


def docker_line(log: str, stream: str = "stdout") -> bytes:
    entry = {"log": log, "stream": stream, "time": TIME}
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def cri_line(content: str, tag: str = "F", stream: str = "stdout") -> bytes:
    return f"{TIME} {stream} {tag} {content}\n".encode()


def fargate_record(log: str, stream: str = "stdout", tag: str = "F") -> bytes:
    """What EKS on Fargate's log router (Fluent Bit's kinesis_firehose output) puts: one JSON
    object per record, no newline: the CRI parser's fields, the kubernetes filter's map."""
    entry = {
        "log": log,
        "stream": stream,
        "logtag": tag,
        "time": TIME,
        "kubernetes": {
            "pod_name": "fakenerd-7d4b9c8f6-x2x9q",
            "namespace_name": "default",
            "container_name": "fakenerd",
            "host": "fargate-ip-192-0-2-10.ec2.internal",
        },
    }
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()


def app_json(ms: int) -> str:
    return json.dumps({"name": "fakenerd", "time_ms": ms})


def event(records: list[bytes | str]) -> dict:
    def encode(data: bytes | str) -> str:
        return data if isinstance(data, str) else base64.b64encode(data).decode()

    return {
        "invocationId": "invoked-locally",
        "deliveryStreamArn": STREAM_ARN,
        "region": "us-east-1",
        "records": [
            {
                "recordId": f"4959{i:060d}",
                "approximateArrivalTimestamp": 1577521193704 + i,
                "data": encode(data),
            }
            for i, data in enumerate(records)
        ],
    }


def seed_lines(count: int, start_ms: int = 1577521193704) -> list[bytes]:
    return [docker_line(app_json(start_ms + 1000 * i) + "\n") for i in range(count)]


EVENTS: dict[str, list[bytes | str]] = {
    # The seed app's stdout through Docker json-file, one line per record (Fluent Bit's shape).
    "docker_seed": seed_lines(3),
    # containerd: full lines, and a line split into P + F pieces.
    "cri": [
        cri_line(app_json(1577521193704)),
        cri_line("plain text from containerd"),
        cri_line('{"name": "fakenerd", "msg": "split ', tag="P") + cri_line('in two"}'),
    ],
    # Plain text, JSON objects, arrays, scalars and invalid JSON side by side.
    "mixed": [
        docker_line("hello world\n"),
        docker_line(app_json(1577521193704) + "\n"),
        docker_line("[1, 2, 3]\n"),
        docker_line('{"broken": \n'),
        b"a plain line that is not docker JSON\n",
    ],
    # What the forwarder sends with compression off: many lines of one file in one record.
    "packed": [b"".join(seed_lines(50))],
    # What `--compression gzip` (and forwarders before zstd) send: a gzip-compressed record.
    "gzip": [gzip.compress(b"".join(seed_lines(200)), mtime=0)],
    # The forwarder's default: the envelope in columns, zstd-compressed (wire format).
    "zstd_columns": [ZSTD.encode(ZSTD.header(SOURCE.decode()), b"".join(seed_lines(200)))],
    # A record with the podhose source header (docs/architecture.md, "Record wire format").
    "source_header": [b"\x1epodhose/1 src=" + SOURCE + b"\n" + b"".join(seed_lines(3))],
    # EKS on Fargate's log router sending to the same stream (docs/deploy.md#eks-on-fargate).
    "fargate": [
        *(fargate_record(app_json(1577521193704 + 1000 * i)) for i in range(3)),
        fargate_record("plain text on stderr", stream="stderr"),
    ],
    # Records that cannot be read (ProcessingFailed) or hold odd bytes (Ok, repaired).
    "malformed": [
        "not base64!",
        b"\x1f\x8b\x08\x00not really gzip",
        b"\x28\xb5\x2f\xfdnot really zstd",
        b"\x1epodhose/1 enc=cols9\nan encoding this transform does not know\n",
        b"",
        cri_line("café and a stray byte:") + b"\xff\xfe raw invalid utf-8\n",
    ],
}


def main() -> None:
    for name, records in EVENTS.items():
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(event(records), indent=2) + "\n")
        print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
