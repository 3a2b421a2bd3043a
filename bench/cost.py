"""``usd_per_million_events`` (with ``peak_rss_mb``): what a million opt-outs cost on Flex Consumption, on demand.

A model (docs/performance.md, "cost") from figures measured in the same run and published prices, read on
2026-12-01 (sources in the docs):

* Flex Consumption bills, per on-demand instance, the instance memory provisioned while it is executing
  functions (GB-seconds, USD 0.000026 per GB-s) and the executions (USD 0.40 per million); monthly free grants
  (100,000 GB-s and 250,000 executions per subscription) are left out, so the figure is the marginal cost.
* The instance memory is the plan's size (2,048 MB by default), not what the process uses; ``peak_rss_mb``
  (the largest resident set of a BulkEmailOptOut instance draining the 100,000-event wave) says how much
  smaller an instance could be.
* Time billed: the key assumes that waiting on Dataverse overlaps across an instance's concurrent executions
  (8 per instance), so the instance is busy for the CPU time the events take (``cpu_ms_per_event``, measured
  one event at a time: the dearer path). Beside it: the wave path (router per event, opt-out per batch of
  up to 1,000), and an upper bound where every opt-out also waits ``WAIT_S`` for Dataverse with nothing
  overlapped.
* One million events one at a time are two million executions (router, then opt-out); in a wave, a million
  router executions and one opt-out execution per batch.
"""

from __future__ import annotations

import time
from typing import Any

USD_PER_GB_S = 0.000026
USD_PER_MILLION_EXECUTIONS = 0.40
INSTANCE_GB = 2.048
WAIT_S = 0.05  # a Dataverse write's round trip for the upper bound (assumed: the stand-in cannot tell it)
POWER_AUTOMATE_USD_PER_RUN = 0.60  # pay-as-you-go meter, premium cloud flow run


def router_cpu_ms_per_event(events: int = 2000) -> float:
    """CPU time of CampaignLogRouter alone per event (decision, work item, in-memory send)."""
    from optout_core.app.router import route
    from optout_core.app.services import Services
    from optout_core.servicebus.envelopes import InboundMessage
    from optout_dev.queues import InMemoryQueues

    from .common import opt_out_bodies, pipeline_settings

    services = Services(pipeline_settings("http://127.0.0.1:9"), sender=InMemoryQueues())
    bodies = list(opt_out_bodies(events, lambda i: f"{i:08x}-0000-4000-8000-00000000c057", tag=0xC057))
    started = time.process_time()
    for index, body in enumerate(bodies):
        route(InboundMessage(body=body, message_id=f"cost-{index}", delivery_count=1), services)
    return (time.process_time() - started) / events * 1000


def usd(executions: float, busy_seconds: float, gb: float = INSTANCE_GB) -> float:
    return executions / 1e6 * USD_PER_MILLION_EXECUTIONS + busy_seconds * gb * USD_PER_GB_S


def model(report: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The cost keys from the figures already in ``report`` (latency's CPU, the backlog's instances)."""
    notes: dict[str, str] = {}
    cpu_ms = report.get("cpu_ms_per_event")
    backlog = report.get("backlog") or {}
    rss = backlog.get("worker_peak_rss_mb") or []
    peak = max(rss) if rss else None
    if cpu_ms is None:
        notes["usd_per_million_events"] = "cpu_ms_per_event was not measured"
        return {"usd_per_million_events": None, "peak_rss_mb": peak, "notes": notes}
    router_ms = router_cpu_ms_per_event(500 if quick else 2000)
    million = 1e6
    trickle = usd(2 * million, cpu_ms / 1000 * million)
    figures: dict[str, Any] = {
        "prices": {
            "usd_per_gb_s": USD_PER_GB_S,
            "usd_per_million_executions": USD_PER_MILLION_EXECUTIONS,
            "instance_gb": INSTANCE_GB,
            "read_on": "2026-12-01",
        },
        "one_at_a_time": {
            "executions": 2 * million,
            "busy_s": round(cpu_ms / 1000 * million, 1),
            "usd": round(trickle, 4),
        },
        "router_cpu_ms_per_event": round(router_ms, 4),
    }
    events, cpus = backlog.get("events"), backlog.get("worker_cpu_s")
    if events and cpus:
        opt_out_ms = sum(cpus) / events * 1000
        batches = million / backlog.get("batch", 1000)
        busy = (router_ms + opt_out_ms) / 1000 * million
        figures["wave"] = {
            "opt_out_cpu_ms_per_event": round(opt_out_ms, 4),
            "executions": million + batches,
            "busy_s": round(busy, 1),
            "usd": round(usd(million + batches, busy), 4),
        }
    bound = cpu_ms / 1000 * million + WAIT_S * million
    figures["upper_bound_waits_not_overlapped"] = {
        "wait_per_opt_out_s": WAIT_S,
        "busy_s": round(bound, 1),
        "usd": round(usd(2 * million, bound), 4),
    }
    figures["power_automate_pay_as_you_go"] = {
        "usd_per_run": POWER_AUTOMATE_USD_PER_RUN,
        "usd": round(POWER_AUTOMATE_USD_PER_RUN * million, 2),
        "what": "one premium cloud flow run per opt-out (the Dataverse connector is premium)",
    }
    return {"usd_per_million_events": round(trickle, 4), "peak_rss_mb": peak, "cost": figures, "notes": notes}
