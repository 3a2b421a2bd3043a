"""requests_per_optout_{steady,burst} and requests_per_optout_verified_{steady,burst}: Web API requests per
applied opt-out, without and with VERIFY_CAMPAIGN_LOG (each event checked against its campaign log row).

Counted by the stand-in (every HTTP request it received; a ``$batch`` is one), which runs in its own
process. Bodies are Group Opt out Creates in the Dataverse wire shape, each with its own campaign log id.

* steady: one event at a time through :class:`optout_dev.local.LocalPipeline` (router, then
  BulkEmailOptOut with that one message), as when events trickle in.
* burst: 1,000 queued opt-outs, some recipients repeated, handed to
  :func:`optout_core.app.opt_out.opt_out_batch` at once, as the Functions host does with a backlog
  (host.json ``maxMessageBatchSize`` is 1,000). The work items are made by the real router
  (:func:`optout_core.app.router.route` onto an in-memory queue).

"Applied opt-out" = a message whose outcome is ``applied``; the rows are read back from the stand-in
afterwards to prove every recipient holds ``donotbulkemail = true``. The verified twins are measured the same
way, with every event's campaign log row seeded in the stand-in (one GET per event when they trickle in; one
``$batch`` of GETs per batch in a burst).
"""

from __future__ import annotations

import random
from typing import Any

from .common import Clock, guid, opt_out_body, pipeline_settings
from .standin_proc import RemoteStandIn, row_id

STEADY_PREFIX, BURST_PREFIX = 0x5100, 0xB100
VERIFIED_STEADY_PREFIX, VERIFIED_BURST_PREFIX = 0x5200, 0xB200  # recipients
VERIFIED_STEADY_LOGS, VERIFIED_BURST_LOGS = 0x5300, 0xB300  # campaign log ids
BURST_EVENTS, BURST_RECIPIENTS = 1000, 850  # 150 opt-outs repeat a recipient already in the burst


def run(quick: bool) -> dict[str, Any]:
    rng = random.Random(7)
    steady_events = 200 if quick else 1000
    with RemoteStandIn(campaign_log=True) as standin:
        settings = pipeline_settings(standin.url)
        steady = _steady(standin, settings, rng, STEADY_PREFIX, steady_events, log_prefix=None)
        burst = _burst(standin, settings, rng, BURST_PREFIX, log_prefix=None)
        verified = pipeline_settings(standin.url, VERIFY_CAMPAIGN_LOG="true")
        verified_steady = _steady(standin, verified, rng, VERIFIED_STEADY_PREFIX, steady_events, VERIFIED_STEADY_LOGS)
        verified_burst = _burst(standin, verified, rng, VERIFIED_BURST_PREFIX, VERIFIED_BURST_LOGS)
    return {
        "requests_per_optout_steady": steady.pop("per_optout"),
        "requests_per_optout_burst": burst.pop("per_optout"),
        "requests_per_optout_verified_steady": verified_steady.pop("per_optout"),
        "requests_per_optout_verified_burst": verified_burst.pop("per_optout"),
        "steady": steady,
        "burst": burst,
        "verified_steady": verified_steady,
        "verified_burst": verified_burst,
    }


def _log_ids(
    standin: RemoteStandIn, rng: random.Random, log_prefix: int | None, recipient_prefix: int, recipients: list[int]
) -> list[str]:
    """Campaign log ids for events naming ``recipients``: random when not verified; seeded rows when verified."""
    if log_prefix is None:
        return [guid(rng) for _ in recipients]
    standin.seed_logs(log_prefix, recipient_prefix, recipients)
    return [row_id(log_prefix, i) for i in range(len(recipients))]


def _steady(
    standin: RemoteStandIn, settings: Any, rng: random.Random, prefix: int, events: int, log_prefix: int | None
) -> dict[str, Any]:
    """One event at a time through the local pipeline (router, then BulkEmailOptOut with that one message)."""
    from optout_dev.local import LocalPipeline

    standin.seed(prefix, events)
    pipeline = LocalPipeline(settings)
    log_ids = _log_ids(standin, rng, log_prefix, prefix, list(range(events)))
    bodies = [opt_out_body(log_id, ("contact", row_id(prefix, i))) for i, log_id in enumerate(log_ids)]
    before = standin.counts()["requests"]
    outcomes: dict[str, int] = {}
    reported = 0
    with Clock() as clock:
        for i, body in enumerate(bodies):
            result = pipeline.run(f"steady-{i}", body)
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            reported += result.dataverse_requests
    requests = standin.counts()["requests"] - before
    applied = outcomes.get("applied", 0)
    return {
        "per_optout": round(requests / applied, 4) if applied else None,
        "events": events,
        "applied": applied,
        "outcomes": outcomes,
        "standin_requests": requests,
        "pipeline_reported_requests": reported,
        "rows_holding_update": standin.holding(prefix, events),
        "seconds": round(clock.seconds, 3),
        "events_per_second": round(events / clock.seconds, 1),
    }


def _burst(
    standin: RemoteStandIn, settings: Any, rng: random.Random, prefix: int, log_prefix: int | None
) -> dict[str, Any]:
    """1,000 queued opt-outs handed to BulkEmailOptOut at once; work items made by the real router."""
    from optout_core.app.opt_out import opt_out_batch
    from optout_core.app.router import route
    from optout_core.app.services import Services
    from optout_core.servicebus.envelopes import InboundMessage
    from optout_dev.queues import InMemoryQueues, delivered

    standin.seed(prefix, BURST_RECIPIENTS)
    recipients = list(range(BURST_RECIPIENTS))
    recipients += [rng.choice(recipients) for _ in range(BURST_EVENTS - BURST_RECIPIENTS)]
    rng.shuffle(recipients)
    log_ids = _log_ids(standin, rng, log_prefix, prefix, recipients)
    queues = InMemoryQueues()
    router_services = Services(settings, sender=queues)
    for i, (log_id, recipient) in enumerate(zip(log_ids, recipients, strict=True)):
        body = opt_out_body(log_id, ("contact", row_id(prefix, recipient)))
        handled = route(InboundMessage(body=body, message_id=f"burst-{i}", delivery_count=1), router_services)
        if str(handled.outcome) != "routed":
            raise RuntimeError(f"burst event {i} was not routed: {handled}")
    msgs = [delivered(m, 1) for m in queues.messages(settings.opt_out_queue)]
    services = Services(settings, sender=InMemoryQueues())
    before = standin.counts()
    with Clock() as clock:
        handled_all = opt_out_batch(msgs, services)
    after = standin.counts()
    requests = after["requests"] - before["requests"]
    outcomes: dict[str, int] = {}
    for handled in handled_all:
        outcomes[str(handled.outcome)] = outcomes.get(str(handled.outcome), 0) + 1
    applied = outcomes.get("applied", 0)
    return {
        "per_optout": round(requests / applied, 4) if applied else None,
        "events": len(msgs),
        "distinct_recipients": BURST_RECIPIENTS,
        "applied": applied,
        "outcomes": outcomes,
        "standin_requests": requests,
        "standin_operations": after["operations"] - before["operations"],  # the operations inside the $batch(es)
        "rows_holding_update": standin.holding(prefix, BURST_RECIPIENTS),
        "seconds": round(clock.seconds, 3),
        "events_per_second": round(len(msgs) / clock.seconds, 1),
    }
