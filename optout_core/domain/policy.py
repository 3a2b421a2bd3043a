"""The one failure policy: what to do next after something failed, as a pure function.

Every path asks it — the Dataverse transport for a failed request, the opt-out and bounce writers for a work
item whose write failed, the router for a campaign log it could not re-read — and each acts on the answer:

* :class:`RetryNow` — try the request again in this process after ``delay`` seconds (``throttled``: a 429's
  Retry-After, which holds every request of the process, not just this one);
* :class:`PutBack` — end this delivery and put the work item back on its queue, due after ``delay`` seconds,
  instead of holding a worker thread or using up Service Bus's delivery count;
* :class:`HandBack` — raise, so Service Bus delivers the message again (there is nothing to put back);
* :class:`Reject` — keep the message on the rejected queue with the reason: retrying cannot help.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from optout_core.domain.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class Failure:
    """What failed, as the policy needs to know it."""

    reason: str
    transient: bool  # a later try may succeed (429, 5xx, 408, timeouts, lost answers)
    retry_after: float | None = None  # seconds the server asked us to wait (429)


@dataclass(frozen=True, slots=True)
class RetryNow:
    delay: float
    throttled: bool


@dataclass(frozen=True, slots=True)
class PutBack:
    delay: float


@dataclass(frozen=True, slots=True)
class HandBack:
    reason: str


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str


Step = RetryNow | PutBack | HandBack | Reject


@dataclass(frozen=True)
class FailurePolicy:
    """The numbers the policy works with: in-process retries, and how often a work item may be put back."""

    retry: RetryPolicy = RetryPolicy()
    max_put_backs: int = 10

    def __post_init__(self) -> None:
        if self.max_put_backs < 0:
            raise ValueError("max_put_backs cannot be negative")

    def put_back_delay(self, put_backs: int, retry_after: float | None) -> float:
        """The server's Retry-After when it gave one, else a back-off that doubles with each put-back."""
        if retry_after is not None:
            return retry_after
        return float(min(self.retry.backoff_max, self.retry.backoff * 2**put_backs))


def next_step(
    failure: Failure,
    *,
    attempt: int,
    put_backs: int,
    policy: FailurePolicy,
    can_put_back: bool = True,
    rng: random.Random | None = None,
) -> Step:
    """What to do after ``failure``.

    ``attempt`` counts the tries of this request already made in this process (1 after the first failure);
    ``put_backs`` how often the work item was already put back on its queue; ``can_put_back`` is False where
    there is no work item to put back (the router), so Service Bus's own redelivery is the retry.
    """
    if not failure.transient:
        return Reject(failure.reason)
    delay = policy.retry.delay(attempt, retry_after=failure.retry_after, rng=rng)
    if delay is not None:
        return RetryNow(delay, throttled=failure.retry_after is not None)
    if not can_put_back:
        return HandBack(failure.reason)
    if put_backs < policy.max_put_backs:
        return PutBack(policy.put_back_delay(put_backs, failure.retry_after))
    return Reject(f"still failing after {put_backs} reschedules: {failure.reason}")
