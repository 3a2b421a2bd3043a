"""The compliance audit over HTTP against the Dataverse stand-in: the window's opt-out logs paged with a ``$filter``,
their recipients read in bulk, drift found exactly and, with ``--fix``, repaired once through BulkEmailOptOut's
write; a throttled page or a failing read changes nothing in the result; no address or name reaches the output."""

from __future__ import annotations

import csv
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest

from optout_core.app.audit import run_audit
from optout_core.app.services import build_dataverse_client
from optout_core.domain.audit import Report, Window
from optout_core.domain.settings import Settings
from optout_dev.standin import SAMPLES_ACTIVITY_OPTIONS, DataverseStandIn, Fault
from tests.support.cli import cli
from tests.support.dataverse import standin_env

LOG_TABLE = "concep_emailcampaignlog"
LOGS = "/api/data/v9.2/concep_emailcampaignlogs"
SINCE, UNTIL = "2025-11-01", "2025-12-01"
WINDOW = Window(datetime(2025, 11, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC))
CODES = {label: code for code, label in SAMPLES_ACTIVITY_OPTIONS.items()}
# The default type lists (labels only): the audit reads the column's options to filter by code.
ENV = {"RECIPIENT_COLUMNS": "concep_contactid;concep_leadid;concep_recipientid"}
ADDRESS, NAME = "@audit.example", "Zebedee Quux"


def _id(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"audit/{kind}/{n}"))


def _contacts(server: DataverseStandIn, count: int, *, opted_out: set[int] = frozenset()) -> list[str]:  # type: ignore[assignment]
    ids = []
    for n in range(count):
        row_id = _id("contact", n)
        server.add_row(
            "contact",
            row_id,
            donotbulkemail=n in opted_out,
            emailaddress1=f"person{n}{ADDRESS}",
            fullname=f"{NAME} {n}",
        )
        ids.append(row_id)
    return ids


def _log(server: DataverseStandIn, n: int, created: str, kind: str = "Spam Report", **recipient: Any) -> str:
    """A campaign log as Dataverse holds it (the choice's label comes with it as its formatted value)."""
    log_id = _id("log", n)
    server.add_row(
        LOG_TABLE,
        log_id,
        concep_name=f"log {n}",
        concep_activitytype=CODES[kind],
        **{"concep_activitytype@OData.Community.Display.V1.FormattedValue": kind},
        createdon=created,
        **recipient,
    )
    return log_id


def _audit(server: DataverseStandIn, *, fix: bool = False, page_size: int = 5000, **env: str) -> Report:
    settings = Settings.from_env(standin_env(server, **ENV, **env))
    client = build_dataverse_client(settings)
    try:
        return run_audit(settings, client, WINDOW, fix=fix, page_size=page_size)
    finally:
        client.close()


def _pages(server: DataverseStandIn) -> list[str]:
    return [r.path for r in server.requests if r.method == "GET" and r.path.startswith(LOGS)]


@pytest.fixture
def server(make_standin: Any) -> DataverseStandIn:
    standin: DataverseStandIn = make_standin(campaign_log=True, recipients={})
    return standin


def test_a_window_of_many_pages_is_read_page_by_page_with_its_filter_and_recipients_in_bulk(server) -> None:
    contacts = _contacts(server, 25, opted_out=set(range(0, 25, 2)))
    logs = [
        _log(server, n, f"2025-11-{1 + n % 28:02d}T08:00:00Z", concep_contactid=contacts[n % 25]) for n in range(40)
    ]

    report = _audit(server, page_size=7)

    assert (report.opt_outs, report.recipients) == (40, 25)
    assert report.honoured == 13
    wanting = {f.recipient.id: sorted(f.log_ids) for f in report.not_honoured}
    assert wanting == {contacts[c]: sorted(logs[n] for n in range(40) if n % 25 == c) for c in range(25) if c % 2}
    pages = _pages(server)
    assert len(pages) == 6  # 40 logs, 7 a page
    first = unquote(pages[0])
    assert "$filter=createdon ge 2025-11-01T00:00:00Z and createdon lt 2025-12-01T00:00:00Z and (" in first
    assert "concep_activitytype eq 100000003 or concep_activitytype eq 100000004" in first
    assert all("$skiptoken=" in page for page in pages[1:])
    gets = [r for r in server.requests if r.method == "GET" and r.path.startswith(LOGS)]
    assert all(r.headers.get("Prefer", "").startswith("odata.maxpagesize=7") for r in gets)
    assert all('odata.include-annotations="*"' in r.headers.get("Prefer", "") for r in gets)  # the types' labels
    # Each page's new recipients in one In query naming their ids: never one request per recipient, and their
    # values alone (the honoured test compares values; formatted ones are not asked for).
    contact_reads = [r for r in server.requests if r.path.startswith("/api/data/v9.2/contacts?")]
    assert contact_reads and not [r for r in contact_reads if "annotations" in r.headers.get("Prefer", "")]
    reads = [unquote(r.path) for r in contact_reads]
    assert len(reads) <= len(pages)
    calls = [re.search(r"In\(PropertyName='contactid',PropertyValues=\[([^\]]*)\]\)", read) for read in reads]
    named = [row_id for call in calls if call for row_id in re.findall(r"'([0-9a-f-]{36})'", call.group(1))]
    assert sorted(named) == sorted(contacts)  # each recipient asked for once
    assert not [r for r in server.requests if r.path.endswith("$batch")]
    assert report.requests == len(server.requests)  # every Web API request counted (the metadata read too)
    assert not server.writes and report.dry_run


def test_logs_outside_the_window_and_of_other_types_are_not_counted(server) -> None:
    [contact] = _contacts(server, 1)
    inside = _log(server, 1, "2025-11-01T00:00:00Z", concep_contactid=contact)  # since is inclusive
    _log(server, 2, "2025-10-31T23:59:59Z", concep_contactid=contact)
    _log(server, 3, "2025-12-01T00:00:00Z", concep_contactid=contact)  # until is exclusive
    for n, kind in enumerate(("Open", "Hard Bounce", "User Opt Out", "Sent"), start=4):
        _log(server, n, "2025-11-15T12:00:00Z", kind, concep_contactid=contact)
    last = _log(server, 9, "2025-11-30T23:59:59Z", "Client Opt Out", concep_contactid=contact)

    report = _audit(server)

    assert report.opt_outs == 2
    assert [sorted(f.log_ids) for f in report.not_honoured] == [sorted([inside, last])]


def test_an_opt_out_logged_while_bulk_email_opt_out_was_switched_off_is_still_audited(server) -> None:
    [contact] = _contacts(server, 1)
    _log(server, 1, "2025-11-05T00:00:00Z", concep_contactid=contact)

    report = _audit(server, **{"AzureWebJobs.BulkEmailOptOut.Disabled": "true"})

    assert [f.recipient.id for f in report.not_honoured] == [contact]


def test_deleted_recipients_are_recipient_missing_and_logs_without_one_unresolved(server) -> None:
    contacts = _contacts(server, 2, opted_out={0})
    gone = _id("contact", 99)
    missing_log = _log(server, 1, "2025-11-02T00:00:00Z", concep_contactid=gone)
    _log(server, 2, "2025-11-02T00:00:00Z", concep_contactid=contacts[0])
    nobody = _log(server, 3, "2025-11-02T00:00:00Z")

    report = _audit(server)

    assert [(f.recipient.id, f.log_ids) for f in report.recipient_missing] == [(gone, (missing_log,))]
    assert [(u.log_id, u.reason) for u in report.unresolved] == [
        (nobody, "no recipient: none of RECIPIENT_COLUMNS (concep_contactid;concep_leadid;concep_recipientid) "
         "references a contact, lead or account")
    ]  # fmt: skip
    assert report.honoured == 1 and not report.not_honoured
    assert not report.clean  # a log the audit cannot resolve proves nothing


def test_fix_writes_exactly_the_drift_once_each_update_only_and_a_second_run_is_clean(server) -> None:
    contacts = _contacts(server, 6, opted_out={0, 1, 2})
    server.add_row("lead", _id("lead", 0), donotbulkemail=False)
    for n in range(12):
        _log(server, n, "2025-11-10T10:00:00Z", concep_contactid=contacts[n % 6])
    _log(server, 12, "2025-11-11T10:00:00Z", "Group Opt out", concep_leadid=_id("lead", 0))

    fixed = _audit(server, fix=True, page_size=5)

    drift = {("contact", contacts[n]) for n in (3, 4, 5)} | {("lead", _id("lead", 0))}
    assert {(f.recipient.table, f.recipient.id) for f in fixed.not_honoured} == drift
    assert fixed.fixed == 4 and not fixed.failed and fixed.clean and not fixed.dry_run
    assert sorted((table, row_id) for table, row_id, _ in server.writes) == sorted(drift)  # once each
    assert all(changes == {"donotbulkemail": True} for _, _, changes in server.writes)
    patches = [op for op in server.operations if op.method == "PATCH"]
    assert patches and all(op.headers.get("If-Match") == "*" for op in patches)  # update-only
    assert not server.client_bugs

    again = _audit(server, fix=True)
    assert again.clean and not again.not_honoured and again.fixed == 0 and again.honoured == 7
    assert len(server.writes) == 4


def test_a_429_on_a_page_and_a_503_on_a_recipient_read_change_nothing_in_the_result(server) -> None:
    contacts = _contacts(server, 9, opted_out={1, 4, 7})
    for n in range(20):
        _log(server, n, f"2025-11-{1 + n:02d}T00:00:00Z", concep_contactid=contacts[n % 9])
    calm = _audit(server, page_size=6).as_json()
    server.inject(
        Fault(429, retry_after=1, method="GET", path_contains="skiptoken"),
        Fault(503, method="GET", path_contains="/contacts?"),
    )

    stormy = _audit(server, page_size=6).as_json()

    assert server.pending_faults == 0  # both faults were met
    assert {k: v for k, v in stormy.items() if k != "requests"} == {k: v for k, v in calm.items() if k != "requests"}
    asked = _pages(server)[4:]  # the second run's pages: the throttled link is asked again exactly as given
    throttled = [r.path for r in server.requests if r.status == 429]
    assert len(throttled) == 1 and asked.count(throttled[0]) == 2


def test_recipients_whose_read_is_refused_are_failed_not_honoured_and_the_rest_are_judged(server) -> None:
    contacts = _contacts(server, 4, opted_out={0, 1, 2, 3})
    leads = [_id("lead", n) for n in range(2)]
    for n, lead in enumerate(leads):
        server.add_row("lead", lead, donotbulkemail=True, emailaddress1=f"lead{n}{ADDRESS}")
    for n in range(4):
        _log(server, n, "2025-11-02T00:00:00Z", concep_contactid=contacts[n])
    for n, lead in enumerate(leads, start=4):
        _log(server, n, "2025-11-02T00:00:00Z", concep_leadid=lead)
    server.inject(Fault(400, code="0x0", message="refused", method="GET", path_contains="/contacts?"))

    report = _audit(server)

    assert sorted(f.recipient.id for f in report.failed) == sorted(contacts)
    assert all("could not be read" in f.reason for f in report.failed)
    assert report.honoured == 2 and not report.clean  # the leads' query was answered
    assert _audit(server).clean


def test_fix_also_records_the_consent_when_the_consent_write_is_on(make_standin) -> None:
    from optout_dev.standin.presets import COMMERCIAL_PURPOSE_ID

    server: DataverseStandIn = make_standin(campaign_log=True, recipients={}, presets=("journeys",))
    contacts = _contacts(server, 2, opted_out={0})
    for n in range(2):
        _log(server, n, "2025-11-10T10:00:00Z", concep_contactid=contacts[n])

    report = _audit(server, fix=True, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID)

    assert report.fixed == 1 and report.clean
    consents = server.rows("msdynmkt_contactpointconsent4")
    assert [r["msdynmkt_contactpointvalue"] for r in consents.values()] == [f"person1{ADDRESS}"]
    assert [r["msdynmkt_value"] for r in consents.values()] == [534120002]  # Opted Out


# -- the command ---------------------------------------------------------------------------------


def _cli(server: DataverseStandIn, *args: str) -> Any:
    return cli("-v", "audit", "--since", SINCE, "--until", UNTIL, *args, env=standin_env(server, **ENV))


def test_the_command_reports_drift_with_exit_1_repairs_it_with_exit_0_and_never_prints_an_address(
    server, tmp_path
) -> None:
    contacts = _contacts(server, 3, opted_out={0})
    logs = [_log(server, n, "2025-11-20T09:00:00Z", concep_contactid=contacts[n]) for n in range(3)]
    evidence = tmp_path / "evidence.csv"

    found = _cli(server, "--json", "--csv", str(evidence))
    human = _cli(server)
    fixed = _cli(server, "--fix", "--json")
    clean = _cli(server, "--csv", str(tmp_path / "after.csv"))

    assert (found.returncode, human.returncode, fixed.returncode, clean.returncode) == (1, 1, 0, 0)
    report = json.loads(found.stdout)
    assert set(report) == {
        "since", "until", "opt_outs", "recipients", "honoured", "not_honoured", "recipient_missing", "unresolved",
        "fixed", "failed", "requests", "dry_run",
    }  # fmt: skip
    assert (report["since"], report["until"], report["opt_outs"], report["honoured"]) == (
        "2025-11-01T00:00:00Z",
        "2025-12-01T00:00:00Z",
        3,
        1,
    )
    assert (
        report["not_honoured"] == [{"table": "contact", "id": contacts[n], "log_ids": [logs[n]]} for n in (1, 2)]
        and report["dry_run"]
    )
    assert f"{contacts[1]}      1  not honoured\n" in human.stdout and "NOT every opt-out is honoured" in human.stdout
    assert json.loads(fixed.stdout)["fixed"] == 2
    assert '"outcome": "applied"' in fixed.stderr and fixed.stderr.count('"function": "OptOutAudit"') == 2
    with evidence.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["log_id"], r["recipient_id"], r["status"]) for r in rows) == sorted(
        [
            (logs[0], contacts[0], "honoured"),
            (logs[1], contacts[1], "not_honoured"),
            (logs[2], contacts[2], "not_honoured"),
        ]
    )
    assert {r["status"] for r in csv.DictReader((tmp_path / "after.csv").open(newline=""))} == {"honoured"}
    everything = "".join(r.stdout + r.stderr for r in (found, human, fixed, clean)) + evidence.read_text()
    assert ADDRESS not in everything and NAME not in everything


@pytest.mark.parametrize("args", [("--since", "November"), ("--since", "2025-12-01", "--until", "2025-11-01")])
def test_a_bad_window_is_exit_2(server, args) -> None:
    result = cli("audit", *args, env=standin_env(server, **ENV))
    assert result.returncode == 2 and "audit:" in result.stderr
