"""BounceDetail, the bounce-detail workflow: record the bounce or email status on the recipient.

``BOUNCE_UPDATE`` (with its placeholders filled by :func:`optout_core.domain.bounce.bounce_changes`) is
PATCHed onto the recipient; when it is empty the bounce is only logged. Each message runs as a batch of one
through the writers' one path (:mod:`optout_core.app.writer`): taken in, verified, claimed, then written here;
a failed write goes where the one failure policy says (:meth:`optout_core.app.delivery.Delivery.after_failure`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial

from optout_core.app.delivery import Delivery
from optout_core.app.outcome import OutcomeRecord
from optout_core.app.services import Services
from optout_core.app.settle import MESSAGE_BUDGET_SECONDS
from optout_core.app.writer import Ending, Writer, handle
from optout_core.domain.bounce import bounce_changes
from optout_core.domain.model import BOUNCE, Outcome
from optout_core.servicebus.envelopes import InboundMessage


def record_bounce(msg: InboundMessage, services: Services) -> OutcomeRecord:
    """Record one bounce on its recipient: one outcome, or raise so Service Bus delivers it again."""
    [record] = handle(BOUNCE_WRITER, [msg], services)
    return record


def _write(deliveries: Sequence[Delivery], services: Services, deadline: float) -> Iterator[tuple[int, Ending]]:
    for index, delivery in enumerate(deliveries):
        yield index, partial(_write_one, delivery, services, deadline)


def _write_one(delivery: Delivery, services: Services, deadline: float) -> OutcomeRecord:
    # The work item carries Dataverse's values when it was verified, not the message's.
    changes = bounce_changes(services.settings.bounce_update, delivery.item)
    if changes is None:
        return delivery.finish(Outcome.APPLIED, "audit only: BOUNCE_UPDATE is empty, nothing written")
    # A redelivered or put-back work item may have been applied by an attempt whose answer was lost (or whose
    # lock expired): the row is read back first and written only if it does not hold it.
    recipient = delivery.item.recipient
    written = services.dataverse.update(
        recipient.table, recipient.id, changes, verify_first=delivery.again, deadline=deadline
    )
    delivery = delivery.counted(written.requests)
    if written.error is not None:
        return delivery.after_failure(written)
    assert written.value is not None
    if not written.value.found:
        return delivery.finish(Outcome.RECIPIENT_MISSING, delivery.recipient_missing())
    return delivery.finish(Outcome.APPLIED)


BOUNCE_WRITER = Writer(BOUNCE, lambda settings: MESSAGE_BUDGET_SECONDS, _write)
