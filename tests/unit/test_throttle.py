"""The process-wide throttle gate (optout_core.dataverse.throttle.ThrottleGate)."""

import threading
import time

import pytest

from optout_core.dataverse.throttle import ThrottleGate


class Clock:
    def __init__(self):
        self.now, self.sleeps = 100.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


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
    assert gate.remaining() == 10


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
