"""podhose-redrive: send the records Firehose could not process back into the stream.

Firehose writes records its transform answered ``ProcessingFailed`` (or that failed
delivery) as error objects under the bucket's error prefix: JSON lines, gzip or not, each
with the original record base64 in ``rawData``. This reads those objects and puts the
original records back with PutRecordBatch, within the API limits, resending only the
entries that failed, with backoff. An object whose records were all accepted is tagged
``podhose-redrive=done`` (the object is left where it is) and skipped by later runs.

    podhose-redrive s3://BUCKET/errors/ --delivery-stream NAME [--dry-run]

Exit codes: 0 everything found was sent (or there was nothing to send); 1 some records
could not be sent (their objects stay untagged: run again); 2 usage error; 3 some objects or
lines could not be read (each reported; the rest of the object is sent, the object left
untagged) and everything else was sent.

Limits: an object may hold at most MAX_OBJECT_BYTES, stored or decompressed (a larger one is
reported as unreadable, never read whole into memory); an empty rawData is skipped (counted
as `empty`: there is nothing to send).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import random
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from forwarder.config import region, url

MAX_RECORDS_PER_CALL = 500
MAX_RECORD_BYTES = 1_024_000  # "1,000 KiB" per record, before base64
MAX_CALL_BYTES = 4 * 1024 * 1024  # the whole request; counted on the base64 form
DONE_TAG = ("podhose-redrive", "done")
SEND_ATTEMPTS = 8
MAX_OBJECT_BYTES = 256 * 1024 * 1024  # an error object, stored or decompressed
BACKOFF_CAP = 5.0  # seconds


class UnreadableObjectError(ValueError):
    """An error object that is not Firehose's error-record JSON lines."""


@dataclass
class Summary:
    """What a run did."""

    objects: int = 0
    done_before: int = 0
    unreadable: list[str] = field(default_factory=list)
    records: int = 0
    sent: int = 0
    unsent: int = 0
    oversize: int = 0
    empty: int = 0
    unreadable_lines: int = 0
    bytes: int = 0

    def exit_code(self) -> int:
        """0 all sent; 1 some records not sent; 3 objects or lines unreadable."""
        if self.unsent or self.oversize:
            return 1
        return 3 if self.unreadable or self.unreadable_lines else 0


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``.

    >>> parse_s3_url("s3://logs/errors/processing-failed/")
    ('logs', 'errors/processing-failed/')
    """
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix


def read_error_records(body: bytes) -> tuple[list[bytes], list[str]]:
    """(the original records (rawData) of one error object, gzip-compressed or not, what is
    wrong with each line that cannot be read); raise UnreadableObjectError when the object as
    a whole cannot be read (corrupt gzip, over MAX_OBJECT_BYTES decompressed)."""
    if body[:2] == b"\x1f\x8b":
        body = gunzip(body)
    records, problems = [], []
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            records.append(base64.b64decode(entry["rawData"], validate=True))
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as error:
            problems.append(f"line {number}: {type(error).__name__}: {str(error)[:200]}")
    return records, problems


def gunzip(body: bytes) -> bytes:
    """Every gzip member of `body`, refusing more than MAX_OBJECT_BYTES."""
    out, left = [], MAX_OBJECT_BYTES
    try:
        while body:
            inflater = zlib.decompressobj(wbits=31)
            out.append(inflater.decompress(body, left + 1))
            left -= len(out[-1])
            if left < 0 or inflater.unconsumed_tail:
                raise UnreadableObjectError(f"decompresses to over {MAX_OBJECT_BYTES} bytes")
            if not inflater.eof:
                raise UnreadableObjectError("corrupt gzip: truncated")
            body = inflater.unused_data.lstrip(b"\x00")
    except zlib.error as error:
        raise UnreadableObjectError(f"corrupt gzip: {error}") from None
    return b"".join(out)


def calls(records: list[bytes]) -> Iterator[list[bytes]]:
    """Records grouped into PutRecordBatch calls within the API's limits."""
    call: list[bytes] = []
    size = 0
    for record in records:
        cost = (len(record) + 2) // 3 * 4
        if call and (len(call) == MAX_RECORDS_PER_CALL or size + cost > MAX_CALL_BYTES):
            yield call
            call, size = [], 0
        call.append(record)
        size += cost
    if call:
        yield call


class Redriver:
    """Reads error objects and puts their records back into one delivery stream."""

    def __init__(self, s3: Any, firehose: Any, stream: str, dry_run: bool) -> None:
        self.s3 = s3
        self.firehose = firehose
        self.stream = stream
        self.dry_run = dry_run
        self.summary = Summary()

    def run(self, bucket: str, prefix: str) -> Summary:
        """Redrive every error object under the prefix; return the summary."""
        for key in self._keys(bucket, prefix):
            self.summary.objects += 1
            if self._done(bucket, key):
                self.summary.done_before += 1
                continue
            self._object(bucket, key)
            if self.summary.objects % 10 == 0:
                say(f"progress: {self.summary.objects} objects, {self.summary.sent} records sent")
        return self.summary

    def _keys(self, bucket: str, prefix: str) -> Iterator[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    def _done(self, bucket: str, key: str) -> bool:
        tags = self.s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        return {"Key": DONE_TAG[0], "Value": DONE_TAG[1]} in tags

    def _object(self, bucket: str, key: str) -> None:
        try:
            records, problems = read_error_records(self._body(bucket, key))
        except UnreadableObjectError as error:
            say(f"unreadable object skipped, left in place: s3://{bucket}/{key}: {error}")
            self.summary.unreadable.append(key)
            return
        for problem in problems:
            say(f"unreadable line skipped (object left untagged): s3://{bucket}/{key}: {problem}")
        self.summary.unreadable_lines += len(problems)
        empty = sum(1 for r in records if not r)
        sendable = [r for r in records if 0 < len(r) <= MAX_RECORD_BYTES]
        oversize = len(records) - len(sendable) - empty
        self.summary.records += len(records)
        self.summary.oversize += oversize
        self.summary.empty += empty
        if oversize:
            say(f"{oversize} record(s) over {MAX_RECORD_BYTES} bytes cannot be sent: {key}")
        if empty:
            say(f"{empty} empty record(s) skipped (nothing to send): {key}")
        if self.dry_run:
            size = sum(map(len, sendable))
            print(f"would send {len(sendable)} records ({size} bytes) from s3://{bucket}/{key}")
            self.summary.bytes += size
            return
        unsent = sum(self._send(call) for call in calls(sendable))
        self.summary.unsent += unsent
        if unsent == 0 and oversize == 0 and not problems:
            self.s3.put_object_tagging(
                Bucket=bucket,
                Key=key,
                Tagging={"TagSet": [{"Key": DONE_TAG[0], "Value": DONE_TAG[1]}]},
            )

    def _body(self, bucket: str, key: str) -> bytes:
        """The object's bytes, if it holds at most MAX_OBJECT_BYTES."""
        response = self.s3.get_object(Bucket=bucket, Key=key)
        if response.get("ContentLength", 0) > MAX_OBJECT_BYTES:
            response["Body"].close()
            raise UnreadableObjectError(f"{response['ContentLength']} bytes: over the limit")
        return response["Body"].read()

    def _send(self, records: list[bytes]) -> int:
        """Put one call's records, resending failed entries; return how many stayed unsent."""
        for attempt in range(SEND_ATTEMPTS):
            try:
                response = self.firehose.put_record_batch(
                    DeliveryStreamName=self.stream, Records=[{"Data": r} for r in records]
                )
            except (ClientError, BotoCoreError, OSError) as error:
                say(f"PutRecordBatch failed (attempt {attempt + 1}): {error}")
            else:
                results = response.get("RequestResponses")
                if not isinstance(results, list) or len(results) != len(records):
                    say(f"PutRecordBatch answered without one result per record ({attempt + 1})")
                    time.sleep(random.uniform(0, min(BACKOFF_CAP, 0.2 * 2**attempt)))
                    continue
                failed = [bool(res.get("ErrorCode")) for res in results]
                ok = [r for r, bad in zip(records, failed, strict=True) if not bad]
                self.summary.sent += len(ok)
                self.summary.bytes += sum(map(len, ok))
                records = [r for r, bad in zip(records, failed, strict=True) if bad]
                if not records:
                    return 0
            time.sleep(random.uniform(0, min(BACKOFF_CAP, 0.2 * 2**attempt)))
        say(f"{len(records)} record(s) still failing after {SEND_ATTEMPTS} attempts")
        return len(records)


def say(message: str) -> None:
    """Progress and problems go to stderr; --dry-run's plan and the summary to stdout."""
    print(f"podhose-redrive: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="podhose-redrive", description=__doc__.splitlines()[0])
    parser.add_argument("url", metavar="s3://BUCKET/PREFIX", help="where the error objects are")
    parser.add_argument("--delivery-stream", required=True, metavar="NAME")
    parser.add_argument("--region", default=None, type=_checked(region),
                        help="else boto3's chain, else us-east-1")  # fmt: skip
    parser.add_argument("--endpoint-url", default=None, type=_checked(url),
                        help="one endpoint for S3 and Firehose")  # fmt: skip
    parser.add_argument("--s3-endpoint-url", default=None, type=_checked(url),
                        help="S3 endpoint (over --endpoint-url)")  # fmt: skip
    parser.add_argument("--firehose-endpoint-url", default=None, type=_checked(url),
                        help="Firehose endpoint (over --endpoint-url)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="send nothing, tag nothing")
    return parser


def _checked(parse: Callable[[str], str]) -> Callable[[str], str]:
    """argparse's type from the forwarder's parser of the same value (one rule each)."""

    def check(text: str) -> str:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return check


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        bucket, prefix = parse_s3_url(args.url)
    except ValueError as error:
        parser.error(str(error))
    session = boto3.session.Session(region_name=args.region)
    region = session.region_name or "us-east-1"
    config = BotoConfig(retries={"total_max_attempts": 3, "mode": "standard"})
    s3 = session.client("s3", region_name=region, config=config,
                        endpoint_url=args.s3_endpoint_url or args.endpoint_url)  # fmt: skip
    firehose_url = args.firehose_endpoint_url or args.endpoint_url
    firehose = session.client("firehose", region_name=region, endpoint_url=firehose_url,
                              config=BotoConfig(retries={"total_max_attempts": 1}))  # fmt: skip
    redriver = Redriver(s3, firehose, args.delivery_stream, args.dry_run)
    try:
        summary = redriver.run(bucket, prefix)
    except (ClientError, BotoCoreError) as error:
        say(f"cannot list or read s3://{bucket}/{prefix}: {error}")
        return 1
    verb = "would send" if args.dry_run else "sent"
    count = summary.records - summary.oversize if args.dry_run else summary.sent
    print(
        f"{summary.objects} objects ({summary.done_before} done before, "
        f"{len(summary.unreadable)} unreadable); {summary.records} records: {verb} {count} "
        f"({summary.bytes} bytes), {summary.unsent} unsent, {summary.oversize} oversize, "
        f"{summary.empty} empty; {summary.unreadable_lines} unreadable lines"
    )
    return summary.exit_code()
