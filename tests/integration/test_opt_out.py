"""BulkEmailOptOut over a batch (optout_core.app.opt_out.opt_out_batch): one $batch, coalesced recipients, one outcome
per message."""

import json
import logging
import time

import pytest

from optout_core.app import opt_out
from optout_core.app.services import Services
from optout_core.domain.model import Outcome, Recipient, Route
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage
from optout_dev.messages import CONTACTS, DELETED_CONTACT, LEADS
from optout_dev.queues import InMemoryQueues
from optout_dev.standin import Fault
from tests.support.dataverse import standin_env


def services_for(standin, **env):
    return Services(Settings.from_env(standin_env(standin, **env)), sender=InMemoryQueues())


def work(n, table, row_id, **kwargs):
    item = WorkItem(
        route=Route.OPT_OUT,
        log_id=f"5c1e8a72-4f10-f011-998a-{n:012d}",
        recipient=Recipient(table, row_id),
        activity_type="Spam Report",
        **kwargs,
    )
    return InboundMessage(body=item.to_json(), message_id=item.message_id, delivery_count=1)


def test_a_batch_writes_each_recipient_once_in_one_request(standin):
    services = services_for(standin)
    msgs = [
        work(1, "contact", CONTACTS[0]),
        work(2, "lead", LEADS[0]),
        work(3, "contact", CONTACTS[0]),
        work(4, "contact", DELETED_CONTACT),
    ]
    handled = opt_out.opt_out_batch(msgs, services)
    assert [str(h.outcome) for h in handled] == ["applied", "applied", "applied", "recipient_missing"]
    assert "one write for 2 opt-outs" in handled[0].reason
    assert [r.path for r in standin.requests] == ["/api/data/v9.2/$batch"]
    assert len(standin.operations) == 3 and len(standin.writes) == 2
    assert sum(h.dataverse_requests for h in handled) == 1
    assert [h.log_id for h in handled] == [f"5c1e8a72-4f10-f011-998a-{n:012d}" for n in (1, 2, 3, 4)]


def test_copies_of_one_work_item_in_a_batch_are_duplicates(standin):
    services = services_for(standin)
    msgs = [work(1, "contact", CONTACTS[0]), work(1, "contact", CONTACTS[0])]
    handled = opt_out.opt_out_batch(msgs, services)
    assert [str(h.outcome) for h in handled] == ["applied", "ignored"]
    assert handled[1].reason.startswith("duplicate")


def test_a_malformed_message_is_rejected_and_the_rest_still_written(standin):
    services = services_for(standin)
    handled = opt_out.opt_out_batch([InboundMessage(body=b"{}", message_id="bad"), work(1, "lead", LEADS[1])], services)
    assert [str(h.outcome) for h in handled] == ["rejected", "applied"]
    assert services.sender.messages("rejected")[0].body == b"{}"


def test_a_part_refused_for_good_is_rejected_alone(standin):
    services = services_for(standin)
    standin.inject(Fault(status=403, code="0x80040220", inner=True, path_contains=LEADS[0]))
    handled = opt_out.opt_out_batch([work(1, "lead", LEADS[0]), work(2, "contact", CONTACTS[1])], services)
    assert [str(h.outcome) for h in handled] == ["rejected", "applied"]
    assert "403" in handled[0].reason
    [kept] = services.sender.messages("rejected")
    assert kept.message_id.startswith(f"5c1e8a72-4f10-f011-998a-{1:012d}:opt_out")


def test_a_part_failing_transiently_is_put_back_alone_and_the_others_are_never_resent(standin):
    services = services_for(standin)
    # Both tries of this delivery: as a part of the $batch, then alone (a lone operation goes as itself).
    as_part, alone = (Fault(status=503, inner=inner, path_contains=CONTACTS[2]) for inner in (True, False))
    standin.inject(as_part, alone)
    handled = opt_out.opt_out_batch([work(1, "contact", CONTACTS[2]), work(2, "contact", CONTACTS[1])], services)
    assert [str(h.outcome) for h in handled] == ["rescheduled", "applied"]
    [later] = services.sender.messages("opt-out")
    assert later.message_id.endswith(":opt_out:r1") and later.scheduled_enqueue_time is not None
    assert standin.pending_faults == 0  # the part's 503, then its own request's
    sent = standin.operations + [r for r in standin.requests if r.batch is None]
    assert [op.path.endswith(CONTACTS[1] + ")") for op in sent].count(True) == 1
    # The put-back copy, delivered later, applies.
    again = opt_out.opt_out_batch([InboundMessage(body=later.body, message_id=later.message_id)], services)
    assert str(again[0].outcome) == "applied"
    assert standin.row("contact", CONTACTS[2])["donotbulkemail"] is True


def test_a_transient_failure_is_put_back_however_often_until_its_window_closes(standin):
    services = services_for(standin, DATAVERSE_RETRY_WINDOW_SECONDS="3600")
    standin.set_fault_rate(1.0, [Fault(status=503)])
    now = services.clock()
    [young] = opt_out.opt_out_batch(
        [work(1, "contact", CONTACTS[0], reschedules=500, first_attempt=now - 3000)], services
    )
    assert young.outcome is Outcome.RESCHEDULED
    [old] = opt_out.opt_out_batch(
        [work(2, "contact", CONTACTS[1], reschedules=3, first_attempt=now - 3601, last_error="Dataverse answered 502")],
        services,
    )
    # Its read-back could not tell (503): the reason is the last real error, from an earlier write.
    assert old.outcome is Outcome.FAILED and old.reason.endswith("Dataverse answered 502")
    [kept] = services.sender.messages("rejected")
    assert kept.application_properties["outcome"] == "failed"


def test_a_redelivered_batch_reads_back_instead_of_writing_again(standin):
    services = services_for(standin)
    standin.add_row("contact", CONTACTS[0], donotbulkemail=True)  # written by the delivery that lost its lock
    msg = work(1, "contact", CONTACTS[0])
    redelivered = InboundMessage(body=msg.body, message_id=msg.message_id, delivery_count=2)
    [handled] = opt_out.opt_out_batch([redelivered], services)
    assert handled.outcome is Outcome.APPLIED and standin.writes == []


def test_a_burst_of_1000_needs_one_request(standin):
    services = services_for(standin)
    recipients = [("contact", CONTACTS[i % 3]) for i in range(300)] + [("lead", LEADS[i % 2]) for i in range(700)]
    handled = opt_out.opt_out_batch([work(n, t, r) for n, (t, r) in enumerate(recipients)], services)
    assert all(h.outcome is Outcome.APPLIED for h in handled) and len(handled) == 1000
    assert len(standin.requests) == 1 and len(standin.writes) == 5


def test_a_batch_whose_writer_raises_still_logs_one_outcome_per_message(standin, caplog):
    class Broken:
        def update_many(self, writes, **kwargs):
            raise OverflowError("cannot convert float infinity to integer")

    services = Services(Settings.from_env(standin_env(standin)), sender=InMemoryQueues(), dataverse=Broken())
    msgs = [work(1, "contact", CONTACTS[0]), work(2, "lead", LEADS[0]), InboundMessage(body=b"{}", message_id="bad")]
    with caplog.at_level(logging.INFO, logger="optout"), pytest.raises(OverflowError):
        opt_out.opt_out_batch(msgs, services)
    lines = [json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.name == "optout"]
    assert sorted(line["outcome"] for line in lines) == ["rejected", "retry", "retry"]
    assert {line["message_id"] for line in lines} == {m.message_id for m in msgs}


def test_a_batch_that_outlives_its_time_budget_puts_back_what_it_has_not_written(standin):
    # A 429 whose Retry-After would be waited in process (within DATAVERSE_MAX_RETRY_AFTER_SECONDS), but not
    # within the batch's budget: the host does not renew a batch's lock, so the work item is put back at once.
    services = services_for(standin, OPT_OUT_BATCH_BUDGET_SECONDS="1", DATAVERSE_MAX_RETRY_AFTER_SECONDS="30")
    standin.inject(Fault(status=429, retry_after=20))
    started = time.monotonic()
    [handled] = opt_out.opt_out_batch([work(1, "contact", CONTACTS[0])], services)
    assert time.monotonic() - started < 10
    assert handled.outcome is Outcome.RESCHEDULED and "waiting 20 s" in handled.reason
