"""The one failure policy (optout_core.domain.policy.next_step): what happens after a failure, as a value."""

import random

import pytest

from optout_core.domain.policy import Failure, FailurePolicy, HandBack, PutBack, Reject, RetryNow, next_step
from optout_core.domain.retry import RetryPolicy

POLICY = FailurePolicy(retry=RetryPolicy(attempts=3, backoff=1, backoff_max=8, max_retry_after=30), max_put_backs=2)
TRANSIENT = Failure("Dataverse answered 503", transient=True)


def step(failure=TRANSIENT, *, attempt=1, put_backs=0, **kwargs):
    return next_step(failure, attempt=attempt, put_backs=put_backs, policy=POLICY, rng=random.Random(1), **kwargs)


def test_a_permanent_failure_is_rejected_at_once_with_its_reason():
    assert step(Failure("Dataverse answered 400 (0x0: no column)", transient=False)) == Reject(
        "Dataverse answered 400 (0x0: no column)"
    )


def test_a_transient_failure_is_retried_in_process_while_tries_remain():
    first = step(attempt=1)
    assert isinstance(first, RetryNow) and 0.5 <= first.delay <= 1 and not first.throttled


def test_a_429_waits_its_full_retry_after_and_holds_the_whole_process():
    assert step(Failure("429", transient=True, retry_after=12), attempt=1) == RetryNow(12, throttled=True)


def test_when_tries_run_out_the_work_item_is_put_back_with_a_doubling_back_off():
    assert step(attempt=3, put_backs=0) == PutBack(1)
    assert step(attempt=3, put_backs=1) == PutBack(2)


def test_a_retry_after_too_long_to_wait_in_process_puts_back_for_exactly_that_long():
    assert step(Failure("429", transient=True, retry_after=120), attempt=1) == PutBack(120)


def test_put_backs_are_bounded_then_the_event_is_rejected_with_the_last_error():
    final = step(attempt=3, put_backs=2)
    assert isinstance(final, Reject) and final.reason == "still failing after 2 reschedules: Dataverse answered 503"


def test_without_a_work_item_to_put_back_the_message_is_handed_back_to_service_bus():
    assert step(attempt=3, can_put_back=False) == HandBack("Dataverse answered 503")
    assert isinstance(step(attempt=1, can_put_back=False), RetryNow)


def test_the_put_back_back_off_is_capped():
    assert FailurePolicy(retry=RetryPolicy(backoff=1, backoff_max=8)).put_back_delay(10, None) == 8


def test_a_negative_put_back_limit_is_refused():
    with pytest.raises(ValueError):
        FailurePolicy(max_put_backs=-1)
