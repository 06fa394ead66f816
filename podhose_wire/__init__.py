"""The contract between the forwarder and the transform Lambda, defined once.

docs/architecture.md, "Record wire format", is its prose specification; these modules are
its one implementation, imported by the forwarder, the transform, its re-ingest, the redrive
tool and the local Firehose endpoint:

- ``header``: the record header line (magic, keys, separator rules).
- ``kubelet_name``: the kubelet log file name ``<pod>_<namespace>_<container>-<id>.log``.
- ``columns``: the column body (``enc=cols2`` / ``cols1``): kinds, time transposition, reading.
- ``compression``: gzip or zstd around a record, told apart by their magic bytes.
- ``firehose_limits``: PutRecordBatch's limits, what a call and a record cost, the quotas.
- ``retry_policy``: Firehose errors by kind and how long to wait before trying again.
- ``put_batch``: one PutRecordBatch call and its answer classified; the retry loop.

Only the standard library is imported (botocore lazily, and only when a call has failed).
"""
