"""Retry policy for Web API calls: a value object, read and tested on its own (after urllib3's ``Retry``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Microsoft's guidance: 5xx (502/503/504 especially), 408, timeouts and connection errors are transient.
TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a request again, and how long to wait first.

    ``attempts`` counts every try, the first included. A 429's ``Retry-After`` is always honoured in full
    (Dataverse lengthens the penalty for clients that come back early); when it exceeds
    ``max_retry_after`` the policy gives up at once so the message goes back to Service Bus instead of
    holding a worker thread. Other transient failures back off exponentially with jitter, capped at
    ``backoff_max``.
    """

    attempts: int = 5
    backoff: float = 1.0
    backoff_max: float = 30.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if min(self.backoff, self.backoff_max, self.max_retry_after) < 0:
            raise ValueError("delays cannot be negative")

    @staticmethod
    def is_transient_status(status: int) -> bool:
        return status in TRANSIENT_STATUSES or status == 429

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before try number ``attempt + 1``, or None when it is time to give up.

        ``attempt`` is the number of tries already made (1 after the first failure).
        """
        if attempt >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        ceiling = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        # "Equal jitter": at least half the exponential step, so retries stay spread but never collapse to 0.
        draw = rng.random() if rng is not None else random.random()
        return float(ceiling / 2 + draw * ceiling / 2)
