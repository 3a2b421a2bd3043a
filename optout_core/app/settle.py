"""How a writer's message ends, around the failure policy: taken in, put back, kept as rejected, or handed back.

Shared by the router, BulkEmailOptOut and BounceDetail. A rejected message is copied, with its reason, to
the rejected queue before the original completes: nothing is dropped silently. When Service Bus itself
fails (the copy cannot be sent), the exception reaches the host and the message is delivered again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from optout_core.app.outcome import OutcomeRecord, log_outcome, outcome_or_retry
from optout_core.app.services import Services
from optout_core.dataverse.errors import DataverseError, Undetermined
from optout_core.domain.errors import PermanentError
from optout_core.domain.model import Function, Outcome
from optout_core.domain.policy import Fail, HandBack, Reject, next_step
from optout_core.domain.redact import redact
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage, OutboundMessage, derived_message_id

# A single message's lock is renewed for at most maxAutoLockRenewalDuration (host.json: 5 minutes). Its Dataverse
# calls end (the work goes back to its queue, or to Service Bus) well within it, waits at the throttle gate
# included, so that no second copy is delivered while this one still runs.
MESSAGE_BUDGET_SECONDS = 240.0


def message_deadline() -> float:
    """The ``time.monotonic()`` past which a single message's Dataverse calls stop."""
    return time.monotonic() + MESSAGE_BUDGET_SECONDS


def take_in(
    function: Function, msg: InboundMessage, services: Services, started: float
) -> OutcomeRecord | tuple[OutcomeRecord, WorkItem]:
    """The work item of a writer's message with its log fields, or the rejection (already kept)."""
    assert function.route is not None
    record = OutcomeRecord(
        function=function.name,
        outcome=Outcome.REJECTED,
        message_id=msg.message_id,
        delivery_count=msg.delivery_count,
        route=str(function.route),
    )
    try:
        item = WorkItem.from_json(msg.body)
        if item.route is not function.route:
            raise PermanentError(f"a {item.route} work item reached {function.name}'s queue")
    except PermanentError as exc:
        return reject(record, msg, str(exc), services, started)
    code = None if item.activity_code is None else str(item.activity_code)
    return record.but(
        log_id=item.log_id,
        operation_id=item.operation_id,
        correlation_id=item.correlation_id,
        recipient=str(item.recipient),
        activity_type=item.activity_type or code,
        occurred_on=item.occurred_on,
    ), item


def duplicate(record: OutcomeRecord, item: WorkItem, started: float) -> OutcomeRecord:
    return log_outcome(
        record.but(
            outcome=Outcome.IGNORED, reason=f"duplicate: work item {item.key} was already handled by this worker"
        ),
        started,
    )


def recipient_missing(item: WorkItem) -> str:
    return f"{item.recipient.table} {item.recipient.id} does not exist (deleted or merged); not re-created"


def after_failure(
    record: OutcomeRecord,
    item: WorkItem,
    msg: InboundMessage,
    error: DataverseError,
    services: Services,
    started: float,
) -> OutcomeRecord:
    """Act on what the failure policy says about a write that failed: put back, reject, fail or hand back."""
    now = services.clock()
    first_attempt = item.first_attempt if item.first_attempt is not None else now
    step = next_step(
        error.failure,
        attempt=error.attempts,
        put_backs=item.reschedules,
        age=now - first_attempt,
        policy=services.settings.failure_policy,
    )
    # "Could not tell whether an earlier write took effect" is not a reason: keep the last real error.
    reason = item.last_error if isinstance(error, Undetermined) and item.last_error else str(error)
    if isinstance(step, Reject):
        return reject(record, msg, step.reason, services, started)
    if isinstance(step, Fail):
        return reject(
            record,
            msg,
            f"still failing when its retry window closed: {reason}",
            services,
            started,
            outcome=Outcome.FAILED,
        )
    if isinstance(step, HandBack):
        with outcome_or_retry(record, started):
            raise error
    later = replace(item, first_attempt=first_attempt, last_error=reason)
    return put_back(record, later, step.delay, services, started, cause=str(error))


def put_back(
    record: OutcomeRecord, item: WorkItem, delay: float, services: Services, started: float, *, cause: str
) -> OutcomeRecord:
    """Put the work item back on its queue, due after ``delay`` seconds, instead of holding a worker thread or
    using up the queue's delivery count (a long Retry-After, or one failed part of a batch)."""
    later = replace(item, reschedules=item.reschedules + 1)
    due = datetime.now(UTC) + timedelta(seconds=delay)
    with outcome_or_retry(record, started):
        services.sender.send(forward(later, services.settings, not_before=due))
    return log_outcome(
        record.but(
            outcome=Outcome.RESCHEDULED,
            reason=f"{cause}, waiting {delay:g} s: due again at {due:%Y-%m-%dT%H:%M:%SZ} as {later.message_id}",
        ),
        started,
    )


def reject(
    record: OutcomeRecord,
    msg: InboundMessage,
    reason: str,
    services: Services,
    started: float,
    *,
    outcome: Outcome = Outcome.REJECTED,
) -> OutcomeRecord:
    """Keep the message, with its reason, on the rejected queue (as ``rejected``, or ``failed`` when its retry
    window closed); the original then completes."""
    record = record.but(outcome=outcome, reason=reason)
    with outcome_or_retry(record, started):
        services.sender.send(rejected_copy(msg, reason, record.function, services.settings, outcome=outcome))
    return log_outcome(record, started)


def forward(
    item: WorkItem, settings: Settings, *, source_message_id: str = "", not_before: datetime | None = None
) -> OutboundMessage:
    """The work item as a message to the trigger queue of the function that does its work."""
    properties = {
        "log_id": item.log_id,
        "operation_id": item.operation_id,
        "route": str(item.route),
        "recipient_table": item.recipient.table,
        "recipient_id": item.recipient.id,
        "activity_type": item.activity_type,
        "activity_code": item.activity_code,
        "source_message_id": source_message_id or None,
        "reschedules": item.reschedules or None,
    }
    return OutboundMessage(
        queue=settings.queue(settings.function_for(item.route)),
        body=item.to_json(),
        message_id=item.message_id,
        correlation_id=item.correlation_id,
        subject=str(item.route),
        application_properties=_present(properties),
        scheduled_enqueue_time=not_before,
    )


def rejected_copy(
    msg: InboundMessage, reason: str | None, function: str, settings: Settings, *, outcome: Outcome = Outcome.REJECTED
) -> OutboundMessage:
    """The original body and properties, plus why and where it was rejected, for inspection and redrive."""
    properties = {
        **msg.application_properties,
        "outcome": str(outcome),
        "rejected_reason": redact(reason or ""),  # a kept message leaves the app: no address in it
        "rejected_by": function,
        "rejected_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "original_message_id": msg.message_id or None,
        "original_delivery_count": msg.delivery_count,
    }
    message_id = derived_message_id(msg.message_id or hashlib.sha256(msg.body).hexdigest()[:32], ":rejected")
    return OutboundMessage(
        queue=settings.rejected_queue,
        body=msg.body,
        message_id=message_id,
        content_type=msg.content_type,
        correlation_id=msg.correlation_id,
        subject=function,
        application_properties=_present(properties),
    )


def _present(properties: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    # Service Bus property values must be simple scalars; None is not allowed.
    return {k: v for k, v in properties.items() if isinstance(v, (str, int, float, bool))}
