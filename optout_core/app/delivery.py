"""One message on a writer's queue, and every way it can end: kept as rejected, put back, finished.

A :class:`Received` message is only what Service Bus delivered; :meth:`Received.take_in` reads its work item
and gives the :class:`Delivery` (or raises why it cannot, for :meth:`Received.reject`). A delivery carries its
message, its work item and its outcome record so far, so that the writers hand one value around instead of six.
Each ending logs the message's one outcome line and returns it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from optout_core.app.outcome import OutcomeRecord, log_outcome, outcome_or_retry
from optout_core.app.services import Services
from optout_core.app.settle import forward, rejected_copy, work_message_id
from optout_core.dataverse.errors import Undetermined
from optout_core.dataverse.result import Attempt
from optout_core.domain.errors import OptOutError, PermanentError
from optout_core.domain.model import Function, Outcome
from optout_core.domain.policy import Fail, Failure, HandBack, Reject, next_step
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage

BUSY_DELAY = 5.0  # seconds before a copy that met another batch's in-flight copy is tried again
FINISHED = frozenset({Outcome.APPLIED, Outcome.RECIPIENT_MISSING})  # a later copy of the work item is a duplicate


@dataclass(frozen=True)
class Received:
    """A message as Service Bus delivered it to ``function``, before its work item is read."""

    function: Function
    msg: InboundMessage
    services: Services
    started: float  # time.perf_counter() when the batch began: every outcome line's duration starts there

    @property
    def record(self) -> OutcomeRecord:
        assert self.function.route is not None
        return OutcomeRecord(
            function=self.function.name,
            outcome=Outcome.REJECTED,
            message_id=self.msg.message_id,
            delivery_count=self.msg.delivery_count,
            route=str(self.function.route),
        )

    def take_in(self) -> Delivery:
        """The message's work item with its log fields; :class:`PermanentError` when it is not one for this
        function (:class:`optout_core.domain.workitem.InvalidWorkItem`, or a work item of another route)."""
        item = WorkItem.from_json(self.msg.body)
        if item.route is not self.function.route:
            raise PermanentError(f"a {item.route} work item reached {self.function.name}'s queue")
        code = None if item.activity_code is None else str(item.activity_code)
        record = self.record.but(
            log_id=item.log_id,
            operation_id=item.operation_id,
            correlation_id=item.correlation_id,
            recipient=str(item.recipient),
            activity_type=item.activity_type or code,
            occurred_on=item.occurred_on,
        )
        return Delivery(self.msg, item, record, self.services, self.started)

    def reject(self, reason: str) -> OutcomeRecord:
        """Keep the message, with its reason, on the rejected queue; the original then completes."""
        return _keep(self.record, self.msg, reason, self.services, self.started, Outcome.REJECTED)


@dataclass(frozen=True)
class Delivery:
    """A writer's message with its work item and its outcome record so far."""

    msg: InboundMessage
    item: WorkItem
    record: OutcomeRecord
    services: Services
    started: float

    @property
    def again(self) -> bool:
        """Redelivered or put back: an earlier attempt may have written it although its answer was lost."""
        return (self.msg.delivery_count or 1) > 1 or self.item.reschedules > 0

    def counted(self, requests: int) -> Delivery:
        """This delivery with ``requests`` more Web API requests on its record."""
        record = self.record.but(dataverse_requests=self.record.dataverse_requests + requests)
        return replace(self, record=record)

    def verified(self, item: WorkItem) -> Delivery:
        """This delivery carrying Dataverse's values (VERIFY_CAMPAIGN_LOG) instead of the message's."""
        return replace(self, item=item, record=self.record.but(recipient=str(item.recipient)))

    def finish(self, outcome: Outcome, reason: str | None = None) -> OutcomeRecord:
        return log_outcome(self.record.but(outcome=outcome, reason=reason), self.started)

    def duplicate(self) -> OutcomeRecord:
        reason = f"duplicate: work item {self.item.key} was already handled by this worker"
        return self.finish(Outcome.IGNORED, reason)

    def recipient_missing(self) -> str:
        recipient = self.item.recipient
        return f"{recipient.table} {recipient.id} does not exist (deleted or merged); not re-created"

    def reject(self, reason: str, *, outcome: Outcome = Outcome.REJECTED) -> OutcomeRecord:
        """Keep the message, with its reason, on the rejected queue (as ``rejected``, or ``failed`` when its retry
        window closed); the original then completes."""
        return _keep(self.record, self.msg, reason, self.services, self.started, outcome)

    def after_failure(self, failed: Attempt[Any]) -> OutcomeRecord:
        """Act on what the failure policy says about an operation that failed: put back, reject, fail or hand
        back (raise). The tries already made are the attempt's own."""
        assert failed.error is not None
        error = failed.error
        # "Could not tell whether an earlier write took effect" is not a reason: keep the last real error.
        reason = self.item.last_error if isinstance(error, Undetermined) and self.item.last_error else str(error)
        return self._next(error.failure, failed.attempts, error, reason)

    def busy(self) -> OutcomeRecord:
        """Another batch of this worker is writing a copy of this work item right now: never wait on it (two
        batches holding copies in opposite order would wait on each other), put it back as any transient
        failure is, within the retry window."""
        cause = f"a copy of work item {self.item.key} is being written by another batch of this worker"
        failure = Failure(cause, transient=True, retry_after=BUSY_DELAY)
        return self._next(failure, self.services.settings.retry.attempts, None, cause)

    def _next(self, failure: Failure, attempts: int, error: OptOutError | None, reason: str) -> OutcomeRecord:
        now = self.services.clock()
        first_attempt = self.item.first_attempt if self.item.first_attempt is not None else now
        step = next_step(
            failure,
            attempt=attempts,
            put_backs=self.item.reschedules,
            age=now - first_attempt,
            policy=self.services.settings.failure_policy,
        )
        if isinstance(step, Reject):
            return self.reject(step.reason)
        if isinstance(step, Fail):
            return self.reject(f"still failing when its retry window closed: {reason}", outcome=Outcome.FAILED)
        if isinstance(step, HandBack):
            with outcome_or_retry(self.record, self.started):
                raise error if error is not None else PermanentError(step.reason)
        later = replace(self.item, first_attempt=first_attempt, last_error=reason)
        return replace(self, item=later).put_back(step.delay, cause=failure.reason)

    def put_back(self, delay: float, *, cause: str) -> OutcomeRecord:
        """Put the work item back on its queue, due after ``delay`` seconds, instead of holding a worker thread or
        using up the queue's delivery count (a long Retry-After, or one failed part of a batch)."""
        later = replace(self.item, reschedules=self.item.reschedules + 1)
        due = datetime.now(UTC) + timedelta(seconds=delay)
        with outcome_or_retry(self.record, self.started):
            self.services.sender.send(forward(later, self.services.settings, not_before=due))
        as_id = work_message_id(later, self.services.settings)
        reason = f"{cause}, waiting {delay:g} s: due again at {due:%Y-%m-%dT%H:%M:%SZ} as {as_id}"
        return self.finish(Outcome.RESCHEDULED, reason)


def _keep(
    record: OutcomeRecord, msg: InboundMessage, reason: str, services: Services, started: float, outcome: Outcome
) -> OutcomeRecord:
    record = record.but(outcome=outcome, reason=reason)
    with outcome_or_retry(record, started):
        services.sender.send(rejected_copy(msg, reason, record.function, services.settings, outcome=outcome))
    return log_outcome(record, started)
