"""The one failure policy (optout_core.domain.policy.next_step): what happens after a failure, as a value."""

import random

import pytest

from optout_core.domain.policy import Fail, Failure, FailurePolicy, HandBack, PutBack, Reject, RetryNow, next_step
from optout_core.domain.retry import RetryPolicy

POLICY = FailurePolicy(
    retry=RetryPolicy(attempts=3, backoff=1, backoff_max=8, max_retry_after=30),
    window=3600,
    retry_after_cap=300,
    put_back_max=600,
)
TRANSIENT = Failure("Dataverse answered 503", transient=True)


def step(failure=TRANSIENT, *, attempt=1, put_backs=0, age=0.0, **kwargs):
    return next_step(
        failure, attempt=attempt, put_backs=put_backs, age=age, policy=POLICY, rng=random.Random(1), **kwargs
    )


def test_a_permanent_failure_is_rejected_at_once_with_its_reason():
    reason = "Dataverse answered 400 (0x0: no column)"
    assert step(Failure(reason, transient=False)) == Reject(reason)
    assert step(Failure(reason, transient=False), age=10**9) == Reject(reason)


def test_a_transient_failure_is_retried_in_process_while_tries_remain():
    first = step(attempt=1)
    assert isinstance(first, RetryNow) and 0.5 <= first.delay <= 1 and not first.throttled


def test_a_429_waits_its_full_retry_after_and_holds_the_whole_process():
    assert step(Failure("429", transient=True, retry_after=12), attempt=1) == RetryNow(12, throttled=True)


def test_when_tries_run_out_the_work_item_is_put_back_with_a_growing_jittered_back_off():
    delays = [step(attempt=3, put_backs=n) for n in range(12)]
    assert all(isinstance(d, PutBack) for d in delays)
    for n, d in enumerate(delays):
        full = min(600, 2**n)
        assert full / 2 <= d.delay <= full, (n, d)


def test_a_retry_after_too_long_to_wait_in_process_puts_back_for_exactly_that_long():
    assert step(Failure("429", transient=True, retry_after=120), attempt=1) == PutBack(120)


def test_a_retry_after_beyond_the_cap_is_treated_as_the_cap():
    assert step(Failure("429", transient=True, retry_after=10**10), attempt=1) == PutBack(300)


def test_a_transient_failure_never_becomes_a_rejection_however_often_it_was_put_back():
    assert isinstance(step(attempt=3, put_backs=10_000, age=3599), PutBack)


def test_when_the_window_closes_the_event_fails_with_the_last_error():
    assert step(attempt=3, put_backs=40, age=3600) == Fail("Dataverse answered 503")


def test_the_last_put_back_falls_when_the_window_closes():
    assert step(Failure("429", transient=True, retry_after=120), attempt=1, age=3590) == PutBack(10)


def test_without_a_work_item_to_put_back_the_message_is_handed_back_to_service_bus():
    assert step(attempt=3, can_put_back=False) == HandBack("Dataverse answered 503")
    assert isinstance(step(attempt=1, can_put_back=False), RetryNow)


def test_negative_windows_are_refused():
    with pytest.raises(ValueError):
        FailurePolicy(window=-1)
