"""The whole pipeline in one process: what the deployed functions would do with a message body.

The router, then the opt-out or bounce function, run through the same code as the Functions (one message at
a time, or BulkEmailOptOut's batches), with an in-memory queue (with duplicate detection) in place of Service
Bus and the real Web API client against ``DATAVERSE_URL``. Every setting and portal toggle is honoured as the
deployed app would honour it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from optout_core.app.outcome import OutcomeRecord
from optout_core.app.router import RowUnread, route
from optout_core.app.services import Dataverse, Services
from optout_core.app.settle import work_message_id
from optout_core.app.table import BatchHandler, Entry, Handler, entry_for
from optout_core.domain.errors import TransientError
from optout_core.domain.model import ROUTER, Function, Outcome, Route
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage, OutboundMessage
from optout_dev.queues import InMemoryQueues, delivered

FAILED = "failed"  # a transient failure that outlived its retries (deployed: Service Bus redelivers)


@dataclass(frozen=True)
class RunResult:
    """The final outcome of one message body (the ``run --json`` contract)."""

    source: str
    log_id: str | None
    route: str | None
    outcome: str  # applied, recipient_missing, ignored, rejected or failed
    reason: str | None
    recipient: dict[str, str] | None
    dataverse_requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "log_id": self.log_id,
            "route": self.route,
            "outcome": self.outcome,
            "reason": self.reason,
            "recipient": self.recipient,
            "dataverse_requests": self.dataverse_requests,
        }


class LocalPipeline:
    """Runs message bodies through router → opt-out/bounce, in process. Safe to call from several threads.

    A rescheduled work item (put back) is delivered again once it is due; ``honour_schedule=False``
    delivers it at once and moves this pipeline's clock on by the time skipped, so retry windows still
    close (tests that inject long Retry-After values or long outages). A work item whose function raised
    is delivered again, as Service Bus would, up to ``max_deliveries`` times in all; then it is ``failed``
    (deployed: it would wait in the dead-letter queue).

    :meth:`run` takes one message body from start to end; :meth:`run_burst` takes several that arrive together, and
    hands their opt-out work items to BulkEmailOptOut as one batch (its trigger has ``cardinality="many"``), so
    they are written as one ``$batch``. A batch is redelivered whole, as Service Bus redelivers the messages of
    an invocation that raised.

    ``follow_put_backs=False`` (the ``run`` command) ends an event at its first put-back, with the outcome the
    function reached (``rescheduled``), instead of waiting for the work item to fall due: against an
    unreachable Dataverse that wait would last the whole retry window.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        dataverse: Dataverse | None = None,
        honour_schedule: bool = True,
        max_deliveries: int = 1,
        follow_put_backs: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.queues = InMemoryQueues()
        self._skipped = threading.local()  # per thread: each event runs on one thread, start to end
        self.services = Services(settings, sender=self.queues, dataverse=dataverse, clock=self._clock)
        self._honour_schedule = honour_schedule
        self._max_deliveries = max_deliveries
        self._follow_put_backs = follow_put_backs
        self._sleep = sleep

    def run(self, source: str, body: bytes, *, content_type: str | None = "application/json") -> RunResult:
        routed = self._route(source, body, content_type)
        return routed if isinstance(routed, RunResult) else self._work([routed])[0]

    def run_burst(self, events: Sequence[tuple[str, bytes]]) -> list[RunResult]:
        """Run ``(source, body)`` message bodies that arrive together: the router takes each, then BulkEmailOptOut
        receives all their opt-out work items as one batch, as Service Bus hands its trigger (``cardinality="many"``)
        whatever is waiting; BounceDetail's trigger takes one message, so each bounce is delivered alone. A batch
        whose function raised is delivered again whole; its put-back copies are delivered together once due. One
        result per body, in order."""
        results: list[RunResult | None] = [None] * len(events)
        waiting: dict[Function, list[tuple[int, _Forwarded]]] = {}
        for index, (source, body) in enumerate(events):
            routed = self._route(source, body, "application/json")
            if isinstance(routed, RunResult):
                results[index] = routed
            else:
                waiting.setdefault(routed.entry.function, []).append((index, routed))
        for items in waiting.values():
            batches = [items] if items[0][1].entry.handle_batch else [[item] for item in items]
            for batch in batches:
                for (index, _), result in zip(batch, self._work([f for _, f in batch]), strict=True):
                    results[index] = result
        return [r for r in results if r is not None]

    def _route(self, source: str, body: bytes, content_type: str | None) -> RunResult | _Forwarded:
        """The router's work on one body: the work item it forwarded, or the body's final result."""
        settings = self.services.settings
        if not settings.is_enabled(ROUTER):
            return RunResult(
                source,
                None,
                None,
                str(Outcome.IGNORED),
                f"{ROUTER.name} is switched off: the message stays on {settings.queue(ROUTER)}",
                None,
            )
        message = InboundMessage(body=body, content_type=content_type, message_id=f"local:{source}")
        [routed], [requests] = self._deliver(_one(route), ROUTER, [message])
        if isinstance(routed, TransientError):
            return RunResult(source, None, None, FAILED, f"{ROUTER.name}: {routed}", None, requests)
        if routed.outcome is not Outcome.ROUTED or routed.route is None or routed.log_id is None:
            return _result(source, routed, requests=requests)
        entry = entry_for(Route(routed.route))
        queue = settings.queue(entry.function)
        message_id = self._forwarded(queue, WorkItem.key_for(routed.log_id, Route(routed.route)))
        return _Forwarded(source, routed, entry, queue, message_id, requests)

    def _work(self, batch: Sequence[_Forwarded]) -> list[RunResult]:
        """Deliver the work items of ``batch`` (all of one queue) together to their function, then their put-back
        copies together once due, until each has ended (or, with ``follow_put_backs=False``, been put back)."""
        settings = self.services.settings
        entry, queue = batch[0].entry, batch[0].queue
        handle = entry.handle_batch or _one(entry.handle)
        results: list[RunResult | None] = [None] * len(batch)
        requests = [forwarded.requests for forwarded in batch]
        pending = {index: forwarded.message_id for index, forwarded in enumerate(batch)}
        while pending:
            taken: dict[int, OutboundMessage] = {}
            for index, message_id in pending.items():
                work = self.queues.take(queue, message_id)
                if work is None:  # Service Bus duplicate detection dropped the re-sent work item
                    reason = f"duplicate: work item {message_id} was already queued (Service Bus duplicate detection)"
                    ignored = _result(batch[index].source, batch[index].routed, outcome=Outcome.IGNORED, reason=reason)
                    results[index] = ignored
                else:
                    taken[index] = work
            pending = {}
            if not taken:
                break
            self._wait_until(_due(taken.values()))
            written, sent = self._deliver(handle, entry.function, [delivered(work) for work in taken.values()])
            for (index, work), record, spent in zip(taken.items(), written, sent, strict=True):
                requests[index] += spent
                source, routed = batch[index].source, batch[index].routed
                if isinstance(record, TransientError):
                    reason = f"{entry.function.name}: {record}"
                    results[index] = _result(source, routed, outcome=FAILED, reason=reason, requests=requests[index])
                elif record.outcome is not Outcome.RESCHEDULED or not self._follow_put_backs:
                    results[index] = _result(source, record, route=routed.route, requests=requests[index])
                else:
                    item = WorkItem.from_json(work.body)
                    pending[index] = work_message_id(replace(item, reschedules=item.reschedules + 1), settings)
        return [r for r in results if r is not None]

    def _forwarded(self, queue: str, key: str) -> str:
        """The MessageId the router gave the work item of ``key``: ``key`` itself, or with VERIFY_CAMPAIGN_LOG on
        ``key`` and a digest (:func:`optout_core.app.settle.work_message_id`); ``key`` when it is not on the queue
        (duplicate detection dropped it)."""
        if not self.services.settings.verify_campaign_log:
            return key
        for message in self.queues.messages(queue):
            item = WorkItem.from_json(message.body)
            if item.key == key and not item.reschedules:
                return message.message_id
        return key

    def _deliver(
        self, handle: BatchHandler, function: Function, messages: Sequence[InboundMessage]
    ) -> tuple[list[OutcomeRecord | TransientError], list[int]]:
        """Deliver ``messages`` as one batch as Service Bus would: the whole batch again while the function raises,
        up to ``max_deliveries`` times in all. Each message's outcome (or the last transient error) and the Web API
        requests it took (a batch's requests on one of its messages, as the writer counts them)."""
        requests = 0
        for delivery in range(1, self._max_deliveries + 1):
            try:
                records = handle([replace(m, delivery_count=delivery) for m in messages], self.services)
            except TransientError as exc:
                # A row read the router hands back carries its attempt; a Service Bus failure sent no request.
                requests += exc.attempt.requests if isinstance(exc, RowUnread) else 0
                if delivery == self._max_deliveries:
                    return [exc] * len(messages), [requests] + [0] * (len(messages) - 1)
                continue
            spent = [r.dataverse_requests for r in records]
            spent[0] += requests
            return list(records), spent
        raise AssertionError("max_deliveries is at least 1")

    def _wait_until(self, due: datetime | None) -> None:
        if due is None:
            return
        wait = max(0.0, (due - datetime.now(UTC)).total_seconds())
        if self._honour_schedule:
            self._sleep(wait)
        else:
            self._skipped.seconds = getattr(self._skipped, "seconds", 0.0) + wait

    def _clock(self) -> float:
        """Unix time, moved on by the waits this thread skipped (``honour_schedule=False``): an event's age
        counts only its own waits, however many events other threads run meanwhile."""
        skipped: float = getattr(self._skipped, "seconds", 0.0)
        return time.time() + skipped


@dataclass(frozen=True)
class _Forwarded:
    """A work item the router forwarded for the body of ``source``: its function, queue and MessageId."""

    source: str
    routed: OutcomeRecord
    entry: Entry
    queue: str
    message_id: str
    requests: int  # the router's


def _due(messages: Iterable[OutboundMessage]) -> datetime | None:
    """When the last of ``messages`` falls due (None: all are due now)."""
    return max((m.scheduled_enqueue_time for m in messages if m.scheduled_enqueue_time is not None), default=None)


def _one(handle: Handler) -> BatchHandler:
    """A one-message handler as a batch handler, for batches of one."""

    def handle_one(messages: Sequence[InboundMessage], services: Services) -> list[OutcomeRecord]:
        [message] = messages
        return [handle(message, services)]

    return handle_one


def _result(
    source: str,
    handled: OutcomeRecord,
    *,
    outcome: Any = None,
    reason: str | None = None,
    route: str | None = None,
    requests: int | None = None,
) -> RunResult:
    table, _, row_id = (handled.recipient or "").partition("/")
    return RunResult(
        source=source,
        log_id=handled.log_id,
        route=route or handled.route,
        outcome=str(outcome or handled.outcome),
        reason=reason if reason is not None else handled.reason,
        recipient={"table": table, "id": row_id} if row_id else None,
        dataverse_requests=handled.dataverse_requests if requests is None else requests,
    )
