"""AWS prices (us-east-1) the benchmarks and the scaling model turn figures into dollars with.

Firehose ingestion per billed GB; the Lambda per GB-second and per request (arm64).
"""

FIREHOSE_USD_PER_GB = 0.029
GB_SECOND_USD = 0.0000133334
REQUEST_USD = 0.20 / 1_000_000
