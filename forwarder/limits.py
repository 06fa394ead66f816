"""Hard limits of the Firehose PutRecordBatch API, shared by the batcher and the test endpoint."""

MAX_RECORDS_PER_CALL = 500
# "1,000 KB" per record, before base64.
MAX_RECORD_BYTES = 1_024_000
# 4 MiB for the entire request. We keep the base64-encoded request under it, which is the
# stricter reading of the documentation, so calls stay valid under either reading.
MAX_CALL_BYTES = 4 * 1024 * 1024
# Room for the wire header (15 bytes + file name up to 255 bytes + newline) and gzip framing.
RECORD_OVERHEAD = 512
# Pod metadata (--kubernetes-metadata) a record header may carry, and the room a record keeps
# for it (the field, " k8s=" and slack).
MAX_METADATA_BYTES = 8 * 1024
METADATA_RESERVE = MAX_METADATA_BYTES + 8
# Longest logical line we ship whole: a record must hold at least one line plus the header.
MAX_LINE_LIMIT = MAX_RECORD_BYTES - RECORD_OVERHEAD - 1
# Firehose bills every record rounded up to the next 5 KB.
BILLING_UNIT = 5 * 1024


def call_cost(record_len: int) -> int:
    """Bytes a record adds to a PutRecordBatch request body (base64 plus JSON framing)."""
    return (record_len + 2) // 3 * 4 + 16


def billed_bytes(record_len: int) -> int:
    """Bytes Firehose bills for one record."""
    return -(-record_len // BILLING_UNIT) * BILLING_UNIT
