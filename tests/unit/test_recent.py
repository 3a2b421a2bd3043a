"""The in-process duplicate guard (optout_core.app.recent.RecentWork)."""

import threading

from optout_core.app.recent import Claim, RecentWork


def test_the_first_claim_wins_and_a_finished_key_is_skipped():
    recent = RecentWork()
    assert recent.claim("log:opt_out")
    recent.release("log:opt_out", done=True)
    assert not recent.claim("log:opt_out")
    assert recent.claim("log:bounce")


def test_a_failed_claim_can_be_retried():
    recent = RecentWork()
    assert recent.claim("k")
    recent.release("k", done=False)
    assert recent.claim("k")


def test_a_duplicate_waits_for_the_copy_in_flight():
    recent = RecentWork()
    assert recent.claim("k")
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(recent.claim("k")))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and answers == []  # still waiting for the first copy
    recent.release("k", done=True)
    waiter.join(5)
    assert answers == [False]


def test_memory_is_bounded_by_count_and_age():
    now = [0.0]
    recent = RecentWork(capacity=2, ttl=10, clock=lambda: now[0])
    for key in "abc":
        recent.claim(key)
        recent.release(key, done=True)
    assert recent.claim("a")  # evicted: only the two newest are kept
    recent.release("a", done=True)
    now[0] = 11
    assert recent.claim("c")  # older than the ttl


def test_try_claim_never_waits_for_a_claim_another_caller_holds():
    recent = RecentWork()
    assert recent.try_claim("a") is Claim.CLAIMED
    assert recent.try_claim("a") is Claim.BUSY  # claim() would wait here until "a" is released
    recent.release("a", done=True)
    assert recent.try_claim("a") is Claim.DONE


def test_a_busy_key_is_free_again_when_its_claim_fails():
    recent = RecentWork()
    assert recent.try_claim("b") is Claim.CLAIMED
    recent.release("b", done=False)
    assert recent.try_claim("b") is Claim.CLAIMED
