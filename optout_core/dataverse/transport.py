"""Every Dataverse Web API request goes through :meth:`Transport.perform`, and so gets the same treatment.

The layers, from the wire up (each its own module):

* :class:`~optout_core.dataverse.sender.RequestsSender` puts a request on the wire (the only place that does);
* :class:`~optout_core.dataverse.sender.Gated` passes it through the process-wide throttle gate (a 429 pauses
  every request of the process; no wait past the caller's deadline) and counts it;
* :class:`~optout_core.dataverse.auth.Authorized` signs it, and sends it once more with a fresh token after a 401;
* :mod:`~optout_core.dataverse.batching` sends many as ``$batch`` chunks and matches the parts back;
* :mod:`~optout_core.dataverse.readback` tells whether a write whose answer was lost already took effect;
* this module: the retry loop, as :func:`~optout_core.domain.policy.next_step` says, over one small
  :class:`_Open` per operation. A part that fails transiently goes again alone with the others that failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from optout_core.dataverse.auth import Authorized, BearerToken, TokenCredentialLike
from optout_core.dataverse.batching import API, Send, replies
from optout_core.dataverse.errors import (
    LOST_ANSWER_STATUSES,
    DataverseError,
    DataverseUnavailable,
    OutOfTime,
    SignInFailed,
    Undetermined,
    longer_wait,
)
from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.pacing import paces
from optout_core.dataverse.readback import ReadBack, read_back
from optout_core.dataverse.result import Attempt, Batch
from optout_core.dataverse.sender import Gated, HttpSender, Lost, Refused, Reply, RequestsSender, error_of
from optout_core.dataverse.throttle import ThrottleGate
from optout_core.domain.policy import FailurePolicy, RetryNow, next_step

__all__ = ["API", "Operation", "ReadBack", "Transport"]
log = logging.getLogger("optout.dataverse")


@dataclass(frozen=True, slots=True)
class Operation:
    request: Request
    missing_ok: bool = False  # a 404 is an answer (the row does not exist), not a failure
    read_back: ReadBack | None = None  # writes only; None: safe to send again (a read), or not checkable
    resend_when_lost: bool = True  # False for a create: sent twice it could make two rows


@dataclass(slots=True)
class _Open:
    """One operation on its way: ``maybe_done`` while an earlier send may have committed it (read back before
    sending again); ``end`` once it has its final answer or error."""

    operation: Operation
    maybe_done: bool
    end: Response | DataverseError | None = None
    tries: int = 0  # the round it failed in for good (the failure policy's attempt count)

    def judge(self, answer: Reply, retry_after_cap: float) -> DataverseError | None:
        """Take one reply: the transient error when it is to be sent again, else None (it has its end)."""
        error: DataverseError
        if isinstance(answer, Lost):
            maybe_done, error = answer.sent, DataverseUnavailable(answer.cause)
        else:
            response = answer.answer if isinstance(answer, Refused) else answer
            if 200 <= response.status < 300 or (response.status == 404 and self.operation.missing_ok):
                self.end = response
                return None
            maybe_done, error = response.status in LOST_ANSWER_STATUSES, error_of(answer, retry_after_cap)
        if not isinstance(error, DataverseUnavailable):
            self.end = error
        elif maybe_done and not self.operation.resend_when_lost:  # a create: look, never make it twice
            self.end = Undetermined(f"{error}; it may have been carried out: look before redoing it")
        else:
            self.maybe_done = maybe_done
            return error
        return None


class Transport:
    def __init__(
        self,
        url: str,
        credential: TokenCredentialLike,
        *,
        policy: FailurePolicy,
        timeout: float,
        gate: ThrottleGate,
        sleep: Callable[[float], None],
        sender: HttpSender | None = None,
    ) -> None:
        self._wire = RequestsSender(url, timeout=timeout)
        self.url = self._wire.url
        self._sender: HttpSender = sender or self._wire
        self._token = BearerToken(credential, f"{self.url}/.default")
        self._policy, self._gate, self._sleep = policy, gate, sleep

    def perform(
        self,
        operations: Sequence[Operation],
        *,
        batch: bool,
        verify_first: bool = False,
        deadline: float | None = None,
    ) -> Batch[Response]:
        """Each operation's final answer (2xx, or 404 when ``missing_ok``) or error, and the requests it took.

        ``verify_first``: an earlier attempt may already have applied the writes (a redelivered message), so
        they are read back before anything is sent. ``deadline`` (``time.monotonic()``): no retry starts after
        it, and no request waits at the throttle gate past it; what is left gets its transient error, for the
        caller to put back.
        """
        wire = Gated(self._sender, self._gate, deadline)
        run = _Run(Authorized(wire, self._token).send, self._policy, batch=batch, gate=self._gate, sleep=self._sleep)
        ops = [_Open(operation, maybe_done=verify_first) for operation in operations]
        try:
            run.until_done(ops, deadline)
        except (SignInFailed, OutOfTime) as stopped:  # no token, or no time: every open operation ends alike
            for op in ops:
                if op.end is None:
                    op.end, op.tries = stopped, run.attempt + 1
        items = []
        for op in ops:
            assert op.end is not None, "every operation ends with an answer or an error"
            if isinstance(op.end, DataverseError):  # one error may end several operations: never changed, so shared
                items.append(Attempt[Response](error=op.end, requests=wire.requests, attempts=op.tries))
            else:
                items.append(Attempt(op.end, requests=wire.requests))
        return Batch(tuple(items), wire.requests)

    def close(self) -> None:
        self._wire.close()


class _Run:
    """The retry loop of one :meth:`Transport.perform` call."""

    def __init__(
        self,
        send: Send,
        policy: FailurePolicy,
        *,
        batch: bool,
        gate: ThrottleGate,
        sleep: Callable[[float], None],
    ) -> None:
        self._send, self._policy, self._batch, self._gate, self._sleep = send, policy, batch, gate, sleep
        self.attempt = 0
        self._last_real: DataverseError | None = None  # the last error from a write itself, not from a read-back

    def until_done(self, ops: list[_Open], deadline: float | None) -> None:
        pending = ops
        while pending:
            checkable = [op for op in pending if op.maybe_done and op.operation.read_back is not None]
            failure: DataverseError | None = self._check(checkable)
            if failure is None:
                failure = self._send_all([op for op in pending if op.end is None])
                self._last_real = failure or self._last_real
            pending = [op for op in pending if op.end is None]
            if not pending:
                return
            assert failure is not None
            self.attempt += 1
            if not self._wait(failure, len(pending), deadline):
                # The reason is the last real error, never a later read-back's "cannot tell".
                report = self._last_real if isinstance(failure, Undetermined) and self._last_real else failure
                for op in pending:
                    op.end, op.tries = report, self.attempt
                return

    def _check(self, checkable: list[_Open]) -> Undetermined | None:
        """Read back the writes that may have committed; those that hold their write (or are gone) end here."""
        if not checkable:
            return None
        checks = [op.operation.read_back for op in checkable]
        found = read_back(
            self._send, [c for c in checks if c], batch=self._batch, retry_after_cap=self._policy.retry_after_cap
        )
        for index, end in found.settled.items():
            checkable[index].end = end
        if found.unknown is None:
            for op in checkable:
                op.maybe_done = False  # the rest is known not to hold its write yet
        return found.unknown

    def _send_all(self, ops: list[_Open]) -> DataverseError | None:
        """Send every open operation once: the failure to report if retries run out (None when none failed)."""
        failure: DataverseError | None = None
        cap = self._policy.retry_after_cap
        answers = replies(self._send, [op.operation.request for op in ops], batch=self._batch)
        for op, answer in zip(ops, answers, strict=True):
            error = op.judge(answer, cap)
            if error is not None:
                failure = longer_wait(failure, error)
        return failure

    def _wait(self, failure: DataverseError, left: int, deadline: float | None) -> bool:
        """Wait before the next round as the failure policy says; False when no round is to follow."""
        step = next_step(failure.failure, attempt=self.attempt, policy=self._policy, can_put_back=False)
        if failure.retry_after is not None:  # a 429 (within the cap): the user's window is closed to every request
            self._gate.hold(failure.retry_after, paces=paces(failure.code))  # of the process, retried here or not
        if not isinstance(step, RetryNow):
            return False
        if deadline is not None and time.monotonic() + step.delay > deadline:
            log.info("dataverse: the time budget is used up; %d operation(s) left for later", left)
            return False
        log.info(
            "dataverse retry: %d operation(s), attempt=%d delay=%.2fs cause=%s", left, self.attempt, step.delay, failure
        )
        if not step.throttled:  # a throttled retry waits at the gate, with every other worker of the process
            self._sleep(step.delay)
        return True
