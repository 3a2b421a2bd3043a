"""The one failure policy: what to do next after something failed, as a pure function.

Every path asks it — the Dataverse transport for a failed request, the opt-out and bounce writers for a work
item whose write failed, the router for a campaign log it could not re-read — and each acts on the answer:

* :class:`RetryNow` — try the request again in this process after ``delay`` seconds (``throttled``: a 429's
  Retry-After, which holds every request of the process, not just this one);
* :class:`PutBack` — end this delivery and put the work item back on its queue, due after ``delay`` seconds,
  instead of holding a worker thread or using up Service Bus's delivery count;
* :class:`HandBack` — raise, so Service Bus delivers the message again (there is nothing to put back);
* :class:`Reject` — refused for good: keep the message on the rejected queue with Dataverse's reason;
* :class:`Fail` — still failing transiently when the retry window since the event's first attempt closed:
  keep it on the rejected queue as ``failed``, with the last real error, for redrive and alerting.

A transient failure never becomes a rejection: only time ends its retries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from optout_core.domain.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class Failure:
    """What failed, as the policy needs to know it."""

    reason: str
    transient: bool  # a later try may succeed (429, 5xx, 408, timeouts, lost answers)
    retry_after: float | None = None  # seconds the server asked us to wait (429), already within the cap


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


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


Step = RetryNow | PutBack | HandBack | Reject | Fail


@dataclass(frozen=True)
class FailurePolicy:
    """The numbers the policy works with.

    ``retry``: tries in process. ``window``: how long after an event's first attempt transient failures are
    still retried by putting the work item back (DATAVERSE_RETRY_WINDOW_SECONDS). ``retry_after_cap``: the
    longest Retry-After honoured at all (DATAVERSE_RETRY_AFTER_CAP_SECONDS). ``put_back_max``: the longest
    back-off between two put-backs when the server named no Retry-After.
    """

    retry: RetryPolicy = RetryPolicy()
    window: float = field(default_factory=lambda: _default("DATAVERSE_RETRY_WINDOW_SECONDS"))
    retry_after_cap: float = field(default_factory=lambda: _default("DATAVERSE_RETRY_AFTER_CAP_SECONDS"))
    put_back_max: float = 900.0

    def __post_init__(self) -> None:
        if min(self.window, self.retry_after_cap, self.put_back_max) < 0:
            raise ValueError("windows and delays cannot be negative")

    def put_back_delay(self, put_backs: int, rng: random.Random | None = None) -> float:
        """A back-off that doubles with each put-back, capped, with equal jitter (never below half the step)."""
        step = min(self.put_back_max, self.retry.backoff * 2.0 ** min(put_backs, 64))
        draw = rng.random() if rng is not None else random.random()
        return float(step / 2 + draw * step / 2)


def _default(setting: str) -> float:
    """The setting's default from the settings list, read when a policy is made: the list's parsers raise
    SettingsError, whose module imports this one."""
    from optout_core.domain.settings_spec import default

    return float(default(setting))


def next_step(
    failure: Failure,
    *,
    attempt: int,
    put_backs: int = 0,
    age: float = 0.0,
    policy: FailurePolicy,
    can_put_back: bool = True,
    rng: random.Random | None = None,
) -> Step:
    """What to do after ``failure``.

    ``attempt`` counts the tries of this request already made in this process (1 after the first failure);
    ``put_backs`` how often the work item was already put back on its queue; ``age`` the seconds since the
    event's first attempt; ``can_put_back`` is False where there is no work item to put back (the router), so
    Service Bus's own redelivery is the retry.
    """
    if not failure.transient:
        return Reject(failure.reason)
    retry_after = None if failure.retry_after is None else min(failure.retry_after, policy.retry_after_cap)
    delay = policy.retry.delay(attempt, retry_after=retry_after, rng=rng)
    if delay is not None:
        return RetryNow(delay, throttled=retry_after is not None)
    if not can_put_back:
        return HandBack(failure.reason)
    remaining = policy.window - age
    if remaining <= 0:
        return Fail(failure.reason)
    wanted = retry_after if retry_after is not None else policy.put_back_delay(put_backs, rng)
    return PutBack(min(wanted, remaining))  # the last try falls when the window closes
