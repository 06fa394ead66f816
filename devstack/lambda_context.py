"""The one fake Lambda context: what the transform and Powertools read of a real one.

>>> LambdaContext().get_remaining_time_in_millis()
300000
>>> LambdaContext(deadline_ms=0).get_remaining_time_in_millis()
0
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LambdaContext:
    """The LambdaContext attributes the handler and Powertools read.

    Without ``deadline_ms`` (epoch milliseconds) the remaining time is a constant 300 s.
    """

    function_name: str = "podhose-transform-local"
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:podhose-transform-local"
    )
    aws_request_id: str = "local-invoke"
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/podhose-transform-local"
    log_stream_name: str = "local"
    deadline_ms: int | None = None

    def get_remaining_time_in_millis(self) -> int:
        if self.deadline_ms is None:
            return 300_000
        return max(0, self.deadline_ms - int(time.time() * 1000))
