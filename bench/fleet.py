"""``fleet_utilisation``, ``fleet_lost``, ``fleet_429_share``: K instances sharing one application user's limits.

K worker processes (``bench/instances.py``: K instances, each with its own throttle gate, each running
``INVOCATIONS`` concurrent BulkEmailOptOut invocations over batches of ``BATCH`` opt-outs from one shared
queue) against one stand-in enforcing one user's limits: Dataverse's, with time scaled down (the same 20
requests per second and 4 s of execution per second, in a window and a Retry-After step ``factor`` times
shorter: ``ServiceProtection.scaled``). Batches are small, as when events trickle in faster than one instance
takes them, so the number-of-requests limit binds (each batch is one ``$batch`` request).

* ``fleet_utilisation``: the ceiling's definition over the whole fleet, on the stand-in's own admission
  times: request j·N+1 can come no sooner than j·W after request 1, so k·W ÷ (time from request 1 to request
  k·N+1), with k windows' worth of requests beyond the first window's allowance. The key is the lower of
  the K = 4 and K = 8 runs (each is reported).
* ``fleet_lost``: events that did not end ``applied`` (every recipient is also read back), both runs.
* ``fleet_429_share``: 429s ÷ all requests that reached the stand-in (admitted + refused), the higher of the
  two runs.
"""

from __future__ import annotations

from typing import Any

from .instances import Task, admitted_utilisation, rate_series, run_fleet
from .standin_proc import RemoteStandIn, row_id

PREFIX, TAG = 0xF1EE, 0xF1E
BATCH = 4  # opt-outs per delivery
INVOCATIONS = 2  # concurrent invocations per instance
GATE = 8  # each instance's DATAVERSE_MAX_CONCURRENCY (the default)
LATENCY = 0.002  # service time per operation


def protection() -> dict[str, Any]:
    from optout_dev.standin import ServiceProtection

    # A 6 s window for Dataverse's 300 s, quick or not (quick runs fewer windows): with fewer requests a window,
    # the few 429s each instance meets when the fleet first fills the window would weigh more in the share.
    factor = 50
    scaled = ServiceProtection.scaled(factor)
    return {
        "requests": scaled.requests,
        "window": scaled.window,
        "concurrent": scaled.concurrent,
        "execution_ms": scaled.execution_ms,
        "retry_after_step": scaled.retry_after_step,
    }


def run(quick: bool) -> dict[str, Any]:
    sides = {f"k{k}": measure(k, quick) for k in (4, 8)}
    utilisations = [side["utilisation"] for side in sides.values()]
    shares = [side["share_429"] for side in sides.values()]
    return {
        "fleet_utilisation": None if None in utilisations else min(utilisations),
        "fleet_lost": sum(side["lost"] for side in sides.values()),
        "fleet_429_share": None if None in shares else max(shares),
        "fleet": {
            "definition": "k x W / (time from request 1 to request k x N + 1), on the stand-in's admission times, "
            "over the whole fleet; 429 share = 429s / (admitted + 429s)",
            "batch_opt_outs": BATCH,
            "invocations_per_instance": INVOCATIONS,
            "gate_per_instance": GATE,
            "latency_per_operation_s": LATENCY,
            "runs": sides,
        },
    }


def measure(instances: int, quick: bool) -> dict[str, Any]:
    limits = protection()
    n, w = limits["requests"], limits["window"]
    windows = 3 if quick else 5
    # Enough work to reach request k·N+1 with room to spare: the run is measured up to there.
    requests = n * (windows + 1) + n // 2
    events = requests * BATCH
    tasks: list[Task] = [
        (b, [(e, row_id(PREFIX, e)) for e in range(b * BATCH, (b + 1) * BATCH)]) for b in range(requests)
    ]
    with RemoteStandIn(protection=limits, latency=LATENCY) as standin:
        standin.seed(PREFIX, events)
        run = run_fleet(standin.url, tasks, workers=instances, invocations=INVOCATIONS, gate=GATE, tag=TAG, window=w)
        stats = standin.stats()
        counts = standin.counts()
        holding = standin.holding(PREFIX, events)
    outcomes = run.outcomes()
    applied = outcomes.get("applied", 0)
    admitted, refused = stats["admitted"], stats["throttled"]
    admissions = stats["admissions"]
    origin = admissions[0] if admissions else run.started
    return {
        "instances": instances,
        "events": events,
        "batches": requests,
        "protection": limits,
        "windows_beyond_first": windows,
        "utilisation": admitted_utilisation(admissions, n, w, windows),
        "lost": events - applied + (events - holding),
        "applied": applied,
        "outcomes": outcomes,
        "rows_holding_update": holding,
        "batch_errors": run.errors[:5],
        "admitted_requests": admitted,
        "throttled_429": refused,
        "throttled_by_code": stats["throttled_by_code"],
        "share_429": round(refused / (admitted + refused), 4) if admitted + refused else None,
        "peak_in_flight": stats["peak_in_flight"],
        "standin_requests": counts["requests"],
        "wall_s": round(run.finished - run.started, 3),
        "allowed_rate_per_s": round(n / w, 2),
        "admitted_per_s": rate_series(admissions, origin, w / 10),
        "refused_at_s": [round(t - origin, 3) for t, _ in stats["refusals"]],
        "worker_cpu_s": [round(worker["cpu_s"], 3) for worker in run.workers],
    }
