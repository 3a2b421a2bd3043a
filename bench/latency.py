"""``latency_p50_ms``, ``latency_p99_ms``, ``latency_vs_floor`` and ``cpu_ms_per_event``: one event at a time.

Latency: from a message body entering the campaign-log queue to its write committed, with no contention:
:class:`optout_dev.local.LocalPipeline` runs CampaignLogRouter on the body, puts the work item on the (in-memory)
opt-out queue, and BulkEmailOptOut takes it from there and writes through the real Web API client; the stand-in
(own process) has committed the write before the answer comes back, so the call's return is the commit as the
app can know it. The floor is one Web API round trip on the same stand-in: the same ``PATCH`` sent with a bare
``requests.Session`` (kept alive, nothing else), which any client must pay. The two are interleaved event by
event after a warm-up, so the machine's state is shared alike; ``latency_vs_floor`` is the ratio of the
medians (p99 ratio reported beside it). The stand-in takes ``SERVICE_TIME`` per request, the service time the
ceiling and fleet measurements give it (a real Dataverse write takes longer); the same pair measured with no
service time at all, where only the two clients' own work differs, is reported beside it
(``latency.no_service_time``).

``cpu_ms_per_event``: the process's CPU time (``time.process_time``: this process only, so not the stand-in's)
over the same one-at-a-time events run back to back, router and opt-out and the Web API client's share. Queue
transport is in memory here; Service Bus's own receive and settle are not in it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from .common import TOKEN, opt_out_bodies, pipeline_settings
from .standin_proc import RemoteStandIn, row_id

PREFIX, TAG = 0x1A7E, 0x1A7
CPU_PREFIX, CPU_TAG = 0xC9C0, 0xC9C
SERVICE_TIME = 0.002


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def run(quick: bool) -> dict[str, Any]:
    n = 300 if quick else 2000
    result = _run(n, 500 if quick else 2000, SERVICE_TIME)
    bare = _run(n, 0, 0.0)
    result["latency"]["no_service_time"] = {
        "p50_ms": bare["latency_p50_ms"],
        "p99_ms": bare["latency_p99_ms"],
        "vs_floor": bare["latency_vs_floor"],
        "floor_p50_ms": bare["latency"]["floor_p50_ms"],
        "floor_p99_ms": bare["latency"]["floor_p99_ms"],
    }
    result["latency"]["service_time_s"] = SERVICE_TIME
    return result


def _run(n: int, cpu_events: int, service_time: float) -> dict[str, Any]:
    import requests

    from optout_dev.local import LocalPipeline

    warm = 50
    with RemoteStandIn(latency=service_time) as standin:
        standin.seed(PREFIX, n + warm)
        if cpu_events:
            standin.seed(CPU_PREFIX, cpu_events)
        pipeline = LocalPipeline(pipeline_settings(standin.url))
        bodies = list(opt_out_bodies(n + warm, lambda i: row_id(PREFIX, i), tag=TAG))
        session = requests.Session()
        headers = {
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json",
            "If-Match": "*",
            "Accept": "application/json",
            "OData-Version": "4.0",
        }

        def floor(index: int) -> None:
            url = f"{standin.url}/api/data/v9.2/contacts({row_id(PREFIX, index)})"
            answer = session.patch(url, data=b'{"donotbulkemail":true}', headers=headers, timeout=30)
            if answer.status_code != 204:
                raise RuntimeError(f"floor PATCH answered {answer.status_code}")

        ours: list[float] = []
        theirs: list[float] = []
        outcomes: dict[str, int] = {}
        for index, body in enumerate(bodies):
            first_ours = index % 2 == 0
            for side in ("ours", "floor") if first_ours else ("floor", "ours"):
                started = time.perf_counter()
                if side == "ours":
                    result = pipeline.run(f"latency-{index}", body)
                    elapsed = time.perf_counter() - started
                    outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
                    if index >= warm:
                        ours.append(elapsed * 1000)
                else:
                    floor(index)
                    elapsed = time.perf_counter() - started
                    if index >= warm:
                        theirs.append(elapsed * 1000)
        session.close()

        cpu_bodies = list(opt_out_bodies(cpu_events, lambda i: row_id(CPU_PREFIX, i), tag=CPU_TAG))
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for index, body in enumerate(cpu_bodies):
            pipeline.run(f"cpu-{index}", body)
        cpu = time.process_time() - cpu_started
        wall = time.perf_counter() - wall_started
        holding = standin.holding(PREFIX, n + warm) + (standin.holding(CPU_PREFIX, cpu_events) if cpu_events else 0)

    p50, p99 = _percentile(ours, 0.5), _percentile(ours, 0.99)
    f50, f99 = _percentile(theirs, 0.5), _percentile(theirs, 0.99)
    return {
        "latency_p50_ms": round(p50, 3),
        "latency_p99_ms": round(p99, 3),
        "latency_vs_floor": round(p50 / f50, 3),
        "cpu_ms_per_event": round(cpu / cpu_events * 1000, 4) if cpu_events else None,
        "latency": {
            "events": n,
            "warm_up": warm,
            "outcomes": outcomes,
            "rows_holding_update": holding,
            "floor_p50_ms": round(f50, 3),
            "floor_p99_ms": round(f99, 3),
            "p99_vs_floor_p99": round(p99 / f99, 3),
            "mean_ms": round(statistics.fmean(ours), 3),
            "floor_mean_ms": round(statistics.fmean(theirs), 3),
            "transport": f"HTTP to the loopback stand-in in its own process, keep-alive, {service_time * 1000:g} ms "
            "service time per request",
        },
        "cpu": {
            "events": cpu_events,
            "process_cpu_s": round(cpu, 4),
            "wall_s": round(wall, 4),
            "what": "router + opt-out + Web API client, one event at a time, this process only",
        },
    }
