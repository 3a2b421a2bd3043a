"""router_vs_json_loads: the router's decision per message ÷ the standard library's ``json.loads`` of it.

Bodies are Group Opt out Creates in the exact Dataverse wire shape (optout_dev/messages.py), from the bare
context (about 6.1 KiB) to 190 KiB, grown the way a real Create grows: a long description and many
extra columns, each present in both the Target and the ParentContext's Target. Sizes are spread
evenly over the range. For every size, both sides run back to back on the same bytes object, in an
order that alternates each round; rounds visit every size, so a burst of machine noise hits all
sizes and both sides alike. The key is the total of the per-size medians of the router over the
total of the per-size medians of ``json.loads``.
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

from .common import evenly_spread_sizes, median, router_settings, sized_body


def run(quick: bool) -> dict[str, Any]:
    from optout_core.domain.model import Outcome
    from optout_core.domain.routing import Decision, decide

    settings = router_settings()
    sizes = evenly_spread_sizes(8 if quick else 16)
    bodies = [sized_body(size, seed=index) for index, size in enumerate(sizes)]
    for body in bodies:  # every body is a real opt-out the router forwards: no shortcut is measured
        decision = decide(body, settings)
        if not isinstance(decision, Decision) or decision.outcome is not Outcome.ROUTED:
            raise RuntimeError(f"a {len(body)}-byte bench body was not routed: {decision}")
        json.loads(body)

    # Calls per timed block: about 3 ms of json.loads, so timer resolution and loop overhead vanish.
    inner = []
    for body in bodies:
        once = []
        for _ in range(5):
            started = time.perf_counter()
            json.loads(body)
            once.append(time.perf_counter() - started)
        inner.append(max(3, int(0.003 / max(median(once), 1e-6))))

    rounds = 15 if quick else 61
    loads_times: list[list[float]] = [[] for _ in bodies]
    router_times: list[list[float]] = [[] for _ in bodies]
    for round_ in range(rounds):
        for index, body in enumerate(bodies):
            n = inner[index]
            sides = (("json", loads_times), ("router", router_times))
            for name, store in sides if (round_ + index) % 2 == 0 else sides[::-1]:
                gc.collect()
                gc.disable()
                try:
                    if name == "json":
                        started = time.perf_counter()
                        for _ in range(n):
                            json.loads(body)
                    else:
                        started = time.perf_counter()
                        for _ in range(n):
                            decide(body, settings)
                    store[index].append((time.perf_counter() - started) / n)
                finally:
                    gc.enable()

    per_size = []
    for index, body in enumerate(bodies):
        loads_s, router_s = median(loads_times[index]), median(router_times[index])
        per_size.append(
            {
                "bytes": len(body),
                "json_loads_us": round(loads_s * 1e6, 2),
                "router_us": round(router_s * 1e6, 2),
                "ratio": round(router_s / loads_s, 3),
                "calls_per_block": inner[index],
            }
        )
    total_router = sum(row["router_us"] for row in per_size)
    total_loads = sum(row["json_loads_us"] for row in per_size)
    return {
        "router_vs_json_loads": round(total_router / total_loads, 3),
        "router": {
            "method": "per size: median over rounds of (router time per call) and (json.loads time per call) on "
            "the same bytes, interleaved; key = sum of router medians / sum of json.loads medians",
            "rounds": rounds,
            "sizes": len(bodies),
            "min_bytes": min(len(b) for b in bodies),
            "max_bytes": max(len(b) for b in bodies),
            "total_router_us": round(total_router, 2),
            "total_json_loads_us": round(total_loads, 2),
            "mean_of_per_size_ratios": round(sum(r["ratio"] for r in per_size) / len(per_size), 3),
            "worst_per_size_ratio": max(r["ratio"] for r in per_size),
            "per_size": per_size,
        },
    }
