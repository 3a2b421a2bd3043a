"""The consent write of BulkEmailOptOut (optout_core.app.consent), over HTTP against the stand-in, through
opt_out_batch: each opt-out also records its recipient's addresses as opted out of the configured purposes and
topics (docs/consent.md)."""

import json
import logging
import threading

import pytest

from optout_core.app import opt_out
from optout_core.app.services import Services, build_dataverse_client
from optout_core.domain.consent import ConsentType, Scope
from optout_core.domain.consent import record_id as derived_id
from optout_core.domain.model import Outcome, Recipient, Route
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage
from optout_dev.queues import InMemoryQueues
from optout_dev.standin import Fault
from optout_dev.standin.presets import COMMERCIAL_PURPOSE_ID, NEWSLETTER_TOPIC_ID, TRANSACTIONAL_PURPOSE_ID
from tests.support.dataverse import standin_env

CONSENT = "msdynmkt_contactpointconsent4"
CONSENT_SET = "msdynmkt_contactpointconsent4s"
OPTED_IN, OPTED_OUT, EMAIL, TEXT = 534120001, 534120002, 534120000, 534120001
PAT = "pat.example@example.com"
CONTACT = "a91d3e55-12f0-ef11-be20-6045bd0f2c11"
LEAD = "b82e4f66-23a1-ef11-be20-6045bd0f2c22"


@pytest.fixture
def journeys(make_standin):
    """A stand-in with the Journeys tables (purposes Commercial and Transactional, topic Newsletter), a contact with
    an address and a lead; no consent record yet."""
    standin = make_standin(recipients={}, presets=("journeys",))
    standin.add_row("contact", CONTACT, donotbulkemail=False, emailaddress1=PAT)
    standin.add_row("lead", LEAD, donotbulkemail=False, emailaddress1="lee@example.com")
    return standin


def services_for(standin, purposes=COMMERCIAL_PURPOSE_ID, **env):
    settings = Settings.from_env(standin_env(standin, CONSENT_PURPOSE_IDS=purposes, **env))
    return Services(settings, sender=InMemoryQueues())


def work(n, table=None, row_id=None, *, delivery_count=1, **kwargs):
    item = WorkItem(
        route=Route.OPT_OUT,
        log_id=f"5c1e8a72-4f10-f011-998a-{n:012d}",
        recipient=Recipient(table or "contact", row_id or CONTACT),
        activity_type="Spam Report",
        **kwargs,
    )
    return InboundMessage(body=item.to_json(), message_id=item.message_id, delivery_count=delivery_count)


def record_id(n):
    return f"00000000-0000-4000-8000-{n:012d}"


def seed_record(standin, n, *, address=PAT, channel=EMAIL, status=OPTED_IN, purpose=COMMERCIAL_PURPOSE_ID):
    standin.add_row(
        CONSENT,
        record_id(n),
        msdynmkt_contactpointvalue=address,
        msdynmkt_contactpointtype=channel,
        msdynmkt_contactpointconsenttype=534120000,
        msdynmkt_value=status,
        msdynmkt_source=534120001,
        msdynmkt_logicalreason=534120000,
        _msdynmkt_purposeid_value=purpose,
    )


def records(standin):
    return standin.rows(CONSENT)


def consent_writes(standin):
    return [w for w in standin.writes if w[0] == CONSENT]


def recipient_writes(standin, table="contact", row_id=CONTACT):
    return [w for w in standin.writes if w[:2] == (table, row_id)]


def sent(standin):
    """Every operation the stand-in was sent, in order: a request on its own, or each part of a ``$batch``."""
    parts = standin.operations
    return [op for r in standin.requests for op in ([p for p in parts if p.batch == r.batch] if r.batch else [r])]


def test_an_opt_out_creates_an_opted_out_record_for_the_purpose_in_three_requests(journeys):
    [handled] = opt_out.opt_out_batch([work(1)], services_for(journeys))
    assert handled.outcome is Outcome.APPLIED
    assert handled.reason == "wrote donotbulkemail and 1 consent record (1 created; 0 updated) for 1 address(es)"
    assert journeys.row("contact", CONTACT)["donotbulkemail"] is True
    [created] = records(journeys).values()
    assert {
        k: v for k, v in created.items() if k.startswith(("msdynmkt_", "_msdynmkt_purposeid_value")) and "@" not in k
    } == {
        "msdynmkt_contactpointvalue": PAT,
        "msdynmkt_contactpointtype": EMAIL,
        "msdynmkt_contactpointconsenttype": 534120000,
        "msdynmkt_value": OPTED_OUT,
        "msdynmkt_source": 534120000,
        "msdynmkt_logicalreason": 534119999,
        "msdynmkt_reason": "Opted out by optout from Concep campaign log 5c1e8a72-4f10-f011-998a-000000000001",
        "msdynmkt_contactpointconsent4id": created["msdynmkt_contactpointconsent4id"],
        "_msdynmkt_purposeid_value": COMMERCIAL_PURPOSE_ID,
    }
    # The write answers with the address (one request for both), then one list and one create: each a lone
    # operation, sent as itself (no $batch of one).
    assert handled.dataverse_requests == 3 == len(journeys.requests) and journeys.operations == []
    [patch, listing, post] = journeys.requests
    assert patch.method == "PATCH" and "$select=emailaddress1" in patch.path
    assert listing.method == "GET" and listing.path.startswith(f"/api/data/v9.2/{CONSENT_SET}?")
    assert post.method == "POST" and json.loads(post.body)["msdynmkt_purposeId@odata.bind"] == (
        f"/msdynmkt_purposes({COMMERCIAL_PURPOSE_ID})"
    )
    assert journeys.client_bugs == []


def test_an_existing_opted_in_record_is_updated_and_other_purposes_and_channels_are_left_alone(journeys):
    seed_record(journeys, 1)  # Commercial, opted in
    seed_record(journeys, 2, purpose=TRANSACTIONAL_PURPOSE_ID)
    seed_record(journeys, 3, channel=TEXT)
    seed_record(journeys, 4, address="someone.else@example.com")
    before = records(journeys)
    [handled] = opt_out.opt_out_batch([work(1)], services_for(journeys))
    assert handled.reason == "wrote donotbulkemail and 1 consent record (0 created; 1 updated) for 1 address(es)"
    after = records(journeys)
    assert set(after) == set(before)  # nothing created
    assert after[record_id(1)]["msdynmkt_value"] == OPTED_OUT
    assert after[record_id(1)]["msdynmkt_source"] == 534120000
    assert after[record_id(1)]["msdynmkt_contactpointvalue"] == PAT  # channel, address, purpose kept
    for untouched in (2, 3, 4):
        assert after[record_id(untouched)] == before[record_id(untouched)]
    assert [w[1] for w in consent_writes(journeys)] == [record_id(1)]


def test_an_already_opted_out_record_is_left_alone(journeys):
    seed_record(journeys, 1, status=OPTED_OUT)
    before = records(journeys)
    [handled] = opt_out.opt_out_batch([work(1)], services_for(journeys))
    assert handled.reason == (
        "wrote donotbulkemail and 0 consent records (0 created; 0 updated; 1 already opted out, left alone) "
        "for 1 address(es)"
    )
    assert records(journeys) == before and consent_writes(journeys) == []
    assert handled.dataverse_requests == 2  # the write with its answer, and the list: nothing else to send


def test_two_addresses_and_two_purposes_make_four_records(journeys):
    journeys.add_row("contact", CONTACT, donotbulkemail=False, emailaddress1=PAT, emailaddress2="pat.home@example.com")
    services = services_for(
        journeys,
        purposes=f"{COMMERCIAL_PURPOSE_ID};{TRANSACTIONAL_PURPOSE_ID}",
        RECIPIENT_EMAIL_COLUMNS="emailaddress1;emailaddress2;emailaddress3",
    )
    [handled] = opt_out.opt_out_batch([work(1)], services)
    assert handled.reason == "wrote donotbulkemail and 4 consent records (4 created; 0 updated) for 2 address(es)"
    made = {(r["msdynmkt_contactpointvalue"], r["_msdynmkt_purposeid_value"]) for r in records(journeys).values()}
    assert made == {
        (a, p) for a in (PAT, "pat.home@example.com") for p in (COMMERCIAL_PURPOSE_ID, TRANSACTIONAL_PURPOSE_ID)
    }
    assert handled.dataverse_requests == 3  # both addresses listed in one $batch, all four created in one


def test_a_topic_is_recorded_as_topic_consent(journeys):
    services = services_for(journeys, purposes="", CONSENT_TOPIC_IDS=NEWSLETTER_TOPIC_ID)
    [handled] = opt_out.opt_out_batch([work(1)], services)
    assert handled.outcome is Outcome.APPLIED
    [created] = records(journeys).values()
    assert created["msdynmkt_contactpointconsenttype"] == 534120001
    assert created["_msdynmkt_topicid_value"] == NEWSLETTER_TOPIC_ID and created["msdynmkt_value"] == OPTED_OUT


def test_an_empty_address_gets_no_record_and_the_outcome_says_so(journeys):
    journeys.add_row("contact", CONTACT, donotbulkemail=False, emailaddress1=None)
    [handled] = opt_out.opt_out_batch([work(1)], services_for(journeys))
    assert handled.outcome is Outcome.APPLIED
    assert handled.reason == "wrote donotbulkemail; no consent record: emailaddress1 empty"
    assert records(journeys) == {} and journeys.row("contact", CONTACT)["donotbulkemail"] is True
    assert handled.dataverse_requests == 1  # nothing to list


def test_a_deleted_recipient_gets_no_record(journeys):
    journeys.delete_row("contact", CONTACT)
    [handled] = opt_out.opt_out_batch([work(1)], services_for(journeys))
    assert handled.outcome is Outcome.RECIPIENT_MISSING
    assert handled.reason.endswith("not re-created; no consent record written")
    assert records(journeys) == {} and journeys.row("contact", CONTACT) is None


def test_duplicates_in_one_batch_make_one_record_per_address_and_purpose(journeys):
    journeys.add_row("lead", LEAD, donotbulkemail=False, emailaddress1=PAT.upper())  # the contact's address
    msgs = [work(1), work(1), work(2), work(3, "lead", LEAD)]
    handled = opt_out.opt_out_batch(msgs, services_for(journeys))
    assert [str(h.outcome) for h in handled] == ["applied", "ignored", "applied", "applied"]
    [created] = records(journeys).values()
    assert created["msdynmkt_contactpointvalue"] == PAT
    assert len(recipient_writes(journeys)) == 1 and len(recipient_writes(journeys, "lead", LEAD)) == 1
    assert sum(h.dataverse_requests for h in handled) == 3
    assert [o.method for o in sent(journeys)].count("GET") == 1  # one address: listed once


def test_a_consent_write_refused_for_good_is_rejected_and_says_donotbulkemail_was_written(journeys):
    journeys.set_privileges(journeys.privileges - {f"prvCreate{CONSENT}"})
    services = services_for(journeys)
    [handled] = opt_out.opt_out_batch([work(1)], services)
    assert handled.outcome is Outcome.REJECTED
    assert handled.reason.startswith("wrote donotbulkemail, but the consent write failed: Dataverse answered 403")
    assert journeys.row("contact", CONTACT)["donotbulkemail"] is True and records(journeys) == {}
    [kept] = services.sender.messages("rejected")
    assert kept.application_properties["rejected_reason"] == handled.reason
    # Fixed and redriven: the recipient is read back (no second write), the record is created.
    journeys.set_privileges(None)
    redriven = InboundMessage(body=kept.body, message_id=f"{kept.message_id}:redrive1", delivery_count=2)
    [again] = opt_out.opt_out_batch([redriven], services)
    assert again.outcome is Outcome.APPLIED and len(records(journeys)) == 1
    assert len(recipient_writes(journeys)) == 1


def test_no_email_address_reaches_a_log_line_outcome_or_rejected_reason(journeys, caplog):
    refusal = f"A plug-in refused the value {PAT} for this purpose."
    journeys.inject(Fault(status=400, code="0x80040265", message=refusal, method="POST"))
    services = services_for(journeys)
    with caplog.at_level(logging.DEBUG):
        [handled] = opt_out.opt_out_batch([work(1)], services)
    assert handled.outcome is Outcome.REJECTED and "<email address>" in handled.reason
    [kept] = services.sender.messages("rejected")
    texts = [handled.reason, handled.line(), kept.application_properties["rejected_reason"], caplog.text]
    assert all("@" not in text for text in texts[:3])
    assert PAT not in caplog.text and "example.com" not in caplog.text
    assert "outcome " in caplog.text  # the outcome line was logged, masked


def test_a_transient_failure_between_the_two_writes_duplicates_neither(journeys):
    services = services_for(journeys)
    # Both tries of the listing fail: the recipient is written, the consent write is not yet.
    journeys.inject(Fault(status=503, method="GET", path_contains=CONSENT_SET), times=2)
    [first] = opt_out.opt_out_batch([work(1)], services)
    assert first.outcome is Outcome.RESCHEDULED and "503" in first.reason
    assert journeys.row("contact", CONTACT)["donotbulkemail"] is True and records(journeys) == {}
    [later] = services.sender.messages("opt-out")
    [second] = opt_out.opt_out_batch([InboundMessage(body=later.body, message_id=later.message_id)], services)
    assert second.outcome is Outcome.APPLIED
    assert len(recipient_writes(journeys)) == 1  # read back, not written again
    assert len(records(journeys)) == 1
    # The put-back copy: read-back, read of the address, list, create.
    assert second.dataverse_requests == 4


def test_a_create_whose_answer_was_lost_is_looked_for_before_creating_again(journeys):
    services = services_for(journeys)
    # The create commits, then its answer is a 502: it may have happened, so it is not sent again blind.
    journeys.inject(Fault(status=502, after=True, method="POST", path_contains=CONSENT_SET))
    [first] = opt_out.opt_out_batch([work(1)], services)
    assert first.outcome is Outcome.RESCHEDULED and len(records(journeys)) == 1
    [later] = services.sender.messages("opt-out")
    [second] = opt_out.opt_out_batch([InboundMessage(body=later.body, message_id=later.message_id)], services)
    assert second.outcome is Outcome.APPLIED and "1 already opted out, left alone" in second.reason
    assert len(records(journeys)) == 1 and len(consent_writes(journeys)) == 1


def test_with_consent_off_an_opt_out_is_what_it_was(journeys):
    services = Services(Settings.from_env(standin_env(journeys)), sender=InMemoryQueues())
    [handled] = opt_out.opt_out_batch([work(1)], services)
    assert handled.outcome is Outcome.APPLIED and handled.reason is None
    assert handled.dataverse_requests == 1 and records(journeys) == {}
    assert "$select" not in journeys.requests[0].path


def test_requests_per_opt_out(journeys, capsys):
    """The figures of docs/consent.md: requests per opt-out with consent on, one at a time and in a burst."""
    steady = opt_out.opt_out_batch([work(1)], services_for(journeys))[0].dataverse_requests
    ids = [f"c0000000-0000-4000-8000-{n:012d}" for n in range(1000)]
    for n, row_id in enumerate(ids):
        journeys.add_row("contact", row_id, donotbulkemail=False, emailaddress1=f"person{n}@example.com")
    handled = opt_out.opt_out_batch(
        [work(10 + n, "contact", row_id) for n, row_id in enumerate(ids)], services_for(journeys)
    )
    burst = sum(h.dataverse_requests for h in handled)
    assert {str(h.outcome) for h in handled} == {"applied"} and len(records(journeys)) == 1001
    assert (steady, burst) == (3, 3)
    print(json.dumps({"requests_per_opt_out_steady": steady, "requests_per_1000_opt_outs_burst": burst}))


def test_the_demo_shows_one_opt_out_writing_both():
    import io

    from optout_dev.demo import run_consent_demo, sample_files

    out = io.StringIO()
    [result], state = run_consent_demo(sample_files()[:1], out=out)
    assert result.outcome == "applied" and result.reason.startswith("wrote donotbulkemail and 1 consent record")
    [written] = state["consent"].values()
    assert written["msdynmkt_value"] == OPTED_OUT and "Opted Out" in out.getvalue()
    assert "@" not in out.getvalue()  # record ids, never addresses


class ListThenWait:
    """A worker's Dataverse client that, once it has listed consent records, waits until the other worker has listed
    too: both find nothing, then both create (the race two workers can run into, made certain)."""

    def __init__(self, client, barrier):
        self._client, self._barrier = client, barrier

    def query_many(self, *args, **kwargs):
        listed = self._client.query_many(*args, **kwargs)
        self._barrier.wait(timeout=60)
        return listed

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_two_concurrent_opt_outs_of_one_address_make_one_record_the_second_create_becoming_an_update(journeys):
    other = "c73f5a77-34b2-ef11-be20-6045bd0f2c33"
    journeys.add_row("contact", other, donotbulkemail=False, emailaddress1=PAT.upper())
    barrier = threading.Barrier(2)
    settings = services_for(journeys).settings
    workers = [
        Services(settings, sender=InMemoryQueues(), dataverse=ListThenWait(build_dataverse_client(settings), barrier))
        for _ in range(2)
    ]
    handled = {}

    def run(n, recipient):
        [handled[n]] = opt_out.opt_out_batch([work(n, "contact", recipient)], workers[n - 1])

    threads = [threading.Thread(target=run, args=(1, CONTACT)), threading.Thread(target=run, args=(2, other))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert {n: h.outcome for n, h in handled.items()} == {1: Outcome.APPLIED, 2: Outcome.APPLIED}
    [record] = records(journeys).values()
    assert record["msdynmkt_contactpointconsent4id"] == derived_id(
        PAT, Scope(ConsentType.PURPOSE, COMMERCIAL_PURPOSE_ID)
    )
    assert record["msdynmkt_value"] == OPTED_OUT
    # One create went through; the other met the taken id and updated that record instead.
    assert sorted(h.reason for h in handled.values()) == [
        "wrote donotbulkemail and 1 consent record (0 created; 1 updated) for 1 address(es)",
        "wrote donotbulkemail and 1 consent record (1 created; 0 updated) for 1 address(es)",
    ]
    assert journeys.client_bugs == []
