"""Redriving: error objects read, their records put back into one delivery stream, objects
whose records were all accepted tagged done; a Summary of the run."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from podhose_redrive.error_objects import (
    MAX_OBJECT_BYTES,
    UnreadableObjectError,
    read_error_records,
)
from podhose_wire.firehose_limits import MAX_RECORD_BYTES, calls
from podhose_wire.put_batch import Answer, put_with_retries
from podhose_wire.retry_policy import backoff

DONE_TAG = ("podhose-redrive", "done")
SEND_ATTEMPTS = 8
BACKOFF_BASE = 0.2  # seconds: first retry after up to 0.2 s, doubling
BACKOFF_CAP = 5.0  # seconds


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
        wait = partial(backoff, base=BACKOFF_BASE, cap=BACKOFF_CAP)
        unsent = put_with_retries(self.firehose, self.stream, records, attempts=SEND_ATTEMPTS,
                                  wait=wait, on_answer=self._answered)  # fmt: skip
        if unsent:
            say(f"{len(unsent)} record(s) still failing after {SEND_ATTEMPTS} attempts")
        return len(unsent)

    def _answered(self, attempt: int, sent: list[bytes], answer: Answer) -> None:
        """Count what one call put; say why a call failed as a whole."""
        if answer.error is None:
            ok = answer.accepted(sent)
            self.summary.sent += len(ok)
            self.summary.bytes += sum(map(len, ok))
        elif answer.error.answered:
            say(f"PutRecordBatch answered without one result per record ({attempt + 1})")
        else:
            say(f"PutRecordBatch failed (attempt {attempt + 1}): {answer.error.exception}")


def say(message: str) -> None:
    """Progress and problems go to stderr; --dry-run's plan and the summary to stdout."""
    print(f"podhose-redrive: {message}", file=sys.stderr, flush=True)
