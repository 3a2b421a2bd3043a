"""An outage longer than the retry window: every event fails, none is lost or rejected, and redrive applies it.

300 opt-out and bounce events go through the in-process pipeline on 4 threads while the loopback Dataverse
stand-in answers 503 to every request. Each work item is retried in process, then put back with a growing
delay until DATAVERSE_RETRY_WINDOW_SECONDS (600 s here) since its first attempt have passed; the pipeline skips
the waits (``honour_schedule=False``) and moves its clock on by them, so the window closes in a few seconds
of real time. Every event must end ``failed``, kept exactly once on the rejected queue with ``outcome=failed``
and the real error as its reason (the 503, never a read-back's "did not answer"), with no row written. Then the
outage ends, the kept messages are redriven as ``python -m optout_core redrive --from rejected`` would build
them, and every event must end ``applied`` with its row holding the write.
"""

import json
import logging
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from optout_core.app.redrive import Held, parse_source, redrive_copy, target_for
from optout_core.app.table import entry_for
from optout_core.dataverse.auth import StaticTokenCredential
from optout_core.dataverse.client import DataverseClient
from optout_core.domain.model import Route
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage, OutboundMessage
from optout_dev.local import LocalPipeline
from optout_dev.messages import ORG_ID, campaign_log, wire
from optout_dev.standin import Fault
from tests.support.dataverse import TOKEN, running_standin, standin_env
from tests.support.logs import Capture

EVENTS = 300
WINDOW = 600  # seconds of the pipeline's clock, which moves on by every wait it skips
# The events follow from this seed; a failure prints it (tests/stress/conftest.py).
SEED = int(os.environ.get("OPTOUT_STORM_SEED", "20261128"))
OPT_OUTS = ("Spam Report", "Group Opt out", "Client Opt Out")
BOUNCES = ("Hard Bounce", "Soft Bounce")
BOUNCE_UPDATE = '{"description": "{activity_type}: {detail}"}'
CLOSED = "still failing when its retry window closed: "


def _guid(rng):
    return (
        f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}"
        f"-8{rng.getrandbits(12):03x}-{rng.getrandbits(48):012x}"
    )


def plan(rng):
    """The events (each its own recipient) and the rows they need."""
    events, rows = [], {"contact": set(), "lead": set(), "account": set()}
    for _ in range(EVENTS):
        table, recipient = rng.choice(sorted(rows)), _guid(rng)
        kind = "bounce" if rng.random() < 0.4 else "opt_out"
        activity = rng.choice(BOUNCES if kind == "bounce" else OPT_OUTS)
        context = campaign_log(
            activity=activity,
            bounce_reason="550 5.1.1 mailbox unavailable" if kind == "bounce" else None,
            log_id=_guid(rng),
            operation_id=_guid(rng),
            recipient=(table, recipient),
        )
        rows[table].add(recipient)
        events.append(
            {"kind": kind, "activity": activity, "table": table, "recipient": recipient, "body": wire(context)}
        )
    return events, rows


def redrive(local, settings):
    """Send every kept message back as redrive would, and deliver each copy to the function of its queue."""
    source = parse_source("rejected", settings)
    records = []
    for kept in local.queues.messages(settings.rejected_queue):
        held = Held(
            message_id=kept.message_id,
            body=kept.body,
            content_type=kept.content_type,
            correlation_id=kept.correlation_id,
            subject=kept.subject,
            application_properties=kept.application_properties,
        )
        target, skipped = target_for(held, source, settings, None)
        assert target is not None, skipped
        records.append(deliver(local, redrive_copy(held, target)))
    return records


def deliver(local, message: OutboundMessage):
    """The copy's outcome from the function behind its queue, delivered as LocalPipeline.run delivers a work item."""
    entry = entry_for(Route(WorkItem.from_json(message.body).route))
    assert local.services.settings.queue(entry.function) == message.queue
    return entry.handle(
        InboundMessage(
            body=message.body,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            application_properties=message.application_properties,
            delivery_count=1,
        ),
        local.services,
    )


@pytest.fixture(scope="module")
def outage():
    events, rows = plan(random.Random(SEED))
    handler = Capture()
    logging.getLogger().addHandler(handler)
    logging.getLogger("optout").setLevel(logging.INFO)
    try:
        with running_standin(recipients=rows) as standin:
            settings = Settings.from_env(
                standin_env(
                    standin,
                    EXPECTED_ORGANIZATION_ID=ORG_ID,
                    BOUNCE_UPDATE=BOUNCE_UPDATE,
                    DATAVERSE_MAX_ATTEMPTS="2",
                    # Also the first step of the put-back back-off (doubling, up to 900 s): the window closes
                    # after a handful of put-backs. In-process waits are recorded, not slept.
                    DATAVERSE_BACKOFF_SECONDS="30",
                    DATAVERSE_RETRY_WINDOW_SECONDS=str(WINDOW),
                )
            )
            naps = []
            client = DataverseClient(
                standin.url,
                StaticTokenCredential(TOKEN),
                retry=settings.retry,
                retry_after_cap=settings.retry_after_cap,
                timeout=settings.dataverse_timeout,
                max_concurrency=settings.dataverse_concurrency,
                sleep=naps.append,
            )
            local = LocalPipeline(settings, dataverse=client, honour_schedule=False, max_deliveries=3)
            standin.set_fault_rate(1.0, [Fault(status=503)], seed=SEED)
            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                during = list(pool.map(lambda e: local.run(e["kind"], e["body"]), events))
            outage_seconds = time.perf_counter() - started
            kept = local.queues.messages(settings.rejected_queue)
            left = [local.queues.messages(settings.queue(entry_for(route).function)) for route in Route]
            requests_during, writes_during = len(standin.requests), list(standin.writes)

            standin.set_fault_rate(0, [])  # the outage ends
            started = time.perf_counter()
            after = redrive(local, settings)
            redrive_seconds = time.perf_counter() - started
            final = {table: standin.rows(table) for table in rows}
            writes = standin.writes
            client.close()
    finally:
        logging.getLogger().removeHandler(handler)
    summary = {
        "events": len(events),
        "outcomes_during": Counter(r.outcome for r in during),
        "outcomes_after_redrive": Counter(str(r.outcome) for r in after),
        "web_api_requests_during": requests_during,
        "put_backs": sum(1 for line in handler.lines if '"outcome": "rescheduled"' in line),
        "kept_never_put_back": sum(1 for message in kept if not WorkItem.from_json(message.body).reschedules),
        "in_process_retries": len(naps),
        "pipeline_clock_moved_on_s": round(local.services.clock() - time.time()),
        "outage_seconds": round(outage_seconds, 1),
        "redrive_seconds": round(redrive_seconds, 1),
    }
    print("\noutage:", json.dumps(summary, default=dict, sort_keys=True))
    return {
        "events": events,
        "rows": rows,
        "during": during,
        "kept": kept,
        "left": left,
        "writes_during": writes_during,
        "after": after,
        "final": final,
        "writes": writes,
        "settings": settings,
        "logs": handler.lines,
        "summary": summary,
    }


def test_every_event_fails_when_its_window_closes_never_rejected_never_lost(outage):
    during = outage["during"]
    assert len(during) == EVENTS
    assert Counter(r.outcome for r in during) == {"failed": EVENTS}
    for event, result in zip(outage["events"], during, strict=True):
        assert result.route == event["kind"] and result.recipient == {"table": event["table"], "id": event["recipient"]}
        # Failed by the policy when the window closed, not by running out of Service Bus deliveries.
        assert result.reason.startswith(CLOSED), result.reason
    assert outage["summary"]["put_backs"] >= EVENTS and outage["summary"]["in_process_retries"] > 0
    assert all(queue == [] for queue in outage["left"])  # no work item still waiting: every one ended


def test_each_event_is_kept_exactly_once_as_failed_with_the_real_error(outage):
    kept = outage["kept"]
    log_ids = Counter(message.application_properties["log_id"] for message in kept)
    assert set(log_ids) == {result.log_id for result in outage["during"]} and set(log_ids.values()) == {1}
    for message in kept:
        properties = message.application_properties
        assert properties["outcome"] == "failed"
        assert properties["rejected_by"] in ("BulkEmailOptOut", "BounceDetail")
        reason = properties["rejected_reason"]
        assert reason.startswith(CLOSED) and "503" in reason, reason
        assert "did not answer" not in reason and "could not tell" not in reason.lower(), reason
        # Its window opened when the router forwarded it. (Not every kept item was put back first: the
        # pipeline's clock moves on by the waits every thread skips, so another event's waits can close a
        # window before the item's own first try fails.)
        assert WorkItem.from_json(message.body).first_attempt is not None
    failed_lines = [line for line in outage["logs"] if '"outcome": "failed"' in line]
    assert len(failed_lines) == EVENTS  # one outcome line each
    assert not any("did not answer" in line for line in failed_lines)


def test_nothing_is_written_during_the_outage(outage):
    assert outage["writes_during"] == []
    assert outage["summary"]["web_api_requests_during"] > EVENTS


def test_redriven_copies_apply_every_event_once_the_outage_ends(outage):
    after = outage["after"]
    assert len(after) == EVENTS and Counter(str(r.outcome) for r in after) == {"applied": EVENTS}
    assert {r.log_id for r in after} == {r.log_id for r in outage["during"]}
    written = Counter((table, row_id) for table, row_id, _ in outage["writes"])
    assert len(written) == EVENTS and set(written.values()) == {1}
    for event in outage["events"]:
        row = outage["final"][event["table"]][event["recipient"]]
        if event["kind"] == "opt_out":
            assert row["donotbulkemail"] is True and not row.get("description"), row
        else:
            assert row["donotbulkemail"] is False, row
            assert row["description"] == f"{event['activity']}: 550 5.1.1 mailbox unavailable", row
    for table, rows in outage["final"].items():
        assert set(rows) == outage["rows"][table], "a row was created or lost"
