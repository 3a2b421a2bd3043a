"""The process-wide throttle gate (optout_core.dataverse.throttle.ThrottleGate), and how it reopens after a 429,
which is what keeps the share of 429s down when several instances share one user's limits (bench/fleet.py
measures it)."""

import threading
import time

import pytest

from optout_core.dataverse.throttle import ThrottleGate
from tests.support.clock import Clock


def test_a_hold_makes_every_later_request_wait_it_out():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    gate.hold(5)
    with gate:
        pass
    with gate:  # the pause is over
        pass
    assert clock.sleeps == [5]


def test_a_longer_hold_wins_and_a_shorter_one_does_not_shorten_it():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    gate.hold(10)
    gate.hold(2)
    with gate:
        pass
    assert sum(clock.sleeps) == pytest.approx(10)


def test_requests_in_flight_are_bounded():
    gate = ThrottleGate(2)
    inside, peak, lock = [0], [0], threading.Lock()

    def request():
        with gate:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2


def test_one_hold_slows_all_threads():
    gate = ThrottleGate(8)
    gate.hold(0.2)
    started = time.monotonic()
    finished = []

    def request():
        with gate:
            finished.append(time.monotonic() - started)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert min(finished) >= 0.19


def test_concurrency_must_be_positive():
    with pytest.raises(ValueError):
        ThrottleGate(0)


def in_flight_peak(gate, requests, *, refuse=()):
    """Send ``requests`` through the gate from as many threads at once; each waits until all have tried to
    enter, so the peak shows what the gate let in together. The requests numbered in ``refuse`` get a 429."""
    lock, inside, peak, order = threading.Lock(), [0], [0], []
    started = threading.Barrier(requests, timeout=10)

    def request(number):
        started.wait()
        with gate:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
                order.append(number)
            threading.Event().wait(0.02)
            if number in refuse:
                gate.refused()
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=request, args=(n,)) for n in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return peak[0], order


def test_after_a_pause_one_request_goes_first_and_the_others_follow_as_answers_come():
    gate = ThrottleGate(8)
    gate.hold(0.0)
    peak, order = in_flight_peak(gate, 4)
    assert peak <= 2  # one alone first, then one more per answer: never the four at once
    assert sorted(order) == [0, 1, 2, 3]


def test_the_gate_opens_fully_again_after_enough_answers():
    gate = ThrottleGate(4)
    gate.hold(0.0)
    for _ in range(3):  # 1 -> 2 -> 3 -> 4 allowed
        with gate:
            pass
    peak, _ = in_flight_peak(gate, 4)
    assert peak == 4


def test_without_a_429_the_gate_lets_its_whole_bound_in_at_once():
    peak, _ = in_flight_peak(ThrottleGate(4), 4)
    assert peak == 4


def test_a_request_refused_inside_the_gate_keeps_the_others_back_until_the_retry_is_decided():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    with gate:
        gate.refused()  # the caller then decides: here, a retry after 3 s
    gate.hold(3)
    with gate:
        pass
    assert clock.sleeps == [3]  # one wait, the retry's (the short guard is within it)


def test_a_refusal_the_caller_does_not_retry_holds_the_others_only_briefly():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    with gate:
        gate.refused()  # put back instead of retried: no hold follows
    with gate:
        pass
    assert len(clock.sleeps) == 1 and clock.sleeps[0] <= 0.05


def test_a_429_while_reopening_makes_the_next_pause_longer_by_a_random_part_of_a_second_at_most():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep, draw=lambda: 0.5)
    with gate:
        gate.refused()
    gate.hold(2)  # the first 429: waited exactly
    with gate:  # the first request after the pause (the gate is reopening) ...
        gate.refused()  # ... is refused again: the capacity went to another instance
    gate.hold(2)
    with gate:
        pass
    assert clock.sleeps == [2, 2.5]  # 2, then 2 + 0.5 x (a second at most)


def test_a_first_429_with_the_gate_open_is_waited_exactly():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep, draw=lambda: 0.9)
    with gate:
        gate.refused()
    gate.hold(5)
    with gate:
        pass
    assert clock.sleeps == [5]


def test_a_request_whose_deadline_the_pause_outlasts_is_not_let_in_and_does_not_wait():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    gate.hold(300)
    assert gate.enter(deadline=clock.now + 240) is False and clock.sleeps == []
    assert gate.enter(deadline=clock.now + 301) is True and clock.sleeps == [300]
    gate.leave()


def test_a_request_queued_behind_the_one_slot_gives_up_at_its_deadline():
    gate = ThrottleGate(1)
    with gate:  # the one slot is taken and stays taken
        assert gate.enter(deadline=time.monotonic() + 0.1) is False
    assert gate.enter(deadline=time.monotonic() + 0.1) is True  # free again: let in
    gate.leave()
