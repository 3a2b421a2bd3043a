"""What the functions send to Service Bus, and within what time: a work item forwarded to (or put back on) its
function's queue, and a rejected message's kept copy.

Shared by the router and the writers (:mod:`optout_core.app.delivery`). A rejected message is copied, with its
reason, to the rejected queue before the original completes: nothing is dropped silently. When Service Bus
itself fails (the copy cannot be sent), the exception reaches the host and the message is delivered again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from optout_core.domain.model import Outcome
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
        message_id=work_message_id(item, settings),
        correlation_id=item.correlation_id,
        subject=str(item.route),
        application_properties=_present(properties),
        scheduled_enqueue_time=not_before,
    )


def work_message_id(item: WorkItem, settings: Settings) -> str:
    """The MessageId of ``item`` on its queue: deterministic, so duplicate detection drops a re-send.

    With ``VERIFY_CAMPAIGN_LOG`` on, it also carries a short digest of what verification checks (recipient and
    activity type): a forged copy carrying a real log id then has an id of its own, so the queue's duplicate
    detection cannot drop the genuine copy behind it before the writer has verified either."""
    if not settings.verify_campaign_log:
        return item.message_id
    claimed = f"{item.recipient}|{item.activity_code}|{item.activity_type}".encode("utf-8", "surrogatepass")
    return derived_message_id(item.message_id, ":" + hashlib.sha256(claimed).hexdigest()[:12])


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
