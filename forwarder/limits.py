"""The forwarder's own size limits, derived from Firehose's (podhose_wire.firehose_limits)."""

from podhose_wire.firehose_limits import MAX_RECORD_BYTES

# Room for the wire header (15 bytes + file name up to 255 bytes + newline) and gzip framing.
RECORD_OVERHEAD = 512
# Pod metadata (--kubernetes-metadata) a record header may carry, and the room a record keeps
# for it (the field, " k8s=" and slack).
MAX_METADATA_BYTES = 8 * 1024
METADATA_RESERVE = MAX_METADATA_BYTES + 8
# Longest logical line we ship whole: a record must hold at least one line plus the header.
MAX_LINE_LIMIT = MAX_RECORD_BYTES - RECORD_OVERHEAD - 1
