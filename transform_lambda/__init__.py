"""podhose Firehose data-transformation Lambda.

``transform`` drives the pure transformation (no AWS imports); ``app`` is the Lambda
handler around it.
"""
