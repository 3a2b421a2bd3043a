"""BounceDetail, the bounce-detail workflow: record the bounce or email status on the recipient.

``BOUNCE_UPDATE`` (with its placeholders filled by :func:`optout_core.domain.bounce.bounce_changes`) is
PATCHed onto the recipient; when it is empty the bounce is only logged. A failed write goes where the one
failure policy says (:func:`optout_core.app.settle.after_failure`).
"""

from __future__ import annotations

import time

from optout_core.app.outcome import OutcomeRecord, log_outcome
from optout_core.app.services import Services
from optout_core.app.settle import after_failure, duplicate, message_deadline, recipient_missing, reject, take_in
from optout_core.dataverse.errors import DataverseError
from optout_core.domain.bounce import bounce_changes
from optout_core.domain.model import BOUNCE, Outcome, Route
from optout_core.domain.routing import row_select
from optout_core.domain.verification import verified
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage


def record_bounce(msg: InboundMessage, services: Services) -> OutcomeRecord:
    """Record one bounce on its recipient: one outcome, or raise so Service Bus delivers it again."""
    started = time.perf_counter()
    deadline = message_deadline()
    taken = take_in(BOUNCE, msg, services, started)
    if isinstance(taken, OutcomeRecord):
        return taken
    record, item = taken
    if not services.recent.claim(item.key):
        return duplicate(record, item, started)
    done = False
    try:
        changes = bounce_changes(services.settings.bounce_update, item)
        if changes is None:
            done = True
            return log_outcome(
                record.but(outcome=Outcome.APPLIED, reason="audit only: BOUNCE_UPDATE is empty, nothing written"),
                started,
            )
        if services.settings.verify_campaign_log:
            checked = _verify(record, item, msg, services, started, deadline)
            if isinstance(checked, OutcomeRecord):
                return checked
            record, item = checked
            changes = bounce_changes(services.settings.bounce_update, item)  # Dataverse's values, not the message's
            assert changes is not None
        # A redelivered or put-back work item may have been applied by an attempt whose answer was lost (or whose
        # lock expired): the row is read back first and written only if it does not hold it.
        again = (msg.delivery_count or 1) > 1 or item.reschedules > 0
        table, row_id = item.recipient.table, item.recipient.id
        written = services.dataverse.update(table, row_id, changes, verify_first=again, deadline=deadline)
        record = record.but(dataverse_requests=record.dataverse_requests + written.requests)
        if written.error is not None:
            return after_failure(record, item, msg, written.error, services, started)
        done = True
        assert written.value is not None
        if not written.value.found:
            return log_outcome(record.but(outcome=Outcome.RECIPIENT_MISSING, reason=recipient_missing(item)), started)
        return log_outcome(record.but(outcome=Outcome.APPLIED), started)
    finally:
        # A rescheduled or rejected work item is not finished: its later copy, or a redriven one, must run.
        services.recent.release(item.key, done=done)


def _verify(
    record: OutcomeRecord, item: WorkItem, msg: InboundMessage, services: Services, started: float, deadline: float
) -> OutcomeRecord | tuple[OutcomeRecord, WorkItem]:
    """VERIFY_CAMPAIGN_LOG: the work item with its campaign log row's values, or how the message ended."""
    settings = services.settings
    read = services.dataverse.read_rows(
        settings.campaign_log_entity_set, [item.log_id], row_select(settings, Route.BOUNCE), deadline=deadline
    )
    [row] = read.rows
    record = record.but(dataverse_requests=read.requests)
    if isinstance(row, DataverseError):
        return after_failure(record, item, msg, row, services, started)
    checked = verified(item, row, settings)
    if isinstance(checked, str):
        return reject(record, msg, checked, services, started)
    return record.but(recipient=str(checked.recipient)), checked
