"""VERIFY_CAMPAIGN_LOG: each event checked against Dataverse's own campaign log row before any write
(optout_core.domain.verification, the writers in optout_core.app), over HTTP against the stand-in."""

import pytest

from optout_core.app.bounce import record_bounce
from optout_core.app.opt_out import opt_out_batch
from optout_core.app.router import route
from optout_core.app.services import Services
from optout_core.domain.model import Outcome
from optout_core.domain.settings import Settings
from optout_core.servicebus.envelopes import InboundMessage
from optout_dev.messages import ACTIVITY, CONTACTS, ENTITY, LEADS, LOG_ID, campaign_log, wire
from optout_dev.queues import InMemoryQueues
from tests.support.dataverse import standin_env

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP = "Microsoft.Dynamics.CRM.lookuplogicalname"
BOUNCE_UPDATE = '{"description": "{activity_type}: {detail}"}'


@pytest.fixture
def standin(make_standin):
    return make_standin(campaign_log=True)


def services_for(standin, verify=True, **env):
    settings = standin_env(standin, VERIFY_CAMPAIGN_LOG="true" if verify else "false", BOUNCE_UPDATE=BOUNCE_UPDATE)
    return Services(Settings.from_env({**settings, **env}), sender=InMemoryQueues())


def log_row(activity="Spam Report", recipient=("contact", CONTACTS[0]), detail=None):
    table, row_id = recipient
    row = {
        "concep_activitytype": ACTIVITY[activity],
        f"concep_activitytype@{FORMATTED}": activity,
        "_concep_recipientid_value": row_id,
        f"_concep_recipientid_value@{LOOKUP}": table,
        "createdon": "2025-03-14T09:26:53Z",
    }
    if detail is not None:
        row["concep_bouncereason"] = detail
    return row


def work_item(services, log_id=LOG_ID, **log):
    """The work item the router forwards for a campaign log message (what a sender on the queue could forge)."""
    handled = route(InboundMessage(body=wire(campaign_log(log_id=log_id, **log)), message_id="m"), services)
    assert handled.outcome is Outcome.ROUTED, handled.reason
    queue = "opt-out" if handled.route == "opt_out" else "bounce"
    message = services.sender.messages(queue)[-1]
    return InboundMessage(body=message.body, message_id=message.message_id, delivery_count=1)


def test_a_verified_opt_out_is_applied_with_one_read_and_one_write(standin):
    services = services_for(standin)
    standin.add_row(ENTITY, LOG_ID, **log_row())
    [handled] = opt_out_batch([work_item(services, activity="Spam Report")], services)
    assert handled.outcome is Outcome.APPLIED and handled.dataverse_requests == 2
    assert standin.row("contact", CONTACTS[0])["donotbulkemail"] is True


def test_a_forged_event_without_a_row_is_rejected_and_nothing_is_written(standin):
    services = services_for(standin)
    [handled] = opt_out_batch([work_item(services, activity="Spam Report")], services)
    assert handled.outcome is Outcome.REJECTED
    assert handled.reason == "no such campaign log in Dataverse: forged or deleted"
    assert standin.writes == [] and len(services.sender.messages("rejected")) == 1


def test_a_mismatched_recipient_is_rejected_naming_the_field_not_the_values(standin):
    services = services_for(standin)
    standin.add_row(ENTITY, LOG_ID, **log_row(recipient=("lead", LEADS[0])))
    [handled] = opt_out_batch(
        [work_item(services, activity="Spam Report", recipient=("contact", CONTACTS[0]))], services
    )
    assert handled.outcome is Outcome.REJECTED and handled.reason.endswith("row: recipient")
    assert LEADS[0] not in handled.reason and CONTACTS[0] not in handled.reason
    assert standin.writes == []


def test_a_mismatched_activity_type_is_rejected(standin):
    services = services_for(standin)
    standin.add_row(ENTITY, LOG_ID, **log_row(activity="Client Opt Out"))
    [handled] = opt_out_batch([work_item(services, activity="Spam Report")], services)
    assert handled.outcome is Outcome.REJECTED and handled.reason.endswith("row: activity type")
    assert standin.writes == []


def test_a_row_that_is_not_an_opt_out_at_all_is_rejected(standin):
    services = services_for(standin)
    standin.add_row(ENTITY, LOG_ID, **log_row(activity="Open"))
    [handled] = opt_out_batch([work_item(services, activity="Spam Report")], services)
    assert handled.outcome is Outcome.REJECTED and "does not match Dataverse's row" in handled.reason
    assert standin.writes == []


def test_a_verified_bounce_writes_dataverses_values_not_the_messages(standin):
    services = services_for(standin)
    standin.add_row(ENTITY, LOG_ID, **log_row(activity="Hard Bounce", detail="550 5.1.1 from Dataverse"))
    msg = work_item(services, activity="Hard Bounce", bounce_reason="<script>forged text</script>")
    handled = record_bounce(msg, services)
    assert handled.outcome is Outcome.APPLIED and handled.dataverse_requests == 2
    assert standin.row("contact", CONTACTS[0])["description"] == "Hard Bounce: 550 5.1.1 from Dataverse"


def test_a_burst_of_1000_verified_opt_outs_costs_two_requests(standin):
    services = services_for(standin)
    ids = [f"5c1e8a72-4f10-f011-998a-{n:012d}" for n in range(1000)]
    for log_id in ids:
        standin.add_row(ENTITY, log_id, **log_row())
    msgs = [work_item(services, log_id=log_id, activity="Spam Report") for log_id in ids]
    handled = opt_out_batch(msgs, services)
    assert {h.outcome for h in handled} == {Outcome.APPLIED}
    assert sum(h.dataverse_requests for h in handled) == 2  # one $batch of GETs, one $batch of PATCHes


def test_with_verification_off_nothing_is_read(standin):
    services = services_for(standin, verify=False)
    [handled] = opt_out_batch([work_item(services, activity="Spam Report")], services)
    assert handled.outcome is Outcome.APPLIED and handled.dataverse_requests == 1
    assert all(ENTITY not in op.path for op in standin.operations)


def test_check_connect_says_whether_verification_is_on_and_that_the_log_table_can_be_read(standin):
    from optout_core.cli.check import connect

    off = connect(Settings.from_env(standin_env(standin)))
    assert off.ok and "VERIFY_CAMPAIGN_LOG is off" in off.message
    on = connect(Settings.from_env(standin_env(standin, VERIFY_CAMPAIGN_LOG="true")))
    assert on.ok and "can read concep_emailcampaignlogs" in on.message


def test_check_connect_fails_when_verification_is_on_and_the_log_table_cannot_be_read(standin):
    from optout_core.cli.check import connect
    from optout_dev.standin import Fault

    standin.inject(Fault(status=403, code="0x80040220", method="GET", path_contains=ENTITY))
    diagnosis = connect(Settings.from_env(standin_env(standin, VERIFY_CAMPAIGN_LOG="true")))
    assert not diagnosis.ok and "grant the application user's security role Read" in diagnosis.message
