"""BulkEmailOptOut, the opt-out workflow, over a batch of messages: one ``$batch`` request for a whole backlog.

Service Bus hands the function up to ``maxMessageBatchSize`` messages at once. Repeated recipients are
coalesced into one write, and the writes go through ``$batch`` with ``continue-on-error`` (one missing
row must not roll back the others, which rules out ``UpdateMultiple``). Every message still ends in its
own outcome, and settlement stays per message although the host settles the batch as a whole:

* applied, recipient_missing, rejected (kept on the rejected queue), ignored (duplicate): final;
* a write that failed transiently is put back on the queue alone (``rescheduled``), as the one failure
  policy says; parts that succeeded are never sent again;
* then the function returns and the host completes the batch. Only when Service Bus itself fails
  (the put-back or the rejected copy cannot be sent) does it raise: the batch is delivered again, and
  the read-back of redelivered work (and this process's memory of finished work) keeps what was
  already applied from being written twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from optout_core.app.delivery import Delivery
from optout_core.app.outcome import OutcomeRecord
from optout_core.app.services import Services
from optout_core.app.writer import Ending, Writer, handle
from optout_core.dataverse.errors import DataverseError
from optout_core.dataverse.result import Attempt
from optout_core.domain.model import OPT_OUT, Outcome, Recipient
from optout_core.servicebus.envelopes import InboundMessage

if TYPE_CHECKING:
    from optout_core.app.services import Dataverse
    from optout_core.dataverse.client import Written
    from optout_core.domain.consent import Tally
    from optout_core.domain.settings import Settings


def opt_out_batch(msgs: Sequence[InboundMessage], services: Services) -> list[OutcomeRecord]:
    """Set OPT_OUT_UPDATE on every recipient of the batch: one outcome per message, in order."""
    return handle(OPT_OUT_WRITER, msgs, services)


@dataclass(frozen=True)
class RecipientWrite:
    """How one recipient's opt-out write ended: its row was found (False: deleted, nothing created), the error that
    ended the write, and with consent on the consent write's tally or error (None when the row was not written)."""

    found: bool
    error: DataverseError | None = None
    consent: Tally | DataverseError | None = None
    attempts: int = 0  # tries of the recipient write made in this process (the failure policy's count)
    consent_attempts: int = 0  # tries of the consent operation whose error ended the consent write

    def failure(self, wrote: str) -> DataverseError | None:
        """The error that leaves this opt-out unfinished: the write's, or the consent write's restated."""
        if self.error is not None:
            return self.error
        if isinstance(self.consent, DataverseError):
            from optout_core.app.consent import restated

            return restated(self.consent, f"wrote {wrote}, but the consent write failed: {self.consent}")
        return None

    def failed(self, wrote: str) -> Attempt[None] | None:
        """:meth:`failure` as the attempt that ended this opt-out, with its tries, for the failure policy."""
        error = self.failure(wrote)
        if error is None:
            return None
        return Attempt(error=error, attempts=self.attempts if self.error is not None else self.consent_attempts)


def write_opt_outs(
    recipients: Sequence[Recipient],
    log_ids: Mapping[Recipient, str],
    settings: Settings,
    dataverse: Dataverse,
    *,
    verify_first: bool = False,
    deadline: float | None = None,
) -> tuple[list[RecipientWrite], int]:
    """OPT_OUT_UPDATE onto each recipient once (update-only ``$batch`` PATCH), then the consent write when it is on:
    one result per recipient, in order, and the requests it took. ``log_ids``: the campaign log each recipient's
    consent record names. BulkEmailOptOut and the audit's repair both write through here."""
    from optout_core.dataverse.client import Write  # the client module loads with the first batch, not at indexing

    consent = settings.consent
    writes = [Write(r.table, r.id, settings.opt_out_update) for r in recipients]
    # With consent on, the addresses come back with the write: one request for both.
    returning = consent.address_columns if consent.enabled else ()
    result = dataverse.update_many(writes, verify_first=verify_first, deadline=deadline, returning=returning)
    requests = result.requests
    consents: dict[Recipient, Tally | Attempt[Any]] = {}
    if consent.enabled:
        done = {
            r: outcome.value.row
            for r, outcome in zip(recipients, result.items, strict=True)
            if outcome.value is not None and outcome.value.found
        }
        from optout_core.app.consent import write_consent  # loaded only where the consent write is on

        written = write_consent(done, {r: log_ids[r] for r in done}, consent, dataverse, deadline=deadline)
        consents, requests = written.by_recipient, requests + written.requests
    return [_recipient_write(outcome, consents.get(r)) for r, outcome in zip(recipients, result.items, strict=True)], (
        requests
    )


def _recipient_write(write: Attempt[Written], consent: Tally | Attempt[Any] | None) -> RecipientWrite:
    found = write.value is not None and write.value.found
    if isinstance(consent, Attempt):
        return RecipientWrite(found, write.error, consent.error, write.attempts, consent.attempts)
    return RecipientWrite(found, write.error, consent, write.attempts)


def _write(deliveries: Sequence[Delivery], services: Services, deadline: float) -> Iterator[tuple[int, Ending]]:
    """One write per recipient (repeated recipients coalesced), then each delivery's outcome."""
    groups: dict[Recipient, list[int]] = {}
    for index, delivery in enumerate(deliveries):
        groups.setdefault(delivery.item.recipient, []).append(index)
    # A redelivered or put-back work item may have been applied by an attempt whose answer was lost:
    # the batch then reads the rows back first (one GET batch) and writes only what is missing.
    again = any(delivery.again for delivery in deliveries)
    log_ids = {recipient: deliveries[members[0]].item.log_id for recipient, members in groups.items()}
    written, requests = write_opt_outs(
        list(groups), log_ids, services.settings, services.dataverse, verify_first=again, deadline=deadline
    )
    for members, outcome in zip(groups.values(), written, strict=True):
        for index in members:
            delivery, requests = deliveries[index].counted(requests), 0  # the batch's requests: on its first
            yield index, partial(_ended, delivery, outcome, len(members))


def _ended(delivery: Delivery, outcome: RecipientWrite, together: int) -> OutcomeRecord:
    """How one opt-out ended, from its recipient's write (``together``: opt-outs of the recipient in the batch)."""
    settings = delivery.services.settings
    wrote = ", ".join(settings.opt_out_update)
    failed = outcome.failed(wrote)
    if failed is not None:  # not finished: a put-back copy, or a redriven one, must still run
        return delivery.after_failure(failed)
    reason = None if outcome.found else delivery.recipient_missing()
    if settings.consent.enabled:
        from optout_core.domain.consent import Tally  # loaded only where the consent write is on

        tally = outcome.consent
        reason = tally.describe(wrote) if isinstance(tally, Tally) else f"{reason}; no consent record written"
    if together > 1:
        reason = (reason + "; " if reason else "") + f"one write for {together} opt-outs of this recipient"
    return delivery.finish(Outcome.APPLIED if outcome.found else Outcome.RECIPIENT_MISSING, reason)


OPT_OUT_WRITER = Writer(OPT_OUT, lambda settings: settings.opt_out_batch_budget, _write)
