"""The pace a process keeps once a 429 says its user's window is full (optout_core.dataverse.pacing): its share
of the window, a little less, climbing back within a window, then growing; and the gate that keeps it
(optout_core.dataverse.throttle.ThrottleGate). bench/fleet.py measures what it does for a fleet."""

import pytest

from optout_core.dataverse.pacing import Admissions, Pacing, paces
from optout_core.dataverse.throttle import ThrottleGate
from tests.support.clock import Clock

PACING = Pacing(window=300.0, backoff=0.95, plateau=0.98, growth=0.02, floor=1.0, full=0.25)


# -- the rules ------------------------------------------------------------------------------------------------


def test_a_long_retry_after_says_the_window_is_full_and_a_short_one_only_once_a_whole_window_was_seen():
    assert PACING.full_window(retry_after=75, observed=1)  # a quarter of the window ahead: it filled long ago
    assert not PACING.full_window(retry_after=2, observed=60)  # a young process refused for a moment
    assert PACING.full_window(retry_after=2, observed=300)  # its admissions now measure its share


def test_the_share_is_what_the_process_got_through_within_the_window_per_second():
    assert PACING.share(None, 1500) == pytest.approx(5.0)
    assert PACING.share(None, 0) == pytest.approx(1 / 300)  # one request at least: never a zero rate


def test_a_cut_never_raises_the_rate_paced_at():
    assert PACING.share(3.0, 1500) == pytest.approx(3.0)
    assert PACING.share(8.0, 1500) == pytest.approx(5.0)


def test_the_rate_starts_below_the_share_climbs_back_within_a_window_then_grows_doubling():
    share = 10.0
    assert PACING.rate(share, 0) == pytest.approx(9.5)
    assert PACING.rate(share, 150) == pytest.approx(9.65)
    assert PACING.rate(share, 300) == pytest.approx(9.8)
    assert PACING.rate(share, 600) == pytest.approx(9.8 * 1.02)
    assert PACING.rate(share, 900) == pytest.approx(9.8 * 1.06)
    assert PACING.rate(share, 1200) == pytest.approx(9.8 * 1.14)


def test_the_rate_never_falls_below_the_floor():
    assert PACING.rate(0.01, 0) == 1.0


def test_a_short_refusal_does_not_cut_again_within_the_window_that_still_holds_what_was_sent_before():
    assert PACING.cut_lasts(2) == 300
    assert PACING.cut_lasts(200) == 200  # a flooded window: the next 429 after the pause may cut again


def test_only_the_number_of_requests_limit_is_paced():
    assert paces("0x80072322") and paces(" 0X80072322 ")
    assert not paces("0x80072321")  # combined execution time: big batches, slow plug-ins
    assert not paces("0x80072326")  # concurrent requests: the gate's bound answers it
    assert not paces(None)


def test_a_429_of_another_limit_is_waited_out_and_does_not_pace():
    gate, clock = paced_gate()
    send(gate, 601, refuse_last=True)
    gate.hold(100)  # the execution-time limit, say: a rate of requests is no answer to it
    send(gate, 4)
    assert clock.sleeps == [100]


def test_dataverses_second_scales_with_the_window():
    assert Pacing(window=300).second == 1.0 and Pacing(window=6).second == pytest.approx(0.02)


@pytest.mark.parametrize(
    "bad",
    [
        {"window": 0},
        {"backoff": 0},
        {"backoff": 0.99, "plateau": 0.98},
        {"plateau": 1.1},
        {"growth": -0.1},
        {"floor": 0},
        {"full": 0},
        {"full": 1.5},
    ],
)
def test_pacing_refuses_rules_that_cannot_hold(bad):
    with pytest.raises(ValueError):
        Pacing(**bad)


# -- counting what got through -------------------------------------------------------------------------------


def test_admissions_count_the_window_and_forget_what_left_it():
    admissions = Admissions(window=60.0)
    for at in (0.5, 10.0, 10.2, 59.0):
        admissions.add(at)
    assert admissions.within(59.5) == 4
    assert admissions.within(65.0) == 3  # the request at 0.5 s is more than a window ago
    admissions.take_back(10.2)  # refused after all
    assert admissions.within(65.0) == 2
    assert admissions.within(200.0) == 0


def test_admissions_hold_a_bounded_count_of_slices_whatever_the_traffic():
    admissions = Admissions(window=60.0)
    for tick in range(100_000):
        admissions.add(tick * 0.01)  # 100 a second for 1,000 s
    assert admissions.within(1000.0) == pytest.approx(6000, abs=100)
    assert len(admissions._counts) <= 61


# -- the gate keeping the pace --------------------------------------------------------------------------------


def paced_gate(window=300.0):
    clock = Clock(now=1000.0)
    pacing = Pacing(window=window, backoff=0.95, plateau=0.98, growth=0.02)
    gate = ThrottleGate(8, clock=clock, sleep=clock.sleep, draw=lambda: 0.0, pacing=pacing)
    return gate, clock


def send(gate, count, *, refuse_last=False):
    for index in range(count):
        assert gate.enter()
        if refuse_last and index == count - 1:
            gate.refused()
        gate.leave()


def test_without_a_429_the_gate_does_not_pace():
    gate, clock = paced_gate()
    send(gate, 500)
    assert clock.sleeps == []


def test_after_a_429_that_says_the_window_is_full_requests_go_at_the_share_less_the_backoff():
    gate, clock = paced_gate()
    send(gate, 601, refuse_last=True)  # 600 got through, the 601st was refused: the window is full
    gate.hold(100, paces=True)  # Retry-After 100 s: a third of the window ahead
    send(gate, 4)
    rate = 0.95 * 600 / 300  # 1.9 a second
    assert clock.sleeps[0] == pytest.approx(100)
    assert clock.sleeps[1:] == pytest.approx([1 / rate] * 3, rel=0.02)


def test_a_short_429_to_a_young_process_is_waited_out_and_does_not_pace_it():
    gate, clock = paced_gate()
    send(gate, 51, refuse_last=True)
    gate.hold(2, paces=True)  # the concurrent-request limit, or a moment's spike: the window is not full
    send(gate, 20)
    assert clock.sleeps == [2]


def test_a_short_429_paces_a_process_that_has_sent_for_a_whole_window():
    gate, clock = paced_gate()
    for _ in range(300):  # two a second for a window
        send(gate, 2)
        clock.sleep(1.0)
    clock.sleeps.clear()
    send(gate, 1, refuse_last=True)
    gate.hold(1, paces=True)
    send(gate, 3)
    assert clock.sleeps[0] == pytest.approx(1)
    assert clock.sleeps[1:] == pytest.approx([1 / (0.95 * 600 / 300)] * 2, rel=0.05)


def test_the_429s_that_answer_requests_sent_before_a_cut_do_not_cut_again():
    gate, clock = paced_gate()
    send(gate, 600)
    assert gate.enter() and gate.enter()  # two requests of the burst in flight
    gate.refused()
    gate.hold(100, paces=True)  # the first answer cuts
    gate.refused()
    gate.hold(100, paces=True)  # the second, answered during the pause, does not cut again
    gate.leave()
    gate.leave()
    send(gate, 3)
    assert clock.sleeps[1:] == pytest.approx([1 / (0.95 * 600 / 300)] * 2, rel=0.02)


def test_a_paced_request_whose_turn_comes_after_its_deadline_is_not_let_in():
    gate, clock = paced_gate()
    send(gate, 31, refuse_last=True)  # 30 got through: a tenth of a request a second, the floor is one
    gate.hold(100, paces=True)
    send(gate, 1)
    assert gate.enter(deadline=clock.now + 0.5) is False  # its turn is a second away
    assert gate.enter(deadline=clock.now + 1.5) is True
    gate.leave()


def test_the_pace_grows_once_the_window_after_the_cut_has_passed():
    gate, clock = paced_gate(window=60.0)
    send(gate, 121, refuse_last=True)  # 120 in a 60 s window: a share of 2 a second
    gate.hold(30, paces=True)
    clock.sleep(30 + 60 * 3)  # three windows after sending resumed, without a 429
    clock.sleeps.clear()
    send(gate, 3)  # the first two go at once (a late grid keeps a step of credit), the third a step later
    assert clock.sleeps == pytest.approx([1 / (2 * 0.98 * 1.06)], rel=0.02)


def test_the_gate_tells_when_it_opens_the_pause_then_the_next_turn():
    gate, clock = paced_gate()
    assert gate.closed_for() == 0
    send(gate, 31, refuse_last=True)  # the floor: a request a second
    gate.hold(100, paces=True)
    assert gate.closed_for() == pytest.approx(100)
    clock.sleep(100)
    send(gate, 1)
    assert gate.closed_for() == pytest.approx(1.0)
