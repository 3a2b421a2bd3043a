"""requests_per_optout_steady and requests_per_optout_burst: Web API requests per applied opt-out.

Counted by the stand-in (every HTTP request it received; a ``$batch`` is one), which runs in its own
process. Bodies are Group Opt out Creates in the Dataverse wire shape, each with its own campaign log id.

* steady: one event at a time through :class:`optout_dev.local.LocalPipeline` (router, then
  BulkEmailOptOut with that one message), as when events trickle in.
* burst: 1,000 queued opt-outs, some recipients repeated, handed to
  :func:`optout_core.app.opt_out.opt_out_batch` at once, as the Functions host does with a backlog
  (host.json ``maxMessageBatchSize`` is 1,000). The work items are made by the real router
  (:func:`optout_core.app.router.route` onto an in-memory queue).

"Applied opt-out" = a message whose outcome is ``applied``; the rows are read back from the stand-in
afterwards to prove every recipient holds ``donotbulkemail = true``.
"""

from __future__ import annotations

import random
from typing import Any

from .common import Clock, guid, opt_out_body, pipeline_settings
from .standin_proc import RemoteStandIn, row_id

STEADY_PREFIX, BURST_PREFIX = 0x5100, 0xB100


def run(quick: bool) -> dict[str, Any]:
    from optout_core.app.opt_out import opt_out_batch
    from optout_core.app.router import route
    from optout_core.app.services import Services
    from optout_core.servicebus.envelopes import InboundMessage
    from optout_dev.local import LocalPipeline
    from optout_dev.queues import InMemoryQueues

    rng = random.Random(7)
    steady_events = 200 if quick else 1000
    burst_events, burst_recipients = 1000, 850  # 150 opt-outs repeat a recipient already in the burst

    with RemoteStandIn() as standin:
        standin.seed(STEADY_PREFIX, steady_events)
        standin.seed(BURST_PREFIX, burst_recipients)
        settings = pipeline_settings(standin.url)

        # --- steady: one event at a time -------------------------------------------------------------------
        pipeline = LocalPipeline(settings)
        bodies = [opt_out_body(guid(rng), ("contact", row_id(STEADY_PREFIX, i))) for i in range(steady_events)]
        before = standin.counts()["requests"]
        outcomes: dict[str, int] = {}
        reported = 0
        with Clock() as steady_clock:
            for i, body in enumerate(bodies):
                result = pipeline.run(f"steady-{i}", body)
                outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
                reported += result.dataverse_requests
        steady_requests = standin.counts()["requests"] - before
        steady_applied = outcomes.get("applied", 0)
        steady_holding = standin.holding(STEADY_PREFIX, steady_events)

        # --- burst: 1,000 queued opt-outs in one delivery ----------------------------------------------------
        recipients = [row_id(BURST_PREFIX, i) for i in range(burst_recipients)]
        recipients += [rng.choice(recipients) for _ in range(burst_events - burst_recipients)]
        rng.shuffle(recipients)
        queues = InMemoryQueues()
        router_services = Services(settings, sender=queues)
        for i, recipient in enumerate(recipients):
            handled = route(
                InboundMessage(
                    body=opt_out_body(guid(rng), ("contact", recipient)), message_id=f"burst-{i}", delivery_count=1
                ),
                router_services,
            )
            if str(handled.outcome) != "routed":
                raise RuntimeError(f"burst event {i} was not routed: {handled}")
        work = queues.messages(settings.opt_out_queue)
        msgs = [
            InboundMessage(
                body=m.body,
                message_id=m.message_id,
                delivery_count=1,
                correlation_id=m.correlation_id,
                application_properties=m.application_properties,
            )
            for m in work
        ]
        services = Services(settings, sender=InMemoryQueues())
        before = standin.counts()
        with Clock() as burst_clock:
            handled_all = opt_out_batch(msgs, services)
        after = standin.counts()
        burst_requests = after["requests"] - before["requests"]
        burst_operations = after["operations"] - before["operations"]
        burst_outcomes: dict[str, int] = {}
        for handled in handled_all:
            burst_outcomes[str(handled.outcome)] = burst_outcomes.get(str(handled.outcome), 0) + 1
        burst_applied = burst_outcomes.get("applied", 0)
        burst_holding = standin.holding(BURST_PREFIX, burst_recipients)

    return {
        "requests_per_optout_steady": round(steady_requests / steady_applied, 4) if steady_applied else None,
        "requests_per_optout_burst": round(burst_requests / burst_applied, 4) if burst_applied else None,
        "steady": {
            "events": steady_events,
            "applied": steady_applied,
            "outcomes": outcomes,
            "standin_requests": steady_requests,
            "pipeline_reported_requests": reported,
            "rows_holding_update": steady_holding,
            "seconds": round(steady_clock.seconds, 3),
            "events_per_second": round(steady_events / steady_clock.seconds, 1),
        },
        "burst": {
            "events": len(msgs),
            "distinct_recipients": burst_recipients,
            "applied": burst_applied,
            "outcomes": burst_outcomes,
            "standin_requests": burst_requests,
            "standin_operations": burst_operations,  # the writes inside the burst's $batch request(s)
            "rows_holding_update": burst_holding,
            "seconds": round(burst_clock.seconds, 3),
            "events_per_second": round(len(msgs) / burst_clock.seconds, 1),
        },
    }
