"""``backlog_drain_vs_limit`` and ``optouts_per_request_backlog``: a 100,000-event wave drained within the limits.

100,000 opt-out work items wait on the opt-out queue (a spam-complaint wave or a suppression-list import:
``RECIPIENT_SHARE`` of the events name a recipient that other events of the wave name too). ``INSTANCES``
worker processes (``bench/instances.py``) drain it, each with ``INVOCATIONS`` concurrent BulkEmailOptOut
invocations taking batches of up to 1,000 (host.json ``maxMessageBatchSize``), through the real code path,
against one stand-in that enforces one user's limits with time scaled down (``ServiceProtection.scaled``):
requests per window, 52 in flight, and the combined execution time of the requests within the window (those
running count as far as they have run), where every operation inside a ``$batch`` takes a service time
(``latency``) and a ``$batch``'s whole time counts: a backlog written 1,000 operations per request runs into the
execution-time limit, as the api-limits article warns. :func:`settings` gives the scale.

* ``backlog_drain_vs_limit``: how much of what the binding limit allows the drain used: the limit's sliding
  window (requests admitted, or execution milliseconds finished, within the last W seconds) ÷ its budget,
  averaged over the drain after its first window (``_window_fill``). The binding limit is the one that allows
  fewer operations per second (N/W × operations per request against (B/W) ÷ execution milliseconds per
  operation, both measured). Above 1.0 would mean the stand-in let more through than its budget (requests
  running when the window fills still finish and count); the peak fill is reported beside it.
* ``optouts_per_request_backlog``: applied opt-outs ÷ every Web API request the stand-in received.
* Every event must end ``applied`` exactly once (one outcome per event, no event left or repeated) and every
  recipient must hold the update.
"""

from __future__ import annotations

import random
from typing import Any

from .instances import Task, rate_series, run_fleet
from .standin_proc import RemoteStandIn, row_id

PREFIX, TAG = 0xBAC1, 0xBAC
BATCH = 1000
RECIPIENT_SHARE = 0.7  # distinct recipients per event: 30 % of the events repeat a recipient of the wave
INSTANCES, INVOCATIONS = 2, 2


def settings(quick: bool) -> dict[str, Any]:
    """Time scaled down 30x (full: a 10 s window) or 60x (quick: 5 s) with Dataverse's request rate kept; every
    operation in a ``$batch`` takes 0.5 ms of service time (plus the stand-in's own work), and the execution
    budget is 1.5 s (full) or 0.6 s (quick) per second of window (Dataverse: 4 s): so the execution-time limit
    binds at about 2,500 (full) or 1,000 (quick) operations a second, which this 2-core machine can serve, the
    wave lasts about four windows, and a 1,000-operation ``$batch`` lasts a small part of the window, as with
    Dataverse's 300 s."""
    window = 5.0 if quick else 10.0
    factor = 300.0 / window
    return {
        "events": 20_000 if quick else 100_000,
        "latency": 0.0005,
        "protection": {
            "requests": round(6000 / factor),
            "window": window,
            "concurrent": 52,
            "execution_ms": (600.0 if quick else 1500.0) * window,
            "retry_after_step": 1.0 / factor,
        },
    }


def waves(events: int, seed: int = 13) -> list[int]:
    """The recipient (index) of each event: every recipient at least once, the rest repeats, shuffled."""
    rng = random.Random(seed)
    recipients = int(events * RECIPIENT_SHARE)
    wave = list(range(recipients)) + [rng.randrange(recipients) for _ in range(events - recipients)]
    rng.shuffle(wave)
    return wave


def run(quick: bool) -> dict[str, Any]:
    config = settings(quick)
    limits = config["protection"]
    wave = waves(config["events"])
    recipients = max(wave) + 1
    tasks: list[Task] = [
        (b, [(e, row_id(PREFIX, wave[e])) for e in range(start, min(start + BATCH, len(wave)))])
        for b, start in enumerate(range(0, len(wave), BATCH))
    ]
    with RemoteStandIn(protection=limits, latency=config["latency"]) as standin:
        standin.seed(PREFIX, recipients)
        before = standin.counts()
        run = run_fleet(
            standin.url,
            tasks,
            workers=INSTANCES,
            invocations=INVOCATIONS,
            gate=8,
            tag=TAG,
            window=limits["window"],
        )
        stats = standin.stats()
        counts = standin.counts()
        holding = standin.holding(PREFIX, recipients)
    outcomes = run.outcomes()
    applied = outcomes.get("applied", 0)
    finals = sum(count for name, count in outcomes.items() if name != "rescheduled")
    requests = counts["requests"] - before["requests"]
    operations = counts["operations"] - before["operations"]
    executions = stats["executions"]
    admissions = stats["admissions"]
    origin = admissions[0]
    w = limits["window"]

    last = admissions[-1]
    by_requests = _window_fill(admissions, [1.0] * len(admissions), limits["requests"], w, origin, last)
    exec_ms = [ms for _, ms in executions]
    by_execution = _window_fill([t for t, _ in executions], exec_ms, limits["execution_ms"], w, origin, last)
    ms_per_operation = sum(exec_ms) / operations if operations else None
    ops_per_request = operations / len(admissions) if admissions else None
    allowed = {
        "requests": limits["requests"] / w * (ops_per_request or 0),
        "execution": (limits["execution_ms"] / w) / ms_per_operation if ms_per_operation else float("inf"),
    }
    binding = min(allowed, key=lambda k: allowed[k])
    drained = by_execution if binding == "execution" else by_requests
    exactly_once = applied == len(wave) == finals and holding == recipients and not run.errors

    done_times = sorted((b["t"], sum(c for n, c in b["outcomes"].items() if n != "rescheduled")) for b in run.batches)
    left, curve = len(wave), [(0.0, len(wave))]
    for t, count in done_times:
        left -= count
        curve.append((round(t - origin, 3), left))
    seconds = (done_times[-1][0] - origin) if done_times else None
    return {
        "backlog_drain_vs_limit": drained["utilisation"] if exactly_once else None,
        "optouts_per_request_backlog": round(applied / requests, 1) if requests and exactly_once else None,
        "backlog": {
            "events": len(wave),
            "distinct_recipients": recipients,
            "instances": INSTANCES,
            "invocations_per_instance": INVOCATIONS,
            "batch": BATCH,
            "protection": limits,
            "latency_per_operation_s": config["latency"],
            "applied": applied,
            "outcomes": outcomes,
            "exactly_once": exactly_once,
            "rows_holding_update": holding,
            "batch_errors": run.errors[:5],
            "standin_requests": requests,
            "standin_operations": operations,
            "operations_per_request": round(ops_per_request, 1) if ops_per_request else None,
            "execution_ms_per_operation": round(ms_per_operation, 4) if ms_per_operation else None,
            "allowed_operations_per_s": {k: round(v, 1) for k, v in allowed.items()},
            "binding_limit": binding,
            "by_requests": by_requests,
            "by_execution": by_execution,
            "throttled_429": stats["throttled"],
            "throttled_by_code": stats["throttled_by_code"],
            "peak_in_flight": stats["peak_in_flight"],
            "drain_s": round(seconds, 3) if seconds else None,
            "events_per_s": round(len(wave) / seconds, 1) if seconds else None,
            "operations_per_s": round(operations / seconds, 1) if seconds else None,
            "events_left": curve,
            "refused_at_s": [[round(t - origin, 3), code] for t, code in stats["refusals"]],
            "admitted_per_s": rate_series(admissions, origin, w / 5),
            "worker_cpu_s": [round(worker["cpu_s"], 3) for worker in run.workers],
            "worker_peak_rss_mb": [worker["peak_rss_mb"] for worker in run.workers],
        },
    }


def _window_fill(
    times: list[float], amounts: list[float], budget: float, window: float, start: float, end: float
) -> dict[str, Any]:
    """How full the limit's sliding window was kept while the backlog drained: the amount inside the window
    ending at t (requests admitted, or execution milliseconds finished, within (t - W, t]) ÷ the budget,
    averaged over t from one window after the first admission (the first window's allowance is spent at once)
    to the last admission (then the backlog is gone), every W/100; and the highest it was."""
    if end - start <= window:
        return {"utilisation": None, "reason": "the drain did not last longer than one window"}
    ordered = sorted(zip(times, amounts, strict=True))
    fills: list[float] = []
    step = window / 100
    t, low, high, inside = start + window, 0, 0, 0.0
    while t <= end:
        while high < len(ordered) and ordered[high][0] <= t:
            inside += ordered[high][1]
            high += 1
        while low < high and ordered[low][0] <= t - window:
            inside -= ordered[low][1]
            low += 1
        fills.append(inside / budget)
        t += step
    return {
        "utilisation": round(sum(fills) / len(fills), 3),
        "peak_fill": round(max(fills), 3),
        "samples": len(fills),
        "steady_from_s": round(window, 3),
        "steady_to_s": round(end - start, 3),
        "budget_per_window": budget,
    }
