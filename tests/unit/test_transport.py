"""The retry loop (optout_core.dataverse.transport.Transport.perform) over a scripted sender: what is sent again,
what is read back first, what is never sent twice, and what each operation ends with."""

import json
import time

import pytest
from azure.core.credentials import AccessToken

from optout_core.dataverse.errors import DataverseRejected, DataverseUnavailable, OutOfTime, SignInFailed, Undetermined
from optout_core.dataverse.odata_batch import Request
from optout_core.dataverse.readback import ReadBack
from optout_core.dataverse.sender import Lost
from optout_core.dataverse.throttle import ThrottleGate
from optout_core.dataverse.transport import Operation, Transport
from optout_core.domain.policy import FailurePolicy
from optout_core.domain.retry import RetryPolicy
from tests.support.fake_sender import FakeSender, answer, batch_answer, parts_of

URL = "https://contoso.crm.dynamics.com"
PATH = "/api/data/v9.2/contacts(1)"
CHANGES = {"donotbulkemail": True}
WRITE = Operation(
    Request("PATCH", PATH, {"If-Match": "*"}, json.dumps(CHANGES).encode()),
    missing_ok=True,
    read_back=ReadBack(PATH, CHANGES),
)
CREATE = Operation(Request("POST", "/api/data/v9.2/accounts", {}, b"{}"), resend_when_lost=False)
LOST = Lost(sent=True, cause="Dataverse unreachable: ReadTimeout")
BUSY = answer(503, {"error": {"code": "0x1", "message": "busy"}})


class Token:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("token", 2**31)


def transport(sender, sleeps=None, attempts=3, gate=None):
    sleeps = [] if sleeps is None else sleeps
    policy = FailurePolicy(retry=RetryPolicy(attempts=attempts, backoff=1, backoff_max=1))
    gate = gate or ThrottleGate(sleep=sleeps.append)
    return Transport(URL, Token(), policy=policy, timeout=5, gate=gate, sleep=sleeps.append, sender=sender)


def test_a_transient_failure_is_sent_again_after_the_back_off():
    sleeps = []
    sender = FakeSender(BUSY, 204)
    done = transport(sender, sleeps).perform([WRITE], batch=False)
    [attempt] = done.items
    assert attempt.ok and attempt.value.status == 204 and done.requests == 2 and len(sleeps) == 1


def test_a_write_whose_answer_was_lost_is_read_back_and_not_written_twice():
    sender = FakeSender(LOST, answer(200, CHANGES))
    [attempt] = transport(sender).perform([WRITE], batch=False).items
    assert attempt.ok and attempt.value.status == 204 and sender.methods == ["PATCH", "GET"]


def test_a_write_whose_answer_was_lost_and_that_did_not_commit_is_written_again():
    sender = FakeSender(LOST, answer(200, {"donotbulkemail": False}), 204)
    assert transport(sender).perform([WRITE], batch=False).items[0].ok
    assert sender.methods == ["PATCH", "GET", "PATCH"]


def test_a_request_that_never_left_is_sent_again_without_a_read():
    sender = FakeSender(Lost(sent=False, cause="Dataverse unreachable: ConnectTimeout"), 204)
    assert transport(sender).perform([WRITE], batch=False).items[0].ok and sender.methods == ["PATCH", "PATCH"]


def test_a_create_whose_answer_was_lost_is_never_sent_again():
    sender = FakeSender(LOST)
    [attempt] = transport(sender).perform([CREATE], batch=False).items
    assert isinstance(attempt.error, Undetermined) and "look before redoing" in str(attempt.error)
    assert sender.methods == ["POST"]


def test_a_redelivered_write_is_read_back_before_anything_is_sent():
    sender = FakeSender(answer(200, CHANGES))
    assert transport(sender).perform([WRITE], batch=False, verify_first=True).items[0].ok
    assert sender.methods == ["GET"]


def test_in_a_batch_a_refused_part_ends_and_only_the_failed_part_goes_again_as_itself():
    other = Operation(Request("PATCH", "/api/data/v9.2/contacts(2)", {}, b"{}"), missing_ok=True)
    refused = answer(400, {"error": {"code": "0x0", "message": "no column"}})
    sender = FakeSender(batch_answer([refused, BUSY]), 204)
    done = transport(sender).perform([WRITE, other], batch=True)
    assert isinstance(done.items[0].error, DataverseRejected) and done.items[1].ok
    batch, again = sender.requests
    assert len(parts_of(batch)) == 2 and again.path == other.request.path and done.requests == 2


def test_retries_used_up_end_with_the_writes_own_error_not_a_later_reads_cannot_tell():
    sender = FakeSender(BUSY, LOST, BUSY)  # the PATCH, again (lost), then its read-back cannot tell
    [attempt] = transport(sender, attempts=3).perform([WRITE], batch=False).items
    assert isinstance(attempt.error, DataverseUnavailable) and not isinstance(attempt.error, Undetermined)
    assert attempt.attempts == 3 and attempt.requests == 3


def test_each_operation_ends_with_its_own_attempt_record_and_the_error_holds_no_counts():
    sender = FakeSender(otherwise=lambda request: batch_answer([BUSY] * len(parts_of(request))))
    other = Operation(Request("PATCH", "/api/data/v9.2/contacts(2)", {}, b"{}"), missing_ok=True)
    done = transport(sender, attempts=2).perform([WRITE, other], batch=True)
    first, second = done.items
    assert first is not second and str(first.error) == str(second.error)
    assert (first.attempts, first.requests) == (2, 2) == (second.attempts, second.requests)
    assert not hasattr(first.error, "attempts") and not hasattr(first.error, "requests")


def test_a_closed_gate_past_the_deadline_ends_every_open_operation_unsent_as_transient():
    sleeps = []
    gate = ThrottleGate(sleep=sleeps.append)
    gate.hold(600)
    sender = FakeSender(otherwise=204)
    done = transport(sender, sleeps, gate=gate).perform([WRITE, CREATE], batch=True, deadline=time.monotonic() + 240)
    assert all(isinstance(i.error, OutOfTime) and i.error.retryable for i in done.items)
    assert sender.requests == [] and sleeps == [] and done.requests == 0


def test_no_token_ends_every_operation_refused():
    class Expired:
        def get_token(self, *scopes, **kwargs):
            from azure.core.exceptions import ClientAuthenticationError

            raise ClientAuthenticationError("AADSTS700016: application not found")

    sender, sleeps = FakeSender(), []
    signing_in = Transport(
        URL, Expired(), policy=FailurePolicy(), timeout=5, gate=ThrottleGate(), sleep=sleeps.append, sender=sender
    )
    done = signing_in.perform([WRITE, CREATE], batch=True)
    assert all(isinstance(i.error, SignInFailed) for i in done.items) and sender.requests == [] and sleeps == []


def test_a_429_left_to_a_put_back_still_closes_the_gate_for_its_retry_after():
    # Dataverse counts per user: a Retry-After too long to wait in process (the work item goes back on its queue)
    # still closes the user's window to every other request of this process, which is put back unsent.
    throttled = answer(429, {"error": {"code": "0x80072322", "message": "Number of requests exceeded"}})
    throttled.headers["Retry-After"] = "120"
    gate, sleeps = ThrottleGate(), []
    first = transport(FakeSender(throttled), sleeps, gate=gate).perform([WRITE], batch=False)
    assert first.items[0].error.retry_after == 120 and sleeps == []  # not waited here
    sender = FakeSender(otherwise=204)
    then = transport(sender, sleeps, gate=gate).perform([WRITE], batch=False, deadline=time.monotonic() + 60)
    assert isinstance(then.items[0].error, OutOfTime) and sender.requests == []


def test_only_a_429_of_the_number_of_requests_limit_paces_the_gate():
    from optout_core.dataverse.pacing import Pacing
    from tests.support.clock import Clock

    def gate_after(code):
        clock = Clock()
        gate = ThrottleGate(clock=clock, sleep=clock.sleep, draw=lambda: 0.0, pacing=Pacing(window=300))
        for _ in range(600):  # two requests a second over the window
            assert gate.enter()
            gate.leave()
        refused = answer(429, {"error": {"code": code, "message": "exceeded"}})
        refused.headers["Retry-After"] = "100"  # beyond the in-process wait: put back, the gate held
        transport(FakeSender(refused), gate=gate).perform([WRITE], batch=False)
        clock.sleeps.clear()
        for _ in range(3):
            assert gate.enter()
            gate.leave()
        return clock.sleeps

    step = pytest.approx(1 / (Pacing().backoff * 2), rel=0.02)  # the share less the back-off
    assert gate_after("0x80072322") == [100, step, step]
    assert gate_after("0x80072321") == [100]  # the execution-time limit: waited out, not paced
