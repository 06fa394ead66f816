"""podhose-redrive: send the records Firehose could not process back into the stream.

Firehose writes records its transform answered ``ProcessingFailed`` (or that failed
delivery) as error objects under the bucket's error prefix: JSON lines, gzip or not, each
with the original record base64 in ``rawData``. This reads those objects and puts the
original records back with PutRecordBatch, within the API limits, resending only the
entries that failed, with backoff. An object whose records were all accepted is tagged
``podhose-redrive=done`` (the object is left where it is) and skipped by later runs.

    podhose-redrive s3://BUCKET/errors/ --delivery-stream NAME [--dry-run]

Exit codes: 0 everything found was sent (or there was nothing to send); 1 some records
could not be sent (their objects stay untagged: run again); 2 usage error; 3 some objects or
lines could not be read (each reported; the rest of the object is sent, the object left
untagged) and everything else was sent.

Modules: ``error_objects`` reads an error object, ``redriver`` sends its records back (with
podhose_wire's PutRecordBatch retry loop), ``cli`` is the command line.

Limits: an object may hold at most error_objects.MAX_OBJECT_BYTES, stored or decompressed (a
larger one is reported as unreadable, never read whole into memory); an empty rawData is
skipped (counted as `empty`: there is nothing to send).
"""
