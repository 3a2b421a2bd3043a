"""The one path of the writers (BulkEmailOptOut, and BounceDetail as a batch of one): a batch of messages in, one
outcome per message out, in order.

1. **take in** each message's work item; one that is not a valid work item for this function is kept as
   rejected;
2. **verify** (``VERIFY_CAMPAIGN_LOG``) every work item against its campaign log row, one ``$batch`` of reads:
   before anything that could make a later copy a duplicate, so a forged copy carrying a real log id is
   rejected without suppressing the genuine one;
3. **claim** each work item in this process: a copy finished recently is a duplicate, a copy another batch is
   writing right now is put back within the retry window;
4. **write**: the function's own step (:class:`Writer`), each message ending in its outcome.

Claims are released whatever happens, a raise in any step included (the batch then goes back to Service Bus,
every message with a ``retry`` line); a work item is remembered as finished only when its outcome says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

from optout_core.app.delivery import FINISHED, Delivery, Received
from optout_core.app.outcome import RETRY, OutcomeRecord, log_outcome
from optout_core.app.recent import Claim
from optout_core.app.services import Services
from optout_core.domain.errors import PermanentError
from optout_core.domain.model import Function
from optout_core.domain.settings import Settings
from optout_core.servicebus.envelopes import InboundMessage

# The function's write over the deliveries that reached it, within the deadline: each delivery's position in the
# sequence with the step that ends it, as its write is known. The path calls each step itself, so that an ending
# that raises (Service Bus refusing a put-back) has logged its own retry line, and the others theirs.
Ending = Callable[[], OutcomeRecord]
Write = Callable[[Sequence[Delivery], Services, float], Iterator[tuple[int, Ending]]]


@dataclass(frozen=True)
class Writer:
    """A writer function: its table entry, the seconds its Dataverse calls may take, and its write step."""

    function: Function
    budget: Callable[[Settings], float]
    write: Write


def handle(writer: Writer, msgs: Sequence[InboundMessage], services: Services) -> list[OutcomeRecord]:
    """Every message of the batch through the writer's steps: one outcome per message, in order."""
    batch = _Batch(writer, services, time.perf_counter(), time.monotonic() + writer.budget(services.settings))
    results: list[OutcomeRecord | None] = [None] * len(msgs)
    try:
        pending = batch.take_in(msgs, results)
        if pending and services.settings.verify_campaign_log:
            pending = batch.verify(pending, results)
        pending = batch.claim(pending, results)
        if pending:
            for position, ending in writer.write([delivery for _, delivery in pending], services, batch.deadline):
                batch.end(results, pending[position][0], ending)
    except Exception as exc:
        # Every message still gets its one outcome line before the host hands the batch back to Service Bus.
        batch.retry_the_rest(msgs, results, exc)
        raise
    finally:
        batch.release(results)
    return [r for r in results if r is not None]


_HANDED_BACK = OutcomeRecord("", RETRY)  # a message whose ending is under way (or raised): never done
Pending = list[tuple[int, Delivery]]  # the deliveries still going, with their index in the batch


@dataclass
class _Batch:
    writer: Writer
    services: Services
    started: float
    deadline: float  # time.monotonic(): the host does not renew a batch's lock, what is not done is put back
    claimed: dict[str, int] = field(default_factory=dict)  # work item key -> index of the message holding it

    def take_in(self, msgs: Sequence[InboundMessage], results: list[OutcomeRecord | None]) -> Pending:
        pending: Pending = []
        for index, msg in enumerate(msgs):
            received = Received(self.writer.function, msg, self.services, self.started)
            try:
                pending.append((index, received.take_in()))
            except PermanentError as exc:
                self.end(results, index, partial(received.reject, str(exc)))
        return pending

    def verify(self, pending: Pending, results: list[OutcomeRecord | None]) -> Pending:
        """Each work item with its campaign log row's values (all rows read in one ``$batch``); the others end
        here: rejected, or put back when the read failed transiently."""
        # Loaded only where VERIFY_CAMPAIGN_LOG is on: the routing rules are not a writer's first event's cost.
        from optout_core.domain.routing import row_select
        from optout_core.domain.verification import verified

        settings = self.services.settings
        assert self.writer.function.route is not None
        read = self.services.dataverse.read_rows(
            settings.campaign_log_entity_set,
            [delivery.item.log_id for _, delivery in pending],
            row_select(settings, self.writer.function.route),
            deadline=self.deadline,
        )
        kept: Pending = []
        requests = read.requests  # reported once, on the batch's first message
        for (index, delivery), row in zip(pending, read.items, strict=True):
            counted, requests = delivery.counted(requests), 0
            if row.error is not None:
                self.end(results, index, partial(counted.after_failure, row))
                continue
            checked = verified(counted.item, row.value, settings)
            if isinstance(checked, str):
                self.end(results, index, partial(counted.reject, checked))
                continue
            kept.append((index, counted.verified(checked)))
        return kept

    def claim(self, pending: Pending, results: list[OutcomeRecord | None]) -> Pending:
        """Claim each work item in this process, never waiting: two batches holding copies of A and B in opposite
        order must not wait on each other."""
        accepted: Pending = []
        for index, delivery in pending:
            key = delivery.item.key
            claim = Claim.DONE if key in self.claimed else self.services.recent.try_claim(key)
            if claim is Claim.DONE:
                self.end(results, index, delivery.duplicate)
            elif claim is Claim.BUSY:
                self.end(results, index, delivery.busy)
            else:
                self.claimed[key] = index
                accepted.append((index, delivery))
        return accepted

    @staticmethod
    def end(results: list[OutcomeRecord | None], index: int, ending: Ending) -> None:
        """Message ``index`` ends as ``ending`` says. Until it returns, the message counts as handed back: an ending
        that raises has logged that line itself (:class:`optout_core.app.outcome.outcome_or_retry`)."""
        results[index] = _HANDED_BACK
        results[index] = ending()

    def release(self, results: list[OutcomeRecord | None]) -> None:
        for key, index in self.claimed.items():
            outcome = results[index]
            self.services.recent.release(key, done=outcome is not None and outcome.outcome in FINISHED)

    def retry_the_rest(
        self, msgs: Sequence[InboundMessage], results: list[OutcomeRecord | None], exc: Exception
    ) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        for index, msg in enumerate(msgs):
            if results[index] is None:
                record = Received(self.writer.function, msg, self.services, self.started).record
                results[index] = log_outcome(record.but(outcome=RETRY, reason=reason), self.started)
