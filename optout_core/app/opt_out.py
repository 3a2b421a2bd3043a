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

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from optout_core.app.consent import restated, write_consent
from optout_core.app.outcome import RETRY, OutcomeRecord, log_outcome
from optout_core.app.recent import Claim
from optout_core.app.services import Services
from optout_core.app.settle import after_failure, duplicate, put_back, recipient_missing, reject, take_in
from optout_core.dataverse.errors import DataverseError
from optout_core.domain.consent import Tally
from optout_core.domain.model import OPT_OUT, Outcome, Recipient, Route
from optout_core.domain.routing import row_select
from optout_core.domain.verification import verified
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage

if TYPE_CHECKING:
    from optout_core.app.services import Dataverse
    from optout_core.domain.settings import Settings

# Opt-outs of one recipient in one batch: (message index, its record so far, its work item).
_Group = list[tuple[int, OutcomeRecord, WorkItem]]
BUSY_DELAY = 5.0  # seconds before a copy that met another batch's in-flight copy is tried again


def opt_out_batch(msgs: Sequence[InboundMessage], services: Services) -> list[OutcomeRecord]:
    """Set OPT_OUT_UPDATE on every recipient of the batch: one outcome per message, in order."""
    started = time.perf_counter()
    results: list[OutcomeRecord | None] = [None] * len(msgs)
    accepted: _Group = []
    claimed: set[str] = set()
    for index, msg in enumerate(msgs):
        taken = take_in(OPT_OUT, msg, services, started)
        if isinstance(taken, OutcomeRecord):
            results[index] = taken
            continue
        record, item = taken
        claim = Claim.DONE if item.key in claimed else services.recent.try_claim(item.key)
        if claim is Claim.DONE:
            results[index] = duplicate(record, item, started)
            continue
        if claim is Claim.BUSY:  # another batch of this worker is writing it: never wait on it (no deadlock)
            cause = f"a copy of work item {item.key} is being written by another batch of this worker"
            results[index] = put_back(record, item, BUSY_DELAY, services, started, cause=cause)
            continue
        claimed.add(item.key)
        accepted.append((index, record, item))

    finished: set[str] = set()
    # The host does not renew the lock of a batch: what is not done within the budget is put back.
    deadline = time.monotonic() + services.settings.opt_out_batch_budget
    try:
        if accepted and services.settings.verify_campaign_log:
            accepted = _verify(accepted, msgs, services, results, started, deadline)
        groups: dict[tuple[str, str], _Group] = {}
        for index, record, item in accepted:
            groups.setdefault((item.recipient.table, item.recipient.id), []).append((index, record, item))
        if groups:
            _write_groups(groups, msgs, services, results, finished, started, deadline)
    except Exception as exc:
        # Every message still gets its one outcome line before the host hands the batch back to Service Bus.
        for index, record, _ in accepted:
            if results[index] is None:
                results[index] = log_outcome(
                    record.but(outcome=RETRY, reason=f"{type(exc).__name__}: {exc}"[:1000]), started
                )
        raise
    finally:
        for key in claimed:
            services.recent.release(key, done=key in finished)
    return [r for r in results if r is not None]


@dataclass(frozen=True)
class RecipientWrite:
    """How one recipient's opt-out write ended: its row was found (False: deleted, nothing created), the error that
    ended the write, and with consent on the consent write's tally or error (None when the row was not written)."""

    found: bool
    error: DataverseError | None = None
    consent: Tally | DataverseError | None = None

    def failure(self, wrote: str) -> DataverseError | None:
        """The error that leaves this opt-out unfinished: the write's, or the consent write's restated."""
        if self.error is not None:
            return self.error
        if isinstance(self.consent, DataverseError):
            return restated(self.consent, f"wrote {wrote}, but the consent write failed: {self.consent}")
        return None


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
    consents: dict[Recipient, Tally | DataverseError] = {}
    if consent.enabled:
        done = {
            r: outcome.value.row
            for r, outcome in zip(recipients, result.items, strict=True)
            if outcome.value is not None and outcome.value.found
        }
        written = write_consent(done, {r: log_ids[r] for r in done}, consent, dataverse, deadline=deadline)
        consents, requests = written.by_recipient, requests + written.requests
    return [
        RecipientWrite(outcome.value is not None and outcome.value.found, outcome.error, consents.get(r))
        for r, outcome in zip(recipients, result.items, strict=True)
    ], requests


def _write_groups(
    groups: dict[tuple[str, str], _Group],
    msgs: Sequence[InboundMessage],
    services: Services,
    results: list[OutcomeRecord | None],
    finished: set[str],
    started: float,
    deadline: float,
) -> None:
    consent = services.settings.consent
    # A redelivered or put-back work item may have been applied by an attempt whose answer was lost:
    # the batch then reads the rows back first (one GET batch) and writes only what is missing.
    again = any(
        (msgs[i].delivery_count or 1) > 1 or item.reschedules for members in groups.values() for i, _, item in members
    )
    recipients = [Recipient(*key) for key in groups]
    log_ids = {r: members[0][2].log_id for r, members in zip(recipients, groups.values(), strict=True)}
    written, requests = write_opt_outs(
        recipients, log_ids, services.settings, services.dataverse, verify_first=again, deadline=deadline
    )  # the batch's requests are reported once, on its first message
    wrote = ", ".join(services.settings.opt_out_update)
    for members, outcome in zip(groups.values(), written, strict=True):
        failed = outcome.failure(wrote)
        for index, record, item in members:
            record = record.but(dataverse_requests=record.dataverse_requests + requests)
            requests = 0
            if failed is not None:
                # Not finished: a put-back copy, or a redriven one, must still run.
                results[index] = after_failure(record, item, msgs[index], failed, services, started)
                continue
            reason = None if outcome.found else recipient_missing(item)
            if consent.enabled:
                tally = outcome.consent
                reason = tally.describe(wrote) if isinstance(tally, Tally) else f"{reason}; no consent record written"
            if len(members) > 1:
                reason = (reason + "; " if reason else "") + f"one write for {len(members)} opt-outs of this recipient"
            name = Outcome.APPLIED if outcome.found else Outcome.RECIPIENT_MISSING
            results[index] = log_outcome(record.but(outcome=name, reason=reason), started)
            finished.add(item.key)


def _verify(
    accepted: _Group,
    msgs: Sequence[InboundMessage],
    services: Services,
    results: list[OutcomeRecord | None],
    started: float,
    deadline: float,
) -> _Group:
    """VERIFY_CAMPAIGN_LOG: every work item checked against its campaign log row, all rows read in one $batch.
    Returns the verified items, carrying Dataverse's values; the others end here (rejected, or put back when
    the read failed transiently)."""
    settings = services.settings
    read = services.dataverse.read_rows(
        settings.campaign_log_entity_set,
        [item.log_id for _, _, item in accepted],
        row_select(settings, Route.OPT_OUT),
        deadline=deadline,
    )
    requests = read.requests  # reported once, on the batch's first message
    kept: _Group = []
    for (index, record, item), row in zip(accepted, read.rows, strict=True):
        record = record.but(dataverse_requests=requests)
        requests = 0
        if isinstance(row, DataverseError):
            results[index] = after_failure(record, item, msgs[index], row, services, started)
            continue
        checked = verified(item, row, settings)
        if isinstance(checked, str):
            results[index] = reject(record, msgs[index], checked, services, started)
            continue
        kept.append((index, record.but(recipient=str(checked.recipient)), checked))
    return kept
