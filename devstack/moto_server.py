"""In-process moto server on 127.0.0.1 holding the demo's S3 bucket (and a stream record).

Local stand-in only: it gives boto3 a real HTTP S3 endpoint without an AWS account.
moto's own Firehose would write every PutRecordBatch straight to S3 (no processor, no
buffering, no limits), so podhose's forwarder talks to ``devstack.firehose_endpoint`` and
``devstack.delivery`` writes to this S3; the moto stream only mirrors the template's
names so ``aws firehose describe-delivery-stream --endpoint-url ...`` shows them.

Usage (starts a moto server on 127.0.0.1)::

    with MotoS3(StackConfig()) as moto:
        moto.s3.list_objects_v2(Bucket=moto.config.bucket_name)
"""

from __future__ import annotations

import logging
import urllib.request
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from devstack.stack_config import LOCAL_CREDENTIALS, REGION, StackConfig

log = logging.getLogger(__name__)


def local_client(service: str, endpoint_url: str) -> Any:
    """A boto3 client for a local endpoint, with dummy credentials and few retries."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        **LOCAL_CREDENTIALS,
    )


class MotoS3:
    """Start moto's ThreadedMotoServer on an ephemeral port and create the stack's bucket."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""
        self.s3: Any = None

    def start(self) -> MotoS3:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        # moto keeps its state in module globals: start from empty, like a new account
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self.s3 = local_client("s3", self.url)
        self.s3.create_bucket(Bucket=self.config.bucket_name)
        self._create_stream_record()
        log.info("moto S3 at %s, bucket %s", self.url, self.config.bucket_name)
        return self

    def _create_stream_record(self) -> None:
        firehose = local_client("firehose", self.url)
        firehose.create_delivery_stream(
            DeliveryStreamName=self.config.stream_name,
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/podhose-firehose",
                "BucketARN": f"arn:aws:s3:::{self.config.bucket_name}",
                "Prefix": self.config.prefix,
                "ErrorOutputPrefix": self.config.error_prefix,
            },
        )

    def stop(self) -> None:
        if self.url:
            self._server.stop()
            wsgi_server = getattr(self._server, "_server", None)  # moto leaves it listening
            if wsgi_server is not None:
                wsgi_server.server_close()
            self.url = ""

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
