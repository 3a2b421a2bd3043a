"""The whole pipeline in one process: what the deployed functions would do with a message body.

The router, then the opt-out or bounce function, run through the same code as the Functions, with an
in-memory queue (with duplicate detection) in place of Service Bus and the real Web API client against
``DATAVERSE_URL``. Every setting and portal toggle is honoured as the deployed app would honour it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from optout_core.app.outcome import OutcomeRecord
from optout_core.app.router import RowUnread, route
from optout_core.app.services import Dataverse, Services
from optout_core.app.settle import work_message_id
from optout_core.app.table import Handler, entry_for
from optout_core.domain.errors import TransientError
from optout_core.domain.model import ROUTER, Function, Outcome, Route
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage
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
        routed, requests = self._deliver(route, ROUTER, message)
        if isinstance(routed, TransientError):
            return RunResult(source, None, None, FAILED, f"{ROUTER.name}: {routed}", None, requests)
        if routed.outcome is not Outcome.ROUTED or routed.route is None or routed.log_id is None:
            return _result(source, routed, requests=requests)
        entry = entry_for(Route(routed.route))
        queue = settings.queue(entry.function)
        message_id = self._forwarded(queue, WorkItem.key_for(routed.log_id, Route(routed.route)))
        while True:
            work = self.queues.take(queue, message_id)
            if work is None:  # Service Bus duplicate detection dropped the re-sent work item
                return _result(
                    source,
                    routed,
                    outcome=Outcome.IGNORED,
                    reason=f"duplicate: work item {message_id} was already queued (Service Bus duplicate detection)",
                )
            self._wait_until(work.scheduled_enqueue_time)
            written, sent = self._deliver(
                entry.handle,
                entry.function,
                delivered(work),
            )
            requests += sent
            if isinstance(written, TransientError):
                return _result(
                    source, routed, outcome=FAILED, reason=f"{entry.function.name}: {written}", requests=requests
                )
            if written.outcome is not Outcome.RESCHEDULED or not self._follow_put_backs:
                return _result(source, written, route=routed.route, requests=requests)
            item = WorkItem.from_json(work.body)
            message_id = work_message_id(replace(item, reschedules=item.reschedules + 1), settings)

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
        self, handle: Handler, function: Function, message: InboundMessage
    ) -> tuple[OutcomeRecord | TransientError, int]:
        """Deliver ``message`` as Service Bus would: again while the function raises, up to ``max_deliveries``
        times in all. The outcome (or the last transient error) and the Web API requests it took."""
        requests = 0
        for delivery in range(1, self._max_deliveries + 1):
            try:
                record = handle(replace(message, delivery_count=delivery), self.services)
            except TransientError as exc:
                # A row read the router hands back carries its attempt; a Service Bus failure sent no request.
                requests += exc.attempt.requests if isinstance(exc, RowUnread) else 0
                if delivery == self._max_deliveries:
                    return exc, requests
                continue
            return record, requests + record.dataverse_requests
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
