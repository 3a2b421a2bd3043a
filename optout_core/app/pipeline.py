"""The imperative shell: what each function does with one message, around the pure core.

Each handler ends in exactly one outcome and logs it — routed / ignored / rejected for the router,
applied / recipient_missing / rejected for the writers — or raises so Service Bus redelivers the
message (a transient failure). A rejected message is copied, with its reason, to the rejected queue
before the original completes: nothing is dropped silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from optout_core.app.outcome import Handled, record
from optout_core.dataverse.errors import DataverseRejected, DataverseUnavailable
from optout_core.domain.errors import PermanentError, SettingsError
from optout_core.servicebus.envelopes import InboundMessage, OutboundMessage
from optout_core.domain.model import Outcome, Route
from optout_core.domain.routing import Decision, RowRequest, decide, decide_row
from optout_core.app.services import Services
from optout_core.domain.settings import BOUNCE_FUNCTION, ROUTER_FUNCTION, Settings
from optout_core.domain.bounce import bounce_changes
from optout_core.domain.workitem import WorkItem

_MAX_REASON = 1000  # Service Bus application properties share a 64 KB header budget


def route(msg: InboundMessage, services: Services) -> Handled:
    """CampaignLogRouter: decide, then forward the work item, or keep the rejected message."""
    started = time.perf_counter()
    settings = services.settings
    decision = decide(msg.body, settings, content_type=msg.content_type, properties=msg.application_properties)
    if isinstance(decision, RowRequest):
        decision = _decide_from_row(decision, services)
    handled = Handled(
        function=ROUTER_FUNCTION, outcome=decision.outcome, reason=decision.reason,
        log_id=decision.log_id, operation_id=decision.operation_id, correlation_id=decision.correlation_id,
        message_id=msg.message_id, delivery_count=msg.delivery_count,
        route=str(decision.route) if decision.route else None,
        activity_type=decision.activity_type.name if decision.activity_type else None,
        recipient=str(decision.recipient) if decision.recipient else None,
    )
    with _outcome_or_retry(handled, started):
        if decision.work_item is not None:
            services.sender.send(forward(decision.work_item, settings, source_message_id=msg.message_id))
        elif decision.outcome is Outcome.REJECTED:
            services.sender.send(rejected_copy(msg, decision.reason, ROUTER_FUNCTION, settings))
    return record(timed(handled, started))


def bounce(msg: InboundMessage, services: Services) -> Handled:
    """BounceDetail: record the bounce on the recipient (BOUNCE_UPDATE), or only log it when that is empty."""
    return _write(BOUNCE_FUNCTION, Route.BOUNCE, msg, services,
                  lambda item, settings: bounce_changes(settings.bounce_update, item))


def _decide_from_row(request: RowRequest, services: Services) -> Decision:
    """A trimmed context: read the campaign log row and decide from it (a transient failure raises)."""
    try:
        row = services.dataverse.read_row(request.entity_set, request.log_id, request.select)
    except (DataverseRejected, SettingsError) as exc:
        context = request.context
        return Decision(Outcome.REJECTED, f"the context was trimmed and reading campaign log {request.log_id} "
                                          f"failed: {exc}", log_id=context.primary_id,
                        operation_id=context.operation_id, correlation_id=context.correlation_id)
    return decide_row(request, row, services.settings)


def forward(item: WorkItem, settings: Settings, *, source_message_id: str = "",
            not_before: datetime | None = None) -> OutboundMessage:
    queue = settings.opt_out_queue if item.route is Route.OPT_OUT else settings.bounce_queue
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
        queue=queue, body=item.to_json(), message_id=item.message_id, correlation_id=item.correlation_id,
        subject=str(item.route), application_properties=_present(properties), scheduled_enqueue_time=not_before)


def rejected_copy(msg: InboundMessage, reason: str | None, function: str, settings: Settings) -> OutboundMessage:
    """The original body and properties, plus why and where it was rejected, for inspection and redrive."""
    properties = {
        **msg.application_properties,
        "rejected_reason": (reason or "")[:_MAX_REASON],
        "rejected_by": function,
        "rejected_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "original_message_id": msg.message_id or None,
        "original_delivery_count": msg.delivery_count,
    }
    return OutboundMessage(
        queue=settings.rejected_queue, body=msg.body,
        message_id=f"{msg.message_id}:rejected" if msg.message_id else _fallback_id(msg),
        content_type=msg.content_type, correlation_id=msg.correlation_id, subject=function,
        application_properties=_present(properties))


def _write(function: str, expected: Route, msg: InboundMessage, services: Services,
           changes_for: Callable[[WorkItem, Settings], Mapping[str, Any] | None]) -> Handled:
    started = time.perf_counter()
    read = read_work_item(function, expected, msg, services, started)
    if isinstance(read, Handled):
        return read
    handled, item = read
    if not services.recent.claim(item.key):
        return duplicate(handled, item, started)
    done = False
    try:
        handled = _apply(handled, item, msg, services, changes_for, started)
        # A rescheduled or rejected work item is not finished: its later copy, or a redriven one, must run.
        done = handled.outcome not in (Outcome.RESCHEDULED, Outcome.REJECTED)
        return handled
    finally:
        services.recent.release(item.key, done=done)


def read_work_item(function: str, expected: Route, msg: InboundMessage, services: Services,
                   started: float) -> Handled | tuple[Handled, WorkItem]:
    """The work item of a writer's message with its log fields, or the rejection (already kept)."""
    handled = Handled(function=function, outcome=Outcome.REJECTED, message_id=msg.message_id,
                      delivery_count=msg.delivery_count, route=str(expected))
    try:
        item = WorkItem.from_json(msg.body)
        if item.route is not expected:
            raise PermanentError(f"a {item.route} work item reached {function}'s queue")
    except PermanentError as exc:
        return reject(handled, msg, str(exc), services, started)
    return _replace(handled, log_id=item.log_id, operation_id=item.operation_id,
                    correlation_id=item.correlation_id, recipient=str(item.recipient),
                    activity_type=item.activity_type or _code(item.activity_code)), item


def duplicate(handled: Handled, item: WorkItem, started: float) -> Handled:
    return record(timed(_replace(handled, outcome=Outcome.IGNORED,
                                  reason=f"duplicate: work item {item.key} was already handled by this worker"),
                         started))


def _apply(handled: Handled, item: WorkItem, msg: InboundMessage, services: Services,
           changes_for: Callable[[WorkItem, Settings], Mapping[str, Any] | None], started: float) -> Handled:
    settings = services.settings
    changes = changes_for(item, settings)
    if changes is None:
        return record(timed(_replace(handled, outcome=Outcome.APPLIED,
                                      reason="audit only: BOUNCE_UPDATE is empty, nothing written"), started))
    with _outcome_or_retry(handled, started):
        try:
            # A redelivered message may have been applied by the delivery that lost its lock: read back first.
            result = services.dataverse.update(item.recipient.table, item.recipient.id, changes,
                                               verify_first=(msg.delivery_count or 1) > 1)
        except DataverseRejected as exc:
            return reject(_replace(handled, dataverse_requests=exc.requests), msg, str(exc), services, started)
        except DataverseUnavailable as exc:
            if exc.status != 429 or exc.retry_after is None or item.reschedules >= settings.max_reschedules:
                raise
            return reschedule(_replace(handled, dataverse_requests=exc.requests), item, exc.retry_after,
                              services, started)
    if not result.found:
        handled = _replace(handled, outcome=Outcome.RECIPIENT_MISSING,
                           reason=f"{item.recipient.table} {item.recipient.id} does not exist (deleted or merged); not re-created")
    else:
        handled = _replace(handled, outcome=Outcome.APPLIED)
    return record(timed(_replace(handled, dataverse_requests=result.requests), started))


def reschedule(handled: Handled, item: WorkItem, delay: float, services: Services, started: float, *,
               cause: str = "throttled (429)") -> Handled:
    """Put the work item back on its queue, due after ``delay`` seconds, instead of holding a worker
    thread or using up the queue's delivery count (a long Retry-After, or one failed part of a batch)."""
    later = replace(item, reschedules=item.reschedules + 1)
    due = datetime.now(UTC) + timedelta(seconds=delay)
    services.sender.send(forward(later, services.settings, not_before=due))
    return record(timed(_replace(handled, outcome=Outcome.RESCHEDULED,
                                  reason=f"{cause}, waiting {delay:g} s: due again at "
                                         f"{due:%Y-%m-%dT%H:%M:%SZ} as {later.message_id}"), started))


def reject(handled: Handled, msg: InboundMessage, reason: str, services: Services, started: float) -> Handled:
    """Keep the message, with its reason, on the rejected queue; the original then completes."""
    handled = _replace(handled, outcome=Outcome.REJECTED, reason=reason)
    with _outcome_or_retry(handled, started):
        services.sender.send(rejected_copy(msg, reason, handled.function, services.settings))
    return record(timed(handled, started))


class _outcome_or_retry:
    """Logs a ``retry`` line when the block raises, then lets the exception reach the host (→ redelivery)."""

    def __init__(self, handled: Handled, started: float) -> None:
        self.handled, self.started = handled, started

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and isinstance(exc, Exception):
            record(timed(_replace(self.handled, outcome="retry", reason=f"{type(exc).__name__}: {exc}"[:_MAX_REASON]),
                          self.started))
        return False


def timed(handled: Handled, started: float) -> Handled:
    return _replace(handled, duration_ms=(time.perf_counter() - started) * 1000)


def _replace(handled: Handled, **changes: Any) -> Handled:
    return replace(handled, **changes)


def _present(properties: Mapping[str, Any]) -> dict[str, Any]:
    # Service Bus property values must be simple scalars; None is not allowed.
    return {k: v for k, v in properties.items() if isinstance(v, (str, int, float, bool))}


def _code(code: int | None) -> str | None:
    return None if code is None else str(code)


def _fallback_id(msg: InboundMessage) -> str:
    import hashlib

    return hashlib.sha256(msg.body).hexdigest()[:32] + ":rejected"
