"""BulkEmailOptOut over a batch of messages: one ``$batch`` request for a whole backlog.

Service Bus hands the function up to ``maxMessageBatchSize`` messages at once. Repeated recipients are
coalesced into one write, and the writes go through ``$batch`` with ``continue-on-error`` (one missing
row must not roll back the others, which rules out ``UpdateMultiple``). Every message still ends in its
own outcome, and settlement stays per message although the host settles the batch as a whole:

* applied, recipient_missing, rejected (kept on the rejected queue), ignored (duplicate): final;
* a write that failed transiently is put back on the queue alone (``rescheduled``), due after its
  Retry-After or a back-off; parts that succeeded are never sent again;
* then the function returns and the host completes the batch. Only when Service Bus itself fails
  (the put-back or the rejected copy cannot be sent) does it raise: the batch is delivered again, and
  the read-back of redelivered work (and this process's memory of finished work) keeps what was
  already applied from being written twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from optout_core.app import pipeline
from optout_core.app.outcome import Handled, record
from optout_core.dataverse.errors import DataverseRejected
from optout_core.servicebus.envelopes import InboundMessage
from optout_core.domain.model import Outcome, Route
from optout_core.app.services import Services
from optout_core.domain.settings import OPT_OUT_FUNCTION
from optout_core.domain.workitem import WorkItem


def opt_out_batch(msgs: Sequence[InboundMessage], services: Services) -> list[Handled]:
    """BulkEmailOptOut for a batch: set OPT_OUT_UPDATE on every recipient, one outcome per message."""
    started = time.perf_counter()
    results: list[Handled | None] = [None] * len(msgs)
    groups: dict[tuple[str, str], list[tuple[int, Handled, WorkItem]]] = {}
    claimed: set[str] = set()
    for index, msg in enumerate(msgs):
        read = pipeline.read_work_item(OPT_OUT_FUNCTION, Route.OPT_OUT, msg, services, started)
        if isinstance(read, Handled):
            results[index] = read
            continue
        handled, item = read
        if item.key in claimed or not services.recent.claim(item.key):
            results[index] = pipeline.duplicate(handled, item, started)
            continue
        claimed.add(item.key)
        groups.setdefault((item.recipient.table, item.recipient.id), []).append((index, handled, item))

    finished: set[str] = set()
    try:
        if groups:
            _write_groups(groups, msgs, services, results, finished, started)
    finally:
        for key in claimed:
            services.recent.release(key, done=key in finished)
    assert all(r is not None for r in results), "every message has an outcome"
    return results  # type: ignore[return-value]


def _write_groups(groups: dict[tuple[str, str], list[tuple[int, Handled, WorkItem]]],
                  msgs: Sequence[InboundMessage], services: Services, results: list[Handled | None],
                  finished: set[str], started: float) -> None:
    from optout_core.dataverse.client import Write  # the client module loads with the first batch, not at indexing

    settings = services.settings
    writes = [Write(table, row_id, settings.opt_out_update) for table, row_id in groups]
    # A redelivered or put-back work item may have been applied by an attempt whose answer was lost:
    # the batch then reads the rows back first (one GET batch) and writes only what is missing.
    again = any((msgs[i].delivery_count or 1) > 1 or item.reschedules
                for members in groups.values() for i, _, item in members)
    result = services.dataverse.update_many(writes, verify_first=again)
    requests = result.requests  # the batch's requests are reported once, on its first message
    for members, outcome in zip(groups.values(), result.outcomes):
        for index, handled, item in members:
            handled = replace(handled, dataverse_requests=requests)
            requests = 0
            error = outcome.error
            if error is None:
                outcome_name = Outcome.APPLIED if outcome.found else Outcome.RECIPIENT_MISSING
                reason = (None if outcome.found else f"{item.recipient.table} {item.recipient.id} does not exist "
                          "(deleted or merged); not re-created")
                if len(members) > 1:
                    reason = (reason + "; " if reason else "") + f"one write for {len(members)} opt-outs of this recipient"
                results[index] = record(pipeline.timed(replace(handled, outcome=outcome_name, reason=reason), started))
            elif isinstance(error, DataverseRejected):
                results[index] = pipeline.reject(handled, msgs[index], str(error), services, started)
                continue  # not finished: a redriven copy must run
            elif item.reschedules < settings.max_reschedules:
                retry = settings.retry  # its Retry-After, else a back-off that doubles with each put-back
                delay = (error.retry_after if error.retry_after is not None
                         else min(retry.backoff_max, retry.backoff * 2 ** item.reschedules))
                results[index] = pipeline.reschedule(handled, item, delay, services, started, cause=str(error))
                continue
            else:
                results[index] = pipeline.reject(
                    handled, msgs[index], f"still failing after {item.reschedules} reschedules: {error}",
                    services, started)
                continue
            finished.add(item.key)
