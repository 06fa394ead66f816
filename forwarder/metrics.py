"""Prometheus metrics of the forwarder (own registry); served by health.py."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    """Every metric the forwarder exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.lines_read = Counter("podhose_lines_read", "Logical lines read", registry=r)
        self.bytes_read = Counter("podhose_bytes_read", "File bytes read", registry=r)
        self.records_sent = Counter(
            "podhose_records_sent", "Records acknowledged by Firehose", ["stream"], registry=r
        )
        self.bytes_sent = Counter(
            "podhose_bytes_sent",
            "Record bytes (as sent) acknowledged by Firehose",
            ["stream"],
            registry=r,
        )
        self.calls = Counter(
            "podhose_calls", "PutRecordBatch calls that returned 200", ["stream"], registry=r
        )
        self.failures = Counter(
            "podhose_failures",
            "Failed calls or records, by error code",
            ["code", "stream"],
            registry=r,
        )
        self.permanent_errors = Counter(
            "podhose_permanent_errors",
            "Calls or records failed by a permanent error (stream missing, access or KMS "
            "denied), by error code",
            ["code", "stream"],
            registry=r,
        )
        self.retries = Counter(
            "podhose_retries", "Records sent again after a failure", ["stream"], registry=r
        )
        self.pacing_rate = Gauge(
            "podhose_pacing_rate_bytes",
            'Bytes per second the stream\'s calls are paced at since Firehose said "Slow down." '
            "(0: not paced), by stream",
            ["stream"],
            registry=r,
        )
        self.pacing_wait = Counter(
            "podhose_pacing_wait_seconds",
            "Seconds calls were held back to stay at the stream's quota, by stream",
            ["stream"],
            registry=r,
        )
        self.skipped_records = Counter(
            "podhose_records_skipped",
            "Records Firehose refused as invalid on their own, skipped, by reason",
            ["reason", "stream"],
            registry=r,
        )
        self.skipped_lines = Counter(
            "podhose_lines_skipped", "Lines in records skipped as invalid", ["stream"], registry=r
        )
        self.oversize = Counter(
            "podhose_oversize_lines",
            "Lines longer than --max-line-bytes, shipped in pieces",
            registry=r,
        )
        self.stale_partials = Counter(
            "podhose_partial_lines_flushed",
            "Unfinished partial lines shipped as they were after --partial-flush-timeout "
            "(their continuation arrives as its own line)",
            registry=r,
        )
        self.cut_lines = Counter(
            "podhose_lines_cut",
            "Lines cut in two because one record could not hold them even alone "
            "(incompressible, near the record size); each piece arrives as its own line",
            registry=r,
        )
        self.raw_limit_closes = Counter(
            "podhose_records_closed_at_raw_limit",
            "Records compressed before they were full or aged because the raw lines waiting "
            "in records reached --max-raw-bytes (many files read at once)",
            registry=r,
        )
        self.deleted_given_up = Counter(
            "podhose_deleted_files_given_up",
            "Deleted files closed before they were read to their end, because the deleted "
            "files held open exceeded the stream's share of --max-deleted-bytes or "
            "--max-deleted-files, or when the forwarder stopped before their lines were "
            "delivered",
            ["stream"],
            registry=r,
        )
        self.deleted_bytes_given_up = Counter(
            "podhose_deleted_bytes_given_up",
            "Unread or unacknowledged bytes of those files: lines lost",
            ["stream"],
            registry=r,
        )
        self.deleted_held = Gauge(
            "podhose_deleted_bytes_held",
            "Disk held by deleted files the forwarder keeps open (being read, or awaiting "
            "acknowledgements), per stream",
            ["stream"],
            registry=r,
        )
        self.deleted_limit = Gauge(
            "podhose_deleted_bytes_limit",
            "The stream's share of --max-deleted-bytes (divided evenly among the streams)",
            ["stream"],
            registry=r,
        )
        self.scan_errors = Counter(
            "podhose_scan_errors",
            "Scans that could not list a folder (out of descriptors, permissions): nothing "
            "was changed",
            registry=r,
        )
        self.offset_save_failures = Counter(
            "podhose_offset_save_failures",
            "Offset saves that failed (disk full, database locked); tried again",
            registry=r,
        )
        self.sender_restarts = Counter(
            "podhose_sender_restarts", "Sender threads that died and were replaced", registry=r
        )
        self.truncations = Counter("podhose_truncations", "Files truncated in place", registry=r)
        self.files = Gauge("podhose_files_tracked", "Open log files", registry=r)
        self.records_without_metadata = Counter(
            "podhose_records_without_metadata",
            "Records sent without pod metadata while --kubernetes-metadata is on",
            registry=r,
        )
        self.unreadable_files = Gauge(
            "podhose_unreadable_files",
            "Matched paths that lead to no file (dangling symlinks), at the last scan",
            registry=r,
        )
        self.buffered = Gauge(
            "podhose_buffered_bytes",
            "Bytes of lines held: read but not acknowledged (open records, records in flight, "
            "unfinished partial lines), per delivery stream",
            ["stream"],
            registry=r,
        )
        self.buffer_limit = Gauge(
            "podhose_buffer_limit_bytes",
            "Each delivery stream's share of --max-buffer-bytes: reading its files pauses above it",
            ["stream"],
            registry=r,
        )
        self.lag = Gauge(
            "podhose_file_lag_bytes",
            "File size minus acknowledged offset, per file (with --metrics-file-labels)",
            ["file"],
            registry=r,
        )
        self.lag_total = Gauge(
            "podhose_lag_bytes",
            "File size minus acknowledged offset, summed over the open files",
            registry=r,
        )
        self.delivery_lag = Gauge(
            "podhose_delivery_lag_seconds",
            "Age of the oldest line read but not acknowledged (0 when all are)",
            registry=r,
        )
        self.zstd_level = Gauge(
            "podhose_zstd_level",
            "zstd level records are compressed at now: --zstd-level, or --zstd-catch-up-level "
            "while the forwarder is behind",
            registry=r,
        )
        self.catch_ups = Counter(
            "podhose_catch_ups",
            "Times the forwarder fell behind growing files and switched to --zstd-catch-up-level",
            registry=r,
        )
        self.ready = Gauge(
            "podhose_ready", "1 while /readyz answers 200 (delivery progresses)", registry=r
        )
