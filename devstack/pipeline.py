"""The whole local stack in one object: moto S3, Firehose endpoint, delivery, forwarder.

Used by ``python -m devstack.demo`` and by tests/e2e/test_e2e_pipeline.py, so the demo and the
end-to-end test run the very same pieces:

    forwarder (subprocess, real boto3 over HTTP)
      -> devstack.firehose_endpoint (Firehose JSON API on 127.0.0.1, API limits enforced)
      -> devstack.delivery (processor buffer -> transform_lambda.app.lambda_handler)
      -> moto S3 (in-process ThreadedMotoServer on 127.0.0.1)

Local stand-in only; see devstack/delivery.py for how it differs from the real service.
"""

from __future__ import annotations

import gzip
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import Any

from devstack.delivery import FirehoseDelivery
from devstack.moto_server import MotoS3
from devstack.node import canonical
from devstack.stack_config import LOCAL_CREDENTIALS, REGION, StackConfig
from transform_lambda.decompress import decode_payload
from transform_lambda.wire_decoder import split_header


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def count_lines(record: bytes) -> tuple[int, bool]:
    """(log lines, re-ingested?) of one record: gzip or not, header or not (docs/architecture.md).

    Records the transform re-ingests carry ``n=<attempt>`` in their header; they are not
    the forwarder's.
    """
    header, body = split_header(decode_payload(record))
    return body.count(b"\n"), header is not None and "n" in header.fields


class LocalPipeline:
    """Start/stop the AWS side of the pipeline (everything but the forwarder and the node)."""

    def __init__(
        self,
        config: StackConfig,
        *,
        handler: Callable[[dict[str, Any], Any], Any] | None = None,
        endpoint_options: dict[str, Any] | None = None,
        quiet_lambda: bool = True,
        routed: tuple[StackConfig, ...] = (),
    ) -> None:
        self.config = config
        self.routed = routed  # other streams' stacks (the forwarder's --route targets)
        self.moto = MotoS3(config)
        self.delivery: FirehoseDelivery | None = None
        self.deliveries: dict[str, FirehoseDelivery] = {}  # by stream, the main one included
        self.endpoint: Any = None
        self._handler = handler
        self._endpoint_options = endpoint_options or {}
        self._quiet_lambda = quiet_lambda
        self._stack = ExitStack()
        self._lock = threading.Lock()
        self.calls = 0  # accepted PutRecord(Batch) calls, the forwarder's and the Lambda's
        self.records = 0  # records from the forwarder ...
        self.lines = 0  # ... and the log lines in them
        self.reingested_records = 0  # records the transform put back
        self._objects: dict[str, list[bytes]] = {}

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalPipeline:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        from devstack.firehose_endpoint import FirehoseEndpoint

        self.moto.start()
        self._stack.callback(self.moto.stop)
        env = {
            **self.config.lambda_env,
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }
        if self._quiet_lambda:
            env.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
            env.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
        self._stack.enter_context(patched_environ(env))

        handler = self._handler
        if handler is None and self._quiet_lambda:
            handler = _quiet_transform_handler()
        self.delivery = FirehoseDelivery(self.config, self.moto.s3, handler)
        self.deliveries = {self.config.stream_name: self.delivery}
        for config in self.routed:
            self.deliveries[config.stream_name] = FirehoseDelivery(config, self.moto.s3, handler)
        options = {"store": False, **self._endpoint_options}
        self.endpoint = FirehoseEndpoint(sink=self._sink, **options)
        self.endpoint.start()
        self._stack.callback(self.endpoint.stop)
        # The transform re-ingests overflow with boto3 to the stream in the event's ARN;
        # boto3 honours AWS_ENDPOINT_URL_FIREHOSE, which sends it back to this endpoint.
        self._stack.enter_context(patched_environ({"AWS_ENDPOINT_URL_FIREHOSE": self.endpoint.url}))
        if self._handler is None:
            self._stack.callback(refresh_transform_module())
        for delivery in self.deliveries.values():
            delivery.start()
            self._stack.callback(delivery.stop)

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> LocalPipeline:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- observing ---------------------------------------------------------------------------

    def _sink(self, stream_name: str, records: list[bytes]) -> None:
        counted = [count_lines(r) for r in records]
        with self._lock:
            self.calls += 1
            for lines, reingested in counted:
                if reingested:
                    self.reingested_records += 1
                else:
                    self.records += 1
                    self.lines += lines
        delivery = self.deliveries.get(stream_name, self.delivery)
        assert delivery is not None
        delivery.sink(stream_name, records)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Drain every stream's delivery (main and routed)."""
        return all([d.drain(timeout_s) for d in self.deliveries.values()])

    def list_keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        paginator = self.moto.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.config.bucket_name, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return keys

    def _read(self, key: str) -> list[bytes]:
        if key not in self._objects:
            body = self.moto.s3.get_object(Bucket=self.config.bucket_name, Key=key)["Body"]
            data = body.read()
            if key.endswith(".gz"):
                data = gzip.decompress(data)
            self._objects[key] = data.splitlines()
        return self._objects[key]

    def data_keys(self, config: StackConfig | None = None) -> list[str]:
        """Data objects of the main stream (or of `config`'s)."""
        config = config or self.config
        root = config.error_root
        return [k for k in self.list_keys(config.data_root) if not k.startswith(root)]

    def error_keys(self) -> list[str]:
        return self.list_keys(self.config.error_root)

    def read_object(self, key: str) -> list[bytes]:
        """The lines of one object (gunzipped when its key ends in .gz); cached."""
        return self._read(key)

    def output_lines(self, config: StackConfig | None = None) -> list[bytes]:
        """Every NDJSON line in the data objects (not the error prefix), in key order, of
        the main stream (or of `config`'s)."""
        return [line for key in sorted(self.data_keys(config)) for line in self._read(key)]

    def output_counter(self) -> Counter[str]:
        return Counter(canonical(line) for line in self.output_lines())

    def error_records(self) -> list[bytes]:
        return [line for key in sorted(self.error_keys()) for line in self._read(key)]


def _quiet_transform_handler() -> Callable[[dict[str, Any], Any], Any]:
    """The real handler, minus the metrics Powertools keeps when they are disabled.

    With POWERTOOLS_METRICS_DISABLED (set so the demo's terminal is not flooded with EMF
    lines) Powertools neither prints nor clears its module-level metric set; clear it after
    each invocation so it neither grows nor leaks into later users of the module.
    """
    from transform_lambda import app

    def handler(event: dict[str, Any], context: Any) -> Any:
        try:
            return app.lambda_handler(event, context)
        finally:
            app.metrics.clear_metrics()

    return handler


def refresh_transform_module() -> Callable[[], None]:
    """Make an already-imported transform see this stack's environment; return the undo.

    ``transform_lambda.app`` reads its settings at import (a Lambda cold start) and caches
    its Firehose client; in a long-lived test process it may have been imported earlier
    with another environment, so re-read both as a fresh Lambda container would.
    """
    from transform_lambda import app
    from transform_lambda.settings import TransformSettings

    saved = app.SETTINGS

    def undo() -> None:
        app.SETTINGS = saved
        app.firehose_client.cache_clear()

    app.SETTINGS = TransformSettings.from_env()
    app.firehose_client.cache_clear()
    return undo
