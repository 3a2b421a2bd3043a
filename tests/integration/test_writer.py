"""The writers' one path (optout_core.app.writer): take in, verify, claim, write; claims always released, every
put-back within the retry window, verification before anything that can make a later copy a duplicate."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optout_core.app.bounce import record_bounce
from optout_core.app.opt_out import opt_out_batch
from optout_core.app.services import Services
from optout_core.domain.model import Outcome, Recipient, Route
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage
from optout_dev.messages import ACTIVITY, CONTACTS, ENTITY, LEADS, LOG_ID
from optout_dev.queues import InMemoryQueues
from tests.support.dataverse import standin_env

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP = "Microsoft.Dynamics.CRM.lookuplogicalname"


class RejectedQueueDown(InMemoryQueues):
    """Service Bus failing, for a while, to take a kept copy on the rejected queue (a transient hiccup)."""

    def __init__(self, failures):
        super().__init__()
        self.failures = failures

    def send(self, message):
        if message.queue == "rejected" and self.failures > 0:
            self.failures -= 1
            raise ConnectionError("Service Bus is unavailable")
        super().send(message)


def services_for(standin, sender=None, **env):
    return Services(Settings.from_env(standin_env(standin, **env)), sender=sender or InMemoryQueues())


def work(n, table="contact", row_id=CONTACTS[0], route=Route.OPT_OUT, **kwargs):
    item = WorkItem(
        route=route,
        log_id=f"5c1e8a72-4f10-f011-998a-{n:012d}",
        recipient=Recipient(table, row_id),
        activity_type="Spam Report" if route is Route.OPT_OUT else "Hard Bounce",
        **kwargs,
    )
    return InboundMessage(body=item.to_json(), message_id=item.message_id, delivery_count=1)


def poisoned(message, **fields):
    """``message``'s work item with ``fields`` replaced in its JSON (what no router would send)."""
    document = json.loads(message.body)
    document.update(fields)
    return InboundMessage(body=json.dumps(document).encode(), message_id="poison", delivery_count=1)


POISON = {
    "a list where a table name belongs": {"recipient": {"table": ["contact"], "id": CONTACTS[2]}},
    "a list where the route belongs": {"route": ["opt_out"]},
    "a newer version": {"version": 2},
}


@pytest.mark.parametrize("fields", POISON.values(), ids=POISON.keys())
def test_claims_are_released_when_keeping_a_malformed_item_fails(standin, fields):
    services = services_for(standin, sender=RejectedQueueDown(failures=1))
    valid = work(1)
    batch = [valid, poisoned(work(2, row_id=CONTACTS[1]), **fields), work(3, row_id=CONTACTS[1])]
    with pytest.raises(ConnectionError):  # the batch goes back to Service Bus
        opt_out_batch(batch, services)
    # Delivered again: the items read before the failure are not "being written by another batch".
    again = [InboundMessage(m.body, message_id=m.message_id, delivery_count=2) for m in batch]
    outcomes = [(r.outcome, r.reason) for r in opt_out_batch(again, services)]
    assert [o for o, _ in outcomes] == [Outcome.APPLIED, Outcome.REJECTED, Outcome.APPLIED], outcomes
    assert standin.row("contact", CONTACTS[0])["donotbulkemail"] is True


@pytest.mark.parametrize("fields", POISON.values(), ids=POISON.keys())
def test_a_malformed_item_is_rejected_as_an_invalid_work_item(standin, fields):
    services = services_for(standin)
    [handled] = opt_out_batch([poisoned(work(1), **fields)], services)
    assert handled.outcome is Outcome.REJECTED and standin.writes == []
    assert len(services.sender.messages("rejected")) == 1


def test_a_first_attempt_beyond_any_real_time_is_unknown_and_its_window_opens_now(standin):
    services = services_for(standin)
    [handled] = opt_out_batch([poisoned(work(1), first_attempt=int("9" * 400))], services)
    assert handled.outcome is Outcome.APPLIED


def test_a_copy_being_written_by_another_batch_is_put_back_only_within_the_retry_window(standin):
    services = services_for(standin, DATAVERSE_RETRY_WINDOW_SECONDS="3600")
    now = services.clock()
    young, old = work(1, first_attempt=now - 60), work(2, row_id=CONTACTS[1], first_attempt=now - 3601)
    for message in (young, old):  # another batch of this worker holds both right now
        services.recent.try_claim(WorkItem.from_json(message.body).key)
    [waiting] = opt_out_batch([young], services)
    assert waiting.outcome is Outcome.RESCHEDULED and "being written by another batch" in waiting.reason
    [closed] = opt_out_batch([old], services)
    assert closed.outcome is Outcome.FAILED and "retry window closed" in closed.reason
    [kept] = services.sender.messages("rejected")
    assert kept.application_properties["outcome"] == "failed"


def log_row(recipient=("contact", CONTACTS[0]), activity="Spam Report"):
    table, row_id = recipient
    return {
        "concep_activitytype": ACTIVITY[activity],
        f"concep_activitytype@{FORMATTED}": activity,
        "_concep_recipientid_value": row_id,
        f"_concep_recipientid_value@{LOOKUP}": table,
        "createdon": "2025-03-14T09:26:53Z",
    }


def with_log_id(message, log_id=LOG_ID):
    document = json.loads(message.body)
    document["log_id"] = log_id
    return InboundMessage(body=json.dumps(document).encode(), message_id=f"{log_id}:x", delivery_count=1)


def test_a_forged_copy_with_the_real_log_id_does_not_suppress_the_genuine_opt_out(make_standin):
    standin = make_standin(campaign_log=True)
    standin.add_row(ENTITY, LOG_ID, **log_row())
    services = services_for(standin, VERIFY_CAMPAIGN_LOG="true")
    forged = with_log_id(work(1, "lead", LEADS[0]))
    genuine = with_log_id(work(1))
    first, second = opt_out_batch([forged, genuine], services)  # the forged copy arrives first, in one batch
    assert first.outcome is Outcome.REJECTED and first.reason.endswith("row: recipient")
    assert second.outcome is Outcome.APPLIED, second.reason
    assert standin.row("contact", CONTACTS[0])["donotbulkemail"] is True


def test_a_forged_bounce_is_verified_even_when_nothing_is_written(make_standin):
    standin = make_standin(campaign_log=True)
    standin.add_row(ENTITY, LOG_ID, **log_row(activity="Hard Bounce"))
    services = services_for(standin, VERIFY_CAMPAIGN_LOG="true", BOUNCE_UPDATE="")
    forged = record_bounce(with_log_id(work(1, "lead", LEADS[0], route=Route.BOUNCE)), services)
    assert forged.outcome is Outcome.REJECTED and forged.reason.endswith("row: recipient")
    genuine = record_bounce(with_log_id(work(1, route=Route.BOUNCE)), services)
    assert genuine.outcome is Outcome.APPLIED and genuine.recipient == f"contact/{CONTACTS[0]}"


def test_a_forged_event_routed_first_does_not_make_the_genuine_work_item_a_duplicate_on_its_queue(make_standin):
    from optout_core.app.router import route
    from optout_dev.messages import campaign_log, wire
    from optout_dev.queues import delivered

    standin = make_standin(campaign_log=True)
    standin.add_row(ENTITY, LOG_ID, **log_row())
    services = services_for(standin, VERIFY_CAMPAIGN_LOG="true")
    for recipient in (("lead", LEADS[0]), ("contact", CONTACTS[0])):  # forged first, then Dataverse's own post
        body = wire(campaign_log(activity="Spam Report", recipient=recipient))
        assert route(InboundMessage(body=body, message_id=f"sb-{recipient[0]}"), services).outcome is Outcome.ROUTED
    route(InboundMessage(body=body, message_id="sb-again"), services)  # Dataverse posts again: still a duplicate
    queued = services.sender.messages("opt-out")
    assert len(queued) == 2 and all(len(m.message_id) <= 128 for m in queued)
    outcomes = [r.outcome for r in opt_out_batch([delivered(m, 1) for m in queued], services)]
    assert outcomes == [Outcome.REJECTED, Outcome.APPLIED]
    assert standin.row("contact", CONTACTS[0])["donotbulkemail"] is True


def test_a_batch_handed_back_part_way_logs_exactly_one_line_per_message(standin, caplog):
    services = services_for(standin, sender=RejectedQueueDown(failures=1))
    batch = [work(1), poisoned(work(2), version=2), work(3, row_id=CONTACTS[1])]
    with caplog.at_level("INFO", logger="optout"), pytest.raises(ConnectionError):
        opt_out_batch(batch, services)
    lines = [json.loads(r.getMessage().removeprefix("outcome ")) for r in caplog.records if r.name == "optout"]
    assert sorted(line["message_id"] for line in lines) == sorted(m.message_id for m in batch)
    assert {line["outcome"] for line in lines} == {"retry"}


def test_the_writers_load_the_routing_rules_only_to_verify_a_campaign_log():
    code = (
        "import sys, optout_core.app.opt_out, optout_core.app.bounce; "
        "print(sorted(m for m in sys.modules if m.endswith(('.routing', '.verification', '.execution_context'))))"
    )
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "[]"
