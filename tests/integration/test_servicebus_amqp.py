"""The Service Bus edge over real AMQP: the azure-servicebus SDK against a loopback AMQP 1.0 peer
(tests/support/amqp_peer.py).

What the app puts on the wire when it sends (ServiceBusSender, the router's forward), and what
``python -m optout_core redrive`` does to rejected and dead-lettered messages.
"""

import argparse
import io
import json
from datetime import UTC, datetime

import pytest
from proton import Message, symbol

from optout_core.app import redrive as redrive_rules
from optout_core.app import settle
from optout_core.cli import redrive
from optout_core.domain.model import Recipient, Route
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage, OutboundMessage
from optout_core.servicebus.sender import ServiceBusSender
from optout_dev.messages import CONTACTS, CORRELATION_ID, LOG_ID, OPERATION_ID, campaign_log, wire
from tests.support.amqp_peer import AmqpPeer

SETTINGS = Settings.from_env({})
CAMPAIGN_LOG, OPT_OUT, REJECTED = SETTINGS.campaign_log_queue, SETTINGS.opt_out_queue, SETTINGS.rejected_queue
OPT_OUT_DEAD_LETTERS = f"{OPT_OUT}/$deadletterqueue"


@pytest.fixture
def peer():
    with AmqpPeer() as server:
        yield server


@pytest.fixture(autouse=True)
def quick_receives(monkeypatch):
    # A run ends with one receive that finds nothing; against a loopback peer it need not wait long.
    monkeypatch.setattr(redrive, "RECEIVE_WAIT_SECONDS", 0.5)


@pytest.fixture
def sender(peer):
    sender = ServiceBusSender({"ServiceBusConnection": peer.connection_string})
    yield sender
    sender.close()


# -- sending ----------------------------------------------------------------------------------------------


def test_a_sent_message_carries_its_id_properties_and_schedule_on_the_wire(peer, sender):
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    sender.send(
        OutboundMessage(
            queue=OPT_OUT,
            body=b'{"version":1}',
            message_id="m-1",
            content_type="application/json",
            correlation_id="c-1",
            subject="opt_out",
            application_properties={"log_id": LOG_ID, "n": 3, "ok": True},
            scheduled_enqueue_time=at,
        )
    )

    [message] = peer.received_on(OPT_OUT)
    assert message.id == "m-1"
    assert message.correlation_id == "c-1"
    assert message.subject == "opt_out"
    assert message.content_type == "application/json"
    assert message.properties == {"log_id": LOG_ID, "n": 3, "ok": True}
    assert message.body == b'{"version":1}'
    assert message.annotations[symbol("x-opt-scheduled-enqueue-time")] == int(at.timestamp() * 1000)


def test_one_client_and_one_sender_per_queue_serve_every_send(peer, sender):
    for queue in (OPT_OUT, SETTINGS.bounce_queue, OPT_OUT):
        sender.send(OutboundMessage(queue=queue, body=b"{}", message_id=f"to-{queue}"))

    client = sender._client
    sender.send(OutboundMessage(queue=OPT_OUT, body=b"{}", message_id="again"))
    assert sender._client is client
    # The SDK opens one AMQP connection per queue sender; a second send to a queue opens none.
    assert peer.connections == 2
    assert len({r.connection for r in peer.received if r.address == OPT_OUT}) == 1


def test_the_routers_work_item_keeps_its_deterministic_message_id_on_the_wire(peer, sender):
    item = WorkItem(
        route=Route.OPT_OUT,
        log_id=LOG_ID,
        recipient=Recipient("contact", CONTACTS[0]),
        activity_type="Spam Report",
        activity_code=100000003,
        operation_id=OPERATION_ID,
        correlation_id=CORRELATION_ID,
    )
    sender.send(settle.forward(item, SETTINGS, source_message_id="sb-1"))

    [message] = peer.received_on(OPT_OUT)
    assert message.id == f"{LOG_ID}:opt_out"
    assert message.correlation_id == CORRELATION_ID
    assert message.properties["source_message_id"] == "sb-1"
    assert message.properties["recipient_id"] == CONTACTS[0]
    assert json.loads(message.body)["recipient"] == {"table": "contact", "id": CONTACTS[0]}


# -- redrive ------------------------------------------------------------------------------------------------


def rejected_by_router(reason="no recipient", message_id="dv-1"):
    return settle.rejected_copy(
        InboundMessage(
            wire(campaign_log()),
            message_id=message_id,
            delivery_count=1,
            correlation_id=CORRELATION_ID,
            application_properties={"EntityLogicalName": "concep_emailcampaignlog"},
        ),
        reason,
        "CampaignLogRouter",
        SETTINGS,
    )


def rejected_by_opt_out(reason="403 missing privilege"):
    item = WorkItem(route=Route.OPT_OUT, log_id=LOG_ID, recipient=Recipient("contact", CONTACTS[1]))
    work = settle.forward(item, SETTINGS)
    return settle.rejected_copy(
        InboundMessage(
            work.body, message_id=work.message_id, delivery_count=2, application_properties=work.application_properties
        ),
        reason,
        "BulkEmailOptOut",
        SETTINGS,
    )


def seed(peer, queue, outbound):
    """Put an OutboundMessage on the peer as the SDK would have sent it."""
    message = Message(
        id=outbound.message_id,
        body=outbound.body,
        content_type=outbound.content_type,
        correlation_id=outbound.correlation_id,
        subject=outbound.subject,
        properties=dict(outbound.application_properties),
    )
    message.inferred = True  # the body is a data section
    peer.put(queue, message)


def run(peer, *argv):
    parser = argparse.ArgumentParser()
    redrive.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = redrive.redrive(
        parser.parse_args(argv), SETTINGS, {"ServiceBusConnection": peer.connection_string}, out=out, err=err
    )
    return code, out.getvalue(), err.getvalue()


def test_redrive_sends_each_rejected_message_back_to_the_queue_of_the_function_that_rejected_it(peer):
    router, opt_out = rejected_by_router(), rejected_by_opt_out()
    seed(peer, REJECTED, router)
    seed(peer, REJECTED, opt_out)

    code, out, _ = run(peer, "--from", "rejected")

    assert code == 0
    assert peer.messages(REJECTED) == []
    [to_router] = peer.received_on(CAMPAIGN_LOG)
    [to_opt_out] = peer.received_on(OPT_OUT)
    # The original MessageId + :redrive1 (the original itself would be dropped by duplicate detection),
    # body, correlation id, content type and every property, plus redrive_count.
    assert to_router.id == "dv-1:redrive1"
    assert to_opt_out.id == f"{LOG_ID}:opt_out:redrive1"
    assert to_router.body == router.body
    assert to_router.correlation_id == CORRELATION_ID
    assert to_router.content_type == "application/json"
    assert to_router.subject == "CampaignLogRouter"
    assert to_router.properties == {**router.application_properties, "redrive_count": 1}
    assert to_opt_out.properties == {**opt_out.application_properties, "redrive_count": 1}
    assert to_opt_out.properties["rejected_reason"] == "403 missing privilege"
    # The summary: totals, targets and the counts by reason.
    assert "redrive from rejected: 2 moved, 0 skipped" in out
    assert f"moved to: {CAMPAIGN_LOG} 1, {OPT_OUT} 1" in out
    assert "     1  no recipient" in out
    assert "     1  403 missing privilege" in out


def test_a_second_redrive_counts_the_second_trip():
    held = redrive.Held(
        message_id="x:rejected", body=b"{}", application_properties={"original_message_id": "x", "redrive_count": 1}
    )
    copy = redrive_rules.redrive_copy(held, OPT_OUT)
    assert copy.application_properties["redrive_count"] == 2
    assert copy.message_id == "x:redrive2"


def test_redrive_max_moves_at_most_n_messages(peer):
    for number in range(3):
        seed(peer, REJECTED, rejected_by_router(message_id=f"dv-{number}"))

    code, out, _ = run(peer, "--from", "rejected", "--max", "1")

    assert code == 0
    assert [m.id for m in peer.received_on(CAMPAIGN_LOG)] == ["dv-0:redrive1"]
    assert len(peer.messages(REJECTED)) == 2
    assert "1 moved" in out


def test_a_dry_run_only_peeks_and_says_what_it_would_do(peer):
    seed(peer, REJECTED, rejected_by_router())
    seed(peer, REJECTED, rejected_by_opt_out())

    code, out, _ = run(peer, "--from", "rejected", "--dry-run")

    assert code == 0
    assert len(peer.messages(REJECTED)) == 2
    assert peer.received == []
    assert (REJECTED + "/$management", "com.microsoft:peek-message") in peer.management_requests
    assert f"would move dv-1:rejected (#1) → {CAMPAIGN_LOG} as dv-1:redrive1 [no recipient]" in out
    assert (
        f"would move {LOG_ID}:opt_out:rejected (#2) → {OPT_OUT} as {LOG_ID}:opt_out:redrive1 [403 missing privilege]"
    ) in out
    assert "2 would move, 0 would skip" in out


def test_a_message_without_a_target_stays_where_it_is(peer):
    unknown = rejected_by_router()
    unknown = OutboundMessage(
        **{
            **unknown.__dict__,
            "application_properties": {k: v for k, v in unknown.application_properties.items() if k != "rejected_by"},
        }
    )
    seed(peer, REJECTED, unknown)
    seed(peer, REJECTED, rejected_by_opt_out())

    code, out, _ = run(peer, "--from", "rejected")

    assert code == 0
    assert [m.id for m in peer.messages(REJECTED)] == [unknown.message_id]
    assert len(peer.received_on(OPT_OUT)) == 1
    assert "1 moved, 1 skipped" in out
    assert "skipped: no target 1" in out


def test_dead_lettered_messages_go_back_to_the_queue_they_died_on(peer):
    for number in range(2):
        message = Message(
            id=f"{LOG_ID[:-1]}{number}:opt_out",
            body=b'{"version":1}',
            properties={"DeadLetterReason": "MaxDeliveryCountExceeded"},
        )
        message.inferred = True
        peer.put(OPT_OUT_DEAD_LETTERS, message)

    code, out, _ = run(peer, "--from", f"deadletter:{OPT_OUT}")

    assert code == 0
    assert peer.messages(OPT_OUT_DEAD_LETTERS) == []
    assert [m.properties["redrive_count"] for m in peer.received_on(OPT_OUT)] == [1, 1]
    assert "2 moved" in out and "by DeadLetterReason:" in out and "     2  MaxDeliveryCountExceeded" in out


def test_a_failed_send_leaves_the_message_in_place_and_exits_1(peer):
    seed(peer, REJECTED, rejected_by_router())
    seed(peer, REJECTED, rejected_by_opt_out())
    peer.refuse_sends(OPT_OUT)  # e.g. the queue is full

    code, out, err = run(peer, "--from", "rejected")

    assert code == 1
    assert [m.id for m in peer.messages(REJECTED)] == [f"{LOG_ID}:opt_out:rejected"]
    assert len(peer.received_on(CAMPAIGN_LOG)) == 1
    assert f"sending {LOG_ID}:opt_out:redrive1 to {OPT_OUT} failed" in err
    assert "1 moved" in out


@pytest.mark.parametrize(
    ("rejected_by", "to", "target"),
    [
        ("CampaignLogRouter", None, CAMPAIGN_LOG),
        ("BulkEmailOptOut", None, OPT_OUT),
        ("BounceDetail", None, SETTINGS.bounce_queue),
        ("SomethingElse", None, None),
        ("SomethingElse", "elsewhere", "elsewhere"),
        ("BulkEmailOptOut", "elsewhere", "elsewhere"),
    ],
)
def test_the_target_is_the_rejecting_functions_trigger_queue_unless_to_names_one(rejected_by, to, target):
    held = redrive.Held(message_id="m", body=b"{}", application_properties={"rejected_by": rejected_by})
    source = redrive.parse_source("rejected", SETTINGS)
    assert redrive_rules.target_for(held, source, SETTINGS, to)[0] == target


def test_progress_is_a_bar_redrawn_in_place_on_a_terminal_and_a_line_per_100_messages_otherwise():
    terminal, log = _Terminal(), io.StringIO()
    on_terminal, in_log = redrive._Progress(terminal, total=4), redrive._Progress(log, total=None)
    tally = redrive.Tally()
    for _ in range(200):
        tally.moved += 1
        on_terminal.update(tally)
        in_log.update(tally)
    on_terminal.finish()
    assert terminal.getvalue().startswith("\r[#######.......................] 1/4 moved, 0 skipped")
    assert terminal.getvalue().endswith("\n") and "\n" not in terminal.getvalue()[:-1]
    assert log.getvalue().splitlines() == [
        "redrive: 100 messages, 100 moved, 0 skipped",
        "redrive: 200 messages, 200 moved, 0 skipped",
    ]


def test_an_empty_source_is_done(peer):
    code, out, _ = run(peer, "--from", f"deadletter:{OPT_OUT}")
    assert code == 0
    assert f"redrive from deadletter:{OPT_OUT}: 0 moved, 0 skipped" in out


@pytest.mark.parametrize("source", ["rejekted", "deadletter:", "deadletter:opt out"])
def test_a_bad_source_is_a_usage_error(source):
    parser = argparse.ArgumentParser()
    redrive.add_arguments(parser)
    err = io.StringIO()
    code = redrive.redrive(parser.parse_args(["--from", source]), SETTINGS, {}, out=io.StringIO(), err=err)
    assert code == 2
    assert "--from must be" in err.getvalue()


class _Terminal(io.StringIO):
    def isatty(self):
        return True
