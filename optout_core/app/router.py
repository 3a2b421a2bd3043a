"""CampaignLogRouter, the parent workflow: decide what a new campaign log means, then forward, ignore or reject.

The decision is :func:`optout_core.domain.routing.decide`, a pure function; this module only does its I/O:
reading the campaign log row when Dataverse trimmed the context, and sending the work item on (or keeping a
rejected message with its reason).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from optout_core.app.outcome import OutcomeRecord, log_outcome, outcome_or_retry
from optout_core.app.services import Services
from optout_core.app.settle import forward, message_deadline, rejected_copy
from optout_core.dataverse.errors import DataverseUnavailable
from optout_core.domain.errors import PermanentError
from optout_core.domain.model import ROUTER, Outcome
from optout_core.domain.policy import Reject, next_step
from optout_core.domain.routing import Decision, RowRequest, decide, decide_row
from optout_core.servicebus.envelopes import InboundMessage

if TYPE_CHECKING:
    from optout_core.dataverse.result import Attempt


def route(msg: InboundMessage, services: Services) -> OutcomeRecord:
    """Decide, then forward the work item, or keep the rejected message."""
    started = time.perf_counter()
    settings = services.settings
    decided = decide(msg.body, settings, content_type=msg.content_type, properties=msg.application_properties)
    if isinstance(decided, RowRequest):
        reading = _record(msg, decided.decided(Outcome.ROUTED, None))
        with outcome_or_retry(reading, started):  # a failed read is handed back to Service Bus, and logged
            decision = _decide_from_row(decided, services)
    else:
        decision = decided
    record = _record(msg, decision)
    with outcome_or_retry(record, started):
        if decision.work_item is not None:
            item = replace(decision.work_item, first_attempt=services.clock())  # its retry window opens now
            services.sender.send(forward(item, settings, source_message_id=msg.message_id))
        elif decision.outcome is Outcome.REJECTED:
            services.sender.send(rejected_copy(msg, decision.reason, ROUTER.name, settings))
    return log_outcome(record, started)


class RowUnread(DataverseUnavailable):
    """The campaign log row of a trimmed context could not be read, for now: handed back to Service Bus (raised)
    for another delivery, as the read's error. ``attempt``: the read, with the requests and tries it took."""

    def __init__(self, attempt: Attempt[Any]) -> None:
        error = attempt.error
        assert error is not None
        super().__init__(str(error), **error.details())
        self.attempt = attempt


def _decide_from_row(request: RowRequest, services: Services) -> Decision:
    """A trimmed context: read the campaign log row and decide from it. There is no work item yet to put back,
    so a transient failure is handed back to Service Bus (raised) for another delivery."""
    failed = f"the context was trimmed and reading campaign log {request.log_id} failed"
    try:
        dataverse = services.dataverse
    except PermanentError as unset:  # no client to read with: a Dataverse setting is missing or wrong
        return request.decided(Outcome.REJECTED, f"{failed}: {unset}")
    read = dataverse.read_row(request.entity_set, request.log_id, request.select, deadline=message_deadline())
    if read.error is None:
        return decide_row(request, read.value, services.settings)
    policy = services.settings.failure_policy
    step = next_step(read.error.failure, attempt=read.attempts, put_backs=0, policy=policy, can_put_back=False)
    if not isinstance(step, Reject):
        raise RowUnread(read) from read.error
    return request.decided(Outcome.REJECTED, f"{failed}: {read.error}")


def _record(msg: InboundMessage, decision: Decision) -> OutcomeRecord:
    return OutcomeRecord(
        function=ROUTER.name,
        outcome=decision.outcome,
        reason=decision.reason,
        log_id=decision.log_id,
        operation_id=decision.operation_id,
        correlation_id=decision.correlation_id,
        message_id=msg.message_id,
        delivery_count=msg.delivery_count,
        route=str(decision.route) if decision.route else None,
        activity_type=decision.activity_type.name if decision.activity_type else None,
        recipient=str(decision.recipient) if decision.recipient else None,
    )
