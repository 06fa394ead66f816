"""The podhose-redrive command line (podhose_redrive's docstring: usage and exit codes)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

import podhose_redrive
from forwarder.config import region, url
from podhose_redrive.redriver import Redriver, say


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``.

    >>> parse_s3_url("s3://logs/errors/processing-failed/")
    ('logs', 'errors/processing-failed/')
    """
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    summary = (podhose_redrive.__doc__ or "podhose-redrive").splitlines()[0]
    parser = argparse.ArgumentParser(prog="podhose-redrive", description=summary)
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
