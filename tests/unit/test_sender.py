"""The senders stacked on the wire (optout_core.dataverse.sender): the throttle gate in front of every request, and
its bound on the caller's time budget."""

import pytest

from optout_core.dataverse.errors import OutOfTime
from optout_core.dataverse.odata_batch import Request
from optout_core.dataverse.sender import Gated
from optout_core.dataverse.throttle import ThrottleGate
from tests.support.clock import Clock
from tests.support.fake_sender import FakeSender

GET = Request("GET", "/api/data/v9.2/WhoAmI")


def test_each_request_that_leaves_is_counted():
    sender = FakeSender(200, 204)
    gated = Gated(sender, ThrottleGate())
    assert [gated.send(GET).status, gated.send(GET).status] == [200, 204]
    assert gated.requests == 2 and len(sender.requests) == 2


def test_a_429_closes_the_gate_before_the_request_leaves_it():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    Gated(FakeSender(429), gate).send(GET)
    assert not gate.enter(deadline=clock.now)  # the others stay back until the retry is decided


def test_a_pause_that_outlasts_the_deadline_sends_nothing_and_waits_for_nothing():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    gate.hold(300)
    sender = FakeSender(204)
    gated = Gated(sender, gate, deadline=clock.now + 240)
    with pytest.raises(OutOfTime) as ended:
        gated.send(GET)
    assert ended.value.retryable and clock.sleeps == [] and sender.requests == [] and gated.requests == 0


def test_a_pause_that_ends_before_the_deadline_is_waited_out():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    gate.hold(5)
    assert Gated(FakeSender(204), gate, deadline=clock.now + 240).send(GET).status == 204
    assert clock.sleeps == [5]


def test_without_a_deadline_the_pause_is_waited_out_however_long():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    gate.hold(300)
    assert Gated(FakeSender(204), gate).send(GET).status == 204 and clock.sleeps == [300]


def test_work_the_closed_gate_turns_away_is_due_again_when_the_gate_opens():
    clock = Clock()
    gate = ThrottleGate(4, clock=clock, sleep=clock.sleep)
    gate.hold(300)
    with pytest.raises(OutOfTime) as turned_away:
        Gated(FakeSender(204), gate, deadline=clock.now + 240).send(GET)
    assert turned_away.value.retry_after == pytest.approx(300) and clock.sleeps == []
