"""What each function does with one message (optout_core.app.router, .opt_out, .bounce and .settle), with an
in-memory queue and the stand-in."""

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from optout_core.app import bounce, router
from optout_core.app.opt_out import opt_out_batch
from optout_core.app.services import Services
from optout_core.app.settle import MESSAGE_BUDGET_SECONDS
from optout_core.dataverse.auth import StaticTokenCredential
from optout_core.dataverse.client import DataverseClient
from optout_core.dataverse.errors import DataverseUnavailable
from optout_core.dataverse.throttle import ThrottleGate
from optout_core.domain.model import Outcome
from optout_core.domain.settings import Settings
from optout_core.servicebus.envelopes import InboundMessage
from optout_dev.messages import ACCOUNTS, CONTACTS, DELETED_CONTACT, LEADS, LOG_ID, OPERATION_ID, campaign_log, wire
from optout_dev.queues import InMemoryQueues
from optout_dev.standin import Fault


@pytest.fixture
def standin(make_standin):
    """The seeded recipients, plus the campaign log table so trimmed contexts can be read back."""
    return make_standin(campaign_log=True)


def services_for(standin=None, **env):
    base = {"DATAVERSE_BACKOFF_SECONDS": "0.001", "DATAVERSE_MAX_ATTEMPTS": "3"}
    if standin is not None:
        base.update(DATAVERSE_URL=standin.url, DATAVERSE_TOKEN="local-token")
    return Services(Settings.from_env({**base, **env}), sender=InMemoryQueues())


MARK_BOUNCED = '{"donotbulkemail": true}'  # a BOUNCE_UPDATE, for the single-message writer (BounceDetail)


def opt_out(msg, services):
    """BulkEmailOptOut with a batch of one message."""
    [handled] = opt_out_batch([msg], services)
    return handled


def inbound(body, **kwargs):
    return InboundMessage(body=body, message_id=kwargs.pop("message_id", "sb-1"), delivery_count=1, **kwargs)


def routed(services, **log):
    """Route one campaign log; return the work item message it produced."""
    handled = router.route(inbound(wire(campaign_log(**log))), services)
    assert handled.outcome is Outcome.ROUTED, handled.reason
    queue = services.settings.opt_out_queue if handled.route == "opt_out" else services.settings.bounce_queue
    return services.sender.messages(queue)[-1]


def test_router_forwards_a_versioned_work_item_with_a_deterministic_message_id():
    services = services_for()
    message = routed(services, activity="Group Opt out", recipient=("lead", LEADS[0]))
    assert message.queue == "opt-out"
    assert message.message_id == f"{LOG_ID}:opt_out"
    assert json.loads(message.body)["version"] == 1
    assert json.loads(message.body)["recipient"] == {"table": "lead", "id": LEADS[0]}
    assert message.application_properties["operation_id"] == OPERATION_ID
    assert message.application_properties["source_message_id"] == "sb-1"
    assert message.correlation_id


def test_a_redelivered_router_message_is_dropped_by_duplicate_detection():
    services = services_for()
    body = wire(campaign_log(activity="Spam Report"))
    router.route(inbound(body), services)
    router.route(inbound(body, message_id="sb-2"), services)
    assert len(services.sender.messages("opt-out")) == 1
    assert services.sender.duplicates_dropped == 1


def test_a_rejected_message_is_kept_with_its_body_properties_and_reason():
    services = services_for()
    handled = router.route(inbound(b"not json", application_properties={"custom": "kept"}), services)
    assert handled.outcome is Outcome.REJECTED
    [copy] = services.sender.messages("rejected")
    assert copy.body == b"not json"
    assert copy.application_properties["custom"] == "kept"
    assert copy.application_properties["rejected_by"] == "CampaignLogRouter"
    assert "not valid JSON" in copy.application_properties["rejected_reason"]
    assert copy.application_properties["original_message_id"] == "sb-1"


def test_an_ignored_message_sends_nothing():
    services = services_for()
    handled = router.route(inbound(wire(campaign_log(activity="Open"))), services)
    assert handled.outcome is Outcome.IGNORED
    assert services.sender.messages("opt-out") == services.sender.messages("rejected") == []


def test_a_send_failure_raises_so_service_bus_redelivers(caplog):
    class Down:
        def send(self, message):
            raise ConnectionError("namespace unreachable")

    services = Services(Settings.from_env({}), sender=Down())
    with caplog.at_level(logging.INFO, logger="optout"), pytest.raises(ConnectionError):
        router.route(inbound(wire(campaign_log())), services)
    assert '"outcome": "retry"' in caplog.text


def test_opt_out_sets_donotbulkemail_on_the_recipient(standin):
    services = services_for(standin)
    work = routed(services, activity="Client Opt Out", recipient=("account", ACCOUNTS[1]))
    handled = opt_out(inbound(work.body), services)
    assert handled.outcome is Outcome.APPLIED and handled.dataverse_requests == 1
    assert standin.row("account", ACCOUNTS[1])["donotbulkemail"] is True
    assert standin.writes == [("account", ACCOUNTS[1], {"donotbulkemail": True})]


def test_opt_out_update_is_a_setting(standin):
    services = services_for(standin, OPT_OUT_UPDATE='{"donotbulkemail": true, "donotemail": true}')
    work = routed(services, activity="Spam Report", recipient=("contact", CONTACTS[0]))
    opt_out(inbound(work.body), services)
    assert standin.row("contact", CONTACTS[0])["donotemail"] is True


def test_a_deleted_recipient_completes_as_recipient_missing_and_is_not_recreated(standin):
    services = services_for(standin)
    work = routed(services, activity="Spam Report", recipient=("contact", DELETED_CONTACT))
    handled = opt_out(inbound(work.body), services)
    assert handled.outcome is Outcome.RECIPIENT_MISSING
    assert standin.row("contact", DELETED_CONTACT) is None
    assert services.sender.messages("rejected") == []


def test_a_web_api_rejection_is_kept_on_the_rejected_queue(standin):
    services = services_for(standin, OPT_OUT_UPDATE='{"x_notacolumn": true}')
    work = routed(services, activity="Spam Report")
    handled = opt_out(inbound(work.body, message_id=work.message_id), services)
    assert handled.outcome is Outcome.REJECTED and "0x0" in handled.reason
    [copy] = services.sender.messages("rejected")
    assert copy.body == work.body and copy.application_properties["rejected_by"] == "BulkEmailOptOut"


def test_a_transient_failure_puts_the_bounce_back_on_its_queue(standin):
    services = services_for(standin, BOUNCE_UPDATE=MARK_BOUNCED)
    work = routed(services, activity="Hard Bounce")
    standin.inject(Fault(status=503), times=3)
    handled = bounce.record_bounce(inbound(work.body), services)
    assert handled.outcome is Outcome.RESCHEDULED and "503" in handled.reason
    [later] = services.sender.messages("bounce")[1:]
    assert later.message_id == f"{LOG_ID}:bounce:r1" and services.sender.messages("rejected") == []
    assert bounce.record_bounce(inbound(later.body, message_id=later.message_id), services).outcome is Outcome.APPLIED


def test_a_transient_failure_reading_a_trimmed_log_raises_for_redelivery_and_logs_its_outcome(standin, caplog):
    services = services_for(standin)
    standin.inject(Fault(status=503), times=3)
    with caplog.at_level(logging.INFO, logger="optout"), pytest.raises(DataverseUnavailable):
        router.route(inbound(wire(campaign_log(trimmed=True))), services)
    assert services.sender.messages("rejected") == [] and services.sender.messages("opt-out") == []
    [line] = [json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.name == "optout"]
    assert line["outcome"] == "retry" and line["log_id"] == LOG_ID and "503" in line["reason"]


def test_a_trimmed_log_handed_back_carries_its_read_as_an_attempt_with_the_requests_it_took(standin):
    services = services_for(standin)
    standin.inject(Fault(status=503), times=3)
    with pytest.raises(router.RowUnread) as raised:
        router.route(inbound(wire(campaign_log(trimmed=True))), services)
    read = raised.value.attempt
    attempts = services.settings.retry.attempts
    assert (read.requests, read.attempts) == (attempts, attempts) and read.value is None
    assert raised.value.status == read.error.status == 503 and str(raised.value) == str(read.error)


def test_a_malformed_work_item_is_rejected_not_retried():
    services = services_for()
    handled = opt_out(inbound(b'{"version": 1, "route": "opt_out"}'), services)
    assert handled.outcome is Outcome.REJECTED
    assert len(services.sender.messages("rejected")) == 1


def test_a_bounce_work_item_on_the_opt_out_queue_is_rejected(standin):
    services = services_for(standin)
    work = routed(services, activity="Hard Bounce")
    assert opt_out(inbound(work.body), services).outcome is Outcome.REJECTED
    assert standin.writes == []


def test_bounce_with_no_update_configured_is_audit_only(standin):
    services = services_for(standin)
    work = routed(services, activity="Hard Bounce", recipient=("contact", CONTACTS[1]))
    handled = bounce.record_bounce(inbound(work.body), services)
    assert handled.outcome is Outcome.APPLIED and "audit only" in handled.reason
    assert handled.dataverse_requests == 0 and standin.requests == []


def test_bounce_writes_the_configured_columns(standin):
    services = services_for(
        standin, BOUNCE_UPDATE='{"donotbulkemail": true, "description": "{activity_type} {occurred_on}: {detail}"}'
    )
    work = routed(
        services, activity="Soft Bounce", recipient=("lead", LEADS[1]), bounce_reason="452 4.2.2 mailbox full"
    )
    handled = bounce.record_bounce(inbound(work.body), services)
    assert handled.outcome is Outcome.APPLIED
    assert standin.row("lead", LEADS[1])["description"] == "Soft Bounce 2025-03-14T09:26:53Z: 452 4.2.2 mailbox full"


def test_every_outcome_is_one_structured_log_line_with_ids_only(standin, caplog):
    services = services_for(standin)
    context = campaign_log(
        activity="Spam Report",
        name="Jane Doe <jane.doe@example.com>",
        extra_attributes={"emailaddress1": "jane.doe@example.com"},
    )
    with caplog.at_level(logging.INFO, logger="optout"):
        router.route(inbound(wire(context)), services)
        opt_out(inbound(services.sender.messages("opt-out")[0].body), services)
    lines = [r.getMessage() for r in caplog.records if r.name == "optout"]
    assert len(lines) == 2
    records = [json.loads(line.split(" ", 1)[1]) for line in lines]
    assert [r["outcome"] for r in records] == ["routed", "applied"]
    for r in records:
        assert {
            "function",
            "log_id",
            "operation_id",
            "correlation_id",
            "message_id",
            "delivery_count",
            "duration_ms",
        } <= set(r)
    assert "example.com" not in caplog.text and "Jane" not in caplog.text and "local-token" not in caplog.text


# -- reliability: throttling, trimmed contexts, duplicates, redeliveries ----------------------------------


def test_a_long_retry_after_reschedules_the_work_item_instead_of_sleeping(standin):
    services = services_for(standin, DATAVERSE_MAX_RETRY_AFTER_SECONDS="5")
    work = routed(services, activity="Spam Report")
    standin.inject(Fault(status=429, retry_after=120))
    handled = opt_out(inbound(work.body, message_id=work.message_id), services)
    assert handled.outcome is Outcome.RESCHEDULED and "waiting 120 s" in handled.reason
    [later] = services.sender.messages("opt-out")[1:]
    assert later.message_id == f"{LOG_ID}:opt_out:r1"
    assert json.loads(later.body)["reschedules"] == 1
    delay = (later.scheduled_enqueue_time - datetime.now(UTC)).total_seconds()
    assert 110 < delay <= 120
    assert standin.row("contact", CONTACTS[0])["donotbulkemail"] is False
    # Every request of this process waits out the user's pause: the copy, taken before it is over, is put back
    # again without a request sent (Dataverse would only refuse it, and lengthen the pause).
    sent = len(standin.requests)
    early = opt_out(inbound(later.body, message_id=later.message_id), services)
    assert early.outcome is Outcome.RESCHEDULED and len(standin.requests) == sent
    # Due, it is applied (by a process whose pause is over: here, another instance).
    applied = opt_out(inbound(later.body, message_id=later.message_id), services_for(standin))
    assert applied.outcome is Outcome.APPLIED


def test_put_backs_end_when_the_retry_window_closes_then_the_work_item_is_kept_as_failed(standin):
    services = services_for(
        standin, DATAVERSE_MAX_RETRY_AFTER_SECONDS="5", DATAVERSE_RETRY_WINDOW_SECONDS="30", BOUNCE_UPDATE=MARK_BOUNCED
    )
    work = routed(services, activity="Hard Bounce")
    standin.inject(Fault(status=429, retry_after=60, method="PATCH"), times=2)
    assert bounce.record_bounce(inbound(work.body), services).outcome is Outcome.RESCHEDULED
    later = services.sender.messages("bounce")[-1]  # put back: read back first, then written (429 again)
    real_clock = services.clock
    services.clock = lambda: real_clock() + 60  # the second delivery comes after the window closed
    handled = bounce.record_bounce(inbound(later.body), services)
    assert handled.outcome is Outcome.FAILED and "retry window closed" in handled.reason and "429" in handled.reason
    [kept] = services.sender.messages("rejected")
    assert kept.application_properties["outcome"] == "failed"


def test_a_trimmed_context_is_decided_from_the_row_read_from_the_web_api(standin):
    services = services_for(standin)
    standin.add_row("contact", CONTACTS[1], donotbulkemail=False)
    row = {
        "concep_activitytype": 100000005,
        "concep_activitytype@OData.Community.Display.V1.FormattedValue": "Client Opt Out",
        "_concep_recipientid_value": CONTACTS[1],
        "_concep_recipientid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact",
        "createdon": "2025-03-14T09:26:53Z",
    }
    standin.add_row("concep_emailcampaignlog", LOG_ID, **row)
    handled = router.route(
        inbound(wire(campaign_log(trimmed=True)), application_properties={"MessageMaxSizeExceeded": True}), services
    )
    assert handled.outcome is Outcome.ROUTED and handled.recipient == f"contact/{CONTACTS[1]}"
    get = [r for r in standin.requests if r.method == "GET"][-1]
    assert get.path == f"/api/data/v9.2/concep_emailcampaignlogs({LOG_ID})"


def test_a_trimmed_context_whose_row_is_gone_is_rejected(standin):
    services = services_for(standin)
    handled = router.route(inbound(wire(campaign_log(trimmed=True))), services)
    assert handled.outcome is Outcome.REJECTED and "no longer exists" in handled.reason


def test_a_trimmed_context_without_dataverse_settings_is_rejected_with_the_setting_named():
    handled = router.route(inbound(wire(campaign_log(trimmed=True))), services_for())
    assert handled.outcome is Outcome.REJECTED and "DATAVERSE_URL" in handled.reason


def test_duplicates_arriving_together_write_once(standin):
    services = services_for(standin)
    work = routed(services, activity="Spam Report")
    standin.inject(Fault(status=503, delay=0.3))  # keeps the first copy in flight while the others arrive
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: opt_out(inbound(work.body, message_id=f"copy-{n}"), services), range(4)))
    outcomes = sorted(str(r.outcome) for r in results)
    # A copy that meets the first in flight is put back (a batch never waits on another: no deadlock); one
    # that arrives after it finished is a recognised duplicate.
    assert outcomes[0] == "applied" and set(outcomes[1:]) <= {"ignored", "rescheduled"}, outcomes
    assert len(standin.writes) == 1
    for later in services.sender.messages("opt-out")[1:]:
        assert opt_out(inbound(later.body, message_id=later.message_id), services).outcome is Outcome.IGNORED
    assert len(standin.writes) == 1


def test_two_batches_holding_copies_in_opposite_order_never_wait_on_each_other(standin):
    services = services_for(standin)
    first = routed(services, activity="Spam Report", recipient=("contact", CONTACTS[0]))
    second = routed(services, activity="Spam Report", log_id=LEADS[1], recipient=("contact", CONTACTS[1]))
    standin.inject(Fault(status=503, delay=0.3), times=2)  # both batches are in flight together
    batches = [[first, second], [second, first]]
    with ThreadPoolExecutor(2) as pool:
        done = [
            pool.submit(opt_out_batch, [inbound(m.body, message_id=f"{m.message_id}-{n}") for m in batch], services)
            for n, batch in enumerate(batches)
        ]
        results = [future.result(timeout=30) for future in done]  # before the fix: both wait forever
    outcomes = sorted(str(r.outcome) for batch in results for r in batch)
    assert outcomes.count("applied") == 2 and set(outcomes) <= {"applied", "ignored", "rescheduled"}, outcomes
    assert len(standin.writes) == 2


def test_a_redelivered_work_item_reads_back_before_writing(standin):
    services = services_for(standin, BOUNCE_UPDATE=MARK_BOUNCED)
    work = routed(services, activity="Hard Bounce")
    standin.add_row("contact", CONTACTS[0], donotbulkemail=True)  # an earlier delivery already wrote it
    redelivered = InboundMessage(body=work.body, message_id=work.message_id, delivery_count=2)
    handled = bounce.record_bounce(redelivered, services)
    assert handled.outcome is Outcome.APPLIED
    assert standin.writes == [] and [r.method for r in standin.requests] == ["GET"]


def test_the_retry_after_cap_is_a_setting_that_reaches_the_client(standin):
    services = services_for(standin, DATAVERSE_RETRY_AFTER_CAP_SECONDS="45", DATAVERSE_MAX_RETRY_AFTER_SECONDS="5")
    work = routed(services, activity="Spam Report")
    standin.inject(Fault(status=429, retry_after=10_000_000_000))
    handled = opt_out(inbound(work.body, message_id=work.message_id), services)
    assert handled.outcome is Outcome.RESCHEDULED and "waiting 45 s" in handled.reason
    later = services.sender.messages("opt-out")[-1]
    assert 35 < (later.scheduled_enqueue_time - datetime.now(UTC)).total_seconds() <= 45


def held_gate_client(standin, waits):
    """A client whose process-wide gate another worker's 429 has closed for longer than a message's budget."""
    gate = ThrottleGate(sleep=waits.append)
    gate.hold(MESSAGE_BUDGET_SECONDS + 60)
    return DataverseClient(standin.url, StaticTokenCredential("local-token"), gate=gate, sleep=waits.append)


def test_a_single_message_is_put_back_instead_of_waiting_at_the_gate_past_its_lock(standin):
    services = services_for(standin, BOUNCE_UPDATE=MARK_BOUNCED)
    work = routed(services, activity="Hard Bounce")
    waits = []
    held = Services(services.settings, sender=services.sender, dataverse=held_gate_client(standin, waits))
    handled = bounce.record_bounce(inbound(work.body), held)
    assert handled.outcome is Outcome.RESCHEDULED and "throttle pause" in handled.reason
    assert waits == [] and standin.writes == []  # nothing waited, nothing sent
    later = services.sender.messages("bounce")[-1]
    assert json.loads(later.body)["reschedules"] == 1
    assert bounce.record_bounce(inbound(later.body), services).outcome is Outcome.APPLIED  # the gate open again


def test_a_trimmed_context_is_handed_back_instead_of_waiting_at_the_gate_past_its_lock(standin):
    waits = []
    held = Services(services_for(standin).settings, sender=InMemoryQueues(), dataverse=held_gate_client(standin, waits))
    with pytest.raises(DataverseUnavailable, match="throttle pause"):
        router.route(inbound(wire(campaign_log(trimmed=True))), held)
    assert waits == [] and standin.requests == []
