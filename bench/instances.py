"""A fleet of worker processes running BulkEmailOptOut against one stand-in: what the fleet and backlog
measurements share (``bench/fleet.py`` and ``bench/backlog.py`` say what each measures).

In Azure, Service Bus hands batches of the opt-out queue to every instance of the app, and each instance has
its own throttle gate while all of them share one application user's limits. Here K worker processes (the
instances) each run ``invocations`` threads (concurrent function invocations), each thread taking batches
from one shared queue (``multiprocessing.Queue``, standing in for the opt-out queue) and handing them to
:func:`optout_core.app.opt_out.opt_out_batch`, the code the deployed function runs, with the real Web API
client, against one stand-in in a process of its own. A work item put back (a write that outlived its
retries) goes back to the same thread's next delivery once due, as Service Bus would redeliver it.

Work items are made from one routed template (the router's real output) by swapping ids, so a batch of 1,000
costs next to nothing to build; a test checks that every one of them parses as the work item it names.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import opt_out_body, pipeline_settings, quiet_logging

# A batch: (batch number, [(event number, recipient row id), ...])
Task = tuple[int, list[tuple[int, str]]]

_TEMPLATE_LOG = "0ddba11a-0000-4000-8000-000000000000"
_TEMPLATE_RECIPIENT = "0ddba11b-0000-4000-8000-000000000000"


def event_log_id(tag: int, event: int) -> str:
    return str(uuid.UUID(int=(tag << 96) | event, version=4))


class WorkItems:
    """Opt-out work items as CampaignLogRouter puts them on the opt-out queue, for any log id and recipient."""

    def __init__(self, settings: Any) -> None:
        from optout_core.app.router import route
        from optout_core.app.services import Services
        from optout_core.servicebus.envelopes import InboundMessage
        from optout_dev.queues import InMemoryQueues

        queues = InMemoryQueues()
        body = opt_out_body(_TEMPLATE_LOG, ("contact", _TEMPLATE_RECIPIENT))
        handled = route(
            InboundMessage(body=body, message_id="template", delivery_count=1), Services(settings, sender=queues)
        )
        if str(handled.outcome) != "routed":
            raise RuntimeError(f"the template event was not routed: {handled.outcome}")
        (self._template,) = queues.messages(settings.opt_out_queue)

    def make(self, tag: int, events: Sequence[tuple[int, str]]) -> list[Any]:
        """Inbound messages (first delivery) for ``events``: (event number, recipient contact id) each."""
        from optout_core.servicebus.envelopes import InboundMessage

        template = self._template
        out = []
        for event, recipient in events:
            log_id = event_log_id(tag, event)

            def swap(text: str, log_id: str = log_id, recipient: str = recipient) -> str:
                return text.replace(_TEMPLATE_LOG, log_id).replace(_TEMPLATE_RECIPIENT, recipient)

            out.append(
                InboundMessage(
                    body=swap(template.body.decode("ascii")).encode("ascii"),
                    message_id=swap(template.message_id),
                    delivery_count=1,
                    correlation_id=template.correlation_id and swap(template.correlation_id),
                    application_properties={
                        k: swap(v) if isinstance(v, str) else v for k, v in template.application_properties.items()
                    },
                )
            )
        return out


# ----- the worker process ----------------------------------------------------------------------------------


def _worker(config: dict[str, Any], tasks: Any, results: Any, start: Any) -> None:
    """One instance: ``invocations`` threads taking batches until they take a ``None``."""
    quiet_logging()
    from optout_core.app.opt_out import opt_out_batch
    from optout_core.app.services import Services
    from optout_dev.queues import InMemoryQueues, delivered

    settings = pipeline_settings(
        config["url"],
        DATAVERSE_MAX_CONCURRENCY=str(config["gate"]),
        DATAVERSE_PROTECTION_WINDOW_SECONDS=str(config["window"]),
    )
    queues = InMemoryQueues()
    services = Services(settings, sender=queues)
    items = WorkItems(settings)
    lock = threading.Lock()
    results.put({"kind": "ready", "pid": os.getpid()})
    start.wait()
    cpu_started = time.process_time()

    def redeliveries() -> list[Any]:
        """Put-back copies on this instance's queue, each once due (as Service Bus would deliver them)."""
        out = []
        with lock:
            while (message := queues.take(settings.opt_out_queue)) is not None:
                out.append(message)
        if not out:
            return []
        due = max((m.scheduled_enqueue_time.timestamp() for m in out if m.scheduled_enqueue_time), default=0.0)
        if due > time.time():
            time.sleep(due - time.time())
        return [delivered(m, 1) for m in out]

    def invocation() -> None:
        while True:
            try:
                task = tasks.get(timeout=0.05)
            except queue_module.Empty:
                task = False
            if task is None:
                tasks.put(None)  # still the end for the other threads and instances
                again = redeliveries()
                if not again:
                    return
                batch_no, msgs = -1, again
            elif task is False:
                again = redeliveries()
                if not again:
                    continue
                batch_no, msgs = -1, again
            else:
                batch_no, events = task
                msgs = items.make(config["tag"], events) + redeliveries()
            outcomes: dict[str, int] = {}
            requests = 0
            error = None
            try:
                for record in opt_out_batch(msgs, services):
                    outcomes[str(record.outcome)] = outcomes.get(str(record.outcome), 0) + 1
                    requests += record.dataverse_requests
            except Exception as exc:  # noqa: BLE001 — counted: the batch would be redelivered
                error = f"{type(exc).__name__}: {exc}"[:200]
            results.put(
                {
                    "kind": "batch",
                    "batch": batch_no,
                    "t": time.monotonic(),
                    "messages": len(msgs),
                    "outcomes": outcomes,
                    "requests": requests,
                    "error": error,
                }
            )

    threads = [threading.Thread(target=invocation, daemon=True) for _ in range(config["invocations"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(
        {
            "kind": "done",
            "pid": os.getpid(),
            "cpu_s": time.process_time() - cpu_started,
            "peak_rss_mb": round(_peak_rss_bytes() / 2**20, 2),
        }
    )


def _peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries that across the exec that
    starts a spawned process, so it would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


# ----- the parent's side -------------------------------------------------------------------------------------


@dataclass
class FleetRun:
    """What a fleet run observed, from the workers' side (the stand-in's is read by the caller)."""

    started: float  # time.monotonic() when the workers were let go
    finished: float
    batches: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)

    def outcomes(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for batch in self.batches:
            for name, count in batch["outcomes"].items():
                total[name] = total.get(name, 0) + count
        return total

    @property
    def errors(self) -> list[str]:
        return [b["error"] for b in self.batches if b["error"]]


def run_fleet(  # noqa: PLR0913 - the fleet's shape, each keyword-only
    url: str,
    tasks: Iterator[Task] | Sequence[Task],
    *,
    workers: int,
    invocations: int,
    gate: int,
    tag: int,
    window: float,
) -> FleetRun:
    """Run ``workers`` instances over ``tasks``; returns once every batch and put-back is handled. ``window``: the
    stand-in's sliding window (Dataverse's 300 s, scaled down), given to each instance as
    DATAVERSE_PROTECTION_WINDOW_SECONDS, as the app would be told it against such a stand-in."""
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as instances are
    task_queue: Any = context.Queue()
    results: Any = context.Queue()
    start = context.Event()
    config = {"url": url, "invocations": invocations, "gate": gate, "tag": tag, "window": window}
    processes = [context.Process(target=_worker, args=(config, task_queue, results, start)) for _ in range(workers)]
    for process in processes:
        process.start()
    try:
        ready = 0
        while ready < workers:
            message = results.get(timeout=120)
            ready += message["kind"] == "ready"
        for task in tasks:
            task_queue.put(task)
        task_queue.put(None)  # the end: each thread that takes it puts it back for the next
        run = FleetRun(started=time.monotonic(), finished=0.0)
        start.set()
        while len(run.workers) < workers:
            message = results.get(timeout=600)
            if message["kind"] == "batch":
                run.batches.append(message)
            elif message["kind"] == "done":
                run.workers.append(message)
        run.finished = time.monotonic()
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()  # our own child, by its handle
                process.join()
    return run


def admitted_utilisation(admissions: Sequence[float], requests: int, window: float, windows: int) -> float | None:
    """The ceiling's definition over the stand-in's admission times: under "at most N in any W seconds", request
    j·N+1 comes no sooner than j·W after request 1, so k·W ÷ (time from request 1 to request k·N+1)."""
    ordered = sorted(admissions)
    if len(ordered) <= windows * requests:
        return None
    reached = ordered[windows * requests] - ordered[0]
    return round(windows * window / reached, 3) if reached > 0 else None


def rate_series(times: Sequence[float], origin: float, step: float) -> list[tuple[float, float]]:
    """(seconds since ``origin``, events per second) in bins of ``step`` seconds."""
    if not times:
        return []
    bins: dict[int, int] = {}
    for t in times:
        index = int((t - origin) // step)
        bins[index] = bins.get(index, 0) + 1
    last = max(bins)
    return [(round((i + 0.5) * step, 3), round(bins.get(i, 0) / step, 2)) for i in range(last + 1)]
