"""The retry policy (optout_core.domain.retry.RetryPolicy) as a value: when to retry and how long to wait."""

import random

import pytest

from optout_core.domain.retry import RetryPolicy


def test_gives_up_after_the_configured_number_of_tries():
    policy = RetryPolicy(attempts=3, backoff=1)
    assert policy.delay(1) is not None
    assert policy.delay(2) is not None
    assert policy.delay(3) is None


def test_backoff_doubles_with_jitter_between_half_and_the_full_step():
    policy = RetryPolicy(attempts=10, backoff=1, backoff_max=100)
    rng = random.Random(7)
    for attempt, step in [(1, 1), (2, 2), (3, 4), (4, 8)]:
        delays = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert min(delays) >= step / 2 and max(delays) <= step
        assert max(delays) - min(delays) > step / 10  # jitter actually spreads retries


def test_backoff_is_capped():
    policy = RetryPolicy(attempts=50, backoff=1, backoff_max=5)
    assert all(policy.delay(30, rng=random.Random(i)) <= 5 for i in range(50))


def test_retry_after_is_honoured_in_full_never_shortened():
    policy = RetryPolicy(attempts=5, backoff=0.01, max_retry_after=60)
    assert policy.delay(1, retry_after=17) == 17
    assert policy.delay(4, retry_after=0) == 0


def test_a_retry_after_longer_than_the_limit_gives_the_message_back_at_once():
    assert RetryPolicy(max_retry_after=30).delay(1, retry_after=31) is None


def test_transient_statuses():
    assert all(RetryPolicy.is_transient_status(s) for s in (408, 429, 500, 502, 503, 504))
    assert not any(RetryPolicy.is_transient_status(s) for s in (400, 401, 403, 404, 405, 412, 413))


def test_invalid_policies_are_refused():
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(backoff=-1)
