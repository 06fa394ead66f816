"""One PutRecordBatch call with its answer classified, and the retry loop around it.

`put_record_batch` makes one call and never raises: the answer is accepted records, records
failed one by one inside a 200 answer (``ErrorCode``), or a failed call — an error answer
(botocore's ClientError), a 200 answer of a shape Firehose never sends (no result per record,
or one that cannot be parsed), a connection error or timeout, or anything unexpected — in
which case every record is to be sent again. `put_with_retries` resends only the failed
records, with jittered backoff, a fixed number of times.

The client is duck-typed (boto3's, or a stand-in); botocore's exception classes are imported
only once a call has raised, so importing this module costs nothing.

    >>> class Fake:
    ...     def put_record_batch(self, DeliveryStreamName, Records):
    ...         return {"RequestResponses": [{"RecordId": "1"}, {"ErrorCode": "X"}]}
    >>> answer = put_record_batch(Fake(), "logs", [b"a", b"b"])
    >>> answer.accepted([b"a", b"b"]), answer.failed([b"a", b"b"]), answer.error
    ([b'a'], [b'b'], None)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from podhose_wire.retry_policy import Kind, backoff, classify

T = TypeVar("T")
MALFORMED = "MalformedResponse"  # the error code of an answer of a shape Firehose never sends


class FirehoseClient(Protocol):
    def put_record_batch(self, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class CallError:
    """Why a call failed as a whole."""

    code: str  # the error code, MALFORMED, or the exception's class name
    status: int | None  # the HTTP status of an error answer
    message: str
    kind: Kind
    exception: BaseException | None = None  # None: a 200 answer without one result per record
    unexpected: bool = False  # an exception that is no error answer or connection error

    @property
    def answered(self) -> bool:
        """Firehose answered 200 (without one result per record)."""
        return self.exception is None


@dataclass(frozen=True)
class Answer:
    """What one PutRecordBatch call answered: a call error, or a code per record ("" accepted)."""

    error: CallError | None = None
    codes: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()

    def failed(self, items: Sequence[T]) -> list[T]:
        """The items (one per record sent) to send again."""
        if self.error is not None:
            return list(items)
        return [item for item, code in zip(items, self.codes, strict=True) if code]

    def accepted(self, items: Sequence[T]) -> list[T]:
        """The items (one per record sent) Firehose accepted."""
        if self.error is not None:
            return []
        return [item for item, code in zip(items, self.codes, strict=True) if not code]


def put_record_batch(client: FirehoseClient, stream: str, datas: Sequence[bytes]) -> Answer:
    """One PutRecordBatch call of `datas` to `stream`, its answer classified."""
    try:
        response = client.put_record_batch(
            DeliveryStreamName=stream, Records=[{"Data": data} for data in datas]
        )
    except Exception as exc:
        return Answer(call_error(exc))
    results = response.get("RequestResponses") if isinstance(response, dict) else None
    if not isinstance(results, list) or len(results) != len(datas):
        got = len(results) if isinstance(results, list) else "no"
        message = f"200 answer with {got} responses for {len(datas)} records"
        return Answer(CallError(MALFORMED, None, message, classify(MALFORMED, None)))
    codes, messages = [], []
    for result in results:
        if isinstance(result, dict):
            codes.append(str(result.get("ErrorCode") or ""))
            messages.append(str(result.get("ErrorMessage", "")))
        else:
            codes.append(MALFORMED)
            messages.append("")
    return Answer(None, tuple(codes), tuple(messages))


def call_error(exc: Exception) -> CallError:
    """The classified error of a call that raised `exc`."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message") or exc)
        return CallError(code, status, message, classify(code, status), exc)
    if isinstance(exc, ResponseParserError):  # a 200 (or other) answer that is not Firehose's
        return CallError(MALFORMED, None, str(exc)[:200], classify(MALFORMED, None), exc)
    code = type(exc).__name__
    unexpected = not isinstance(exc, BotoCoreError | OSError)  # connection errors, timeouts
    return CallError(code, None, str(exc), classify(code, None), exc, unexpected)


def put_with_retries(
    client: FirehoseClient,
    stream: str,
    datas: Sequence[bytes],
    *,
    attempts: int,
    wait: Callable[[int], float] = backoff,
    on_answer: Callable[[int, list[bytes], Answer], None] | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    retry_failed_calls: bool = True,
) -> list[bytes]:
    """Send `datas` (one call's worth) until every record is accepted or `attempts` calls
    were made, resending only the failed records, `wait(attempt)` seconds after failed attempt
    number `attempt`; `on_answer(attempt, sent, answer)` sees every answer. A call that failed
    as a whole ends the loop unless `retry_failed_calls` (for a client that retries calls
    itself). Returns the records still not accepted."""
    pending = list(datas)
    for attempt in range(attempts):
        answer = put_record_batch(client, stream, pending)
        if on_answer is not None:
            on_answer(attempt, pending, answer)
        pending = answer.failed(pending)
        if not pending or attempt == attempts - 1:
            break
        if answer.error is not None and not retry_failed_calls:
            break
        sleep(wait(attempt))
    return pending
