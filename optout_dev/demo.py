"""``python -m optout_dev demo``: every sample message through the whole pipeline, against a local Dataverse.

Starts the loopback Dataverse stand-in seeded with a few contacts, leads and accounts (one contact
deliberately deleted), runs :class:`~optout_dev.local.LocalPipeline` over ``samples/`` with a demo
configuration, prints what happened to each message and the final state of the rows, then stops. A second,
short section runs the first sample again with Customer Insights - Journeys consent on: one opt-out, two writes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from optout_core.app.services import build_dataverse_client
from optout_core.dataverse.client import DataverseClient
from optout_core.domain.consent import EMAIL, OPTED_OUT
from optout_core.domain.settings import Settings
from optout_dev.local import LocalPipeline, RunResult
from optout_dev.messages import ACCOUNTS, CONTACTS, DELETED_CONTACT, LEADS, ORG_ID
from optout_dev.standin import DEFAULT_TABLES, DataverseStandIn
from optout_dev.standin.presets import COMMERCIAL_PURPOSE_ID

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ORGANIZATION_ID = ORG_ID
TOKEN = "demo-token"  # the stand-in's own token: it is loopback-only and holds no real data

# The rows the samples refer to (optout_dev.messages). DELETED is the deleted contact: a log pointing at it ends
# recipient_missing.
SEED: tuple[tuple[str, str], ...] = tuple(
    (table, row_id) for table, ids in (("contact", CONTACTS), ("lead", LEADS), ("account", ACCOUNTS)) for row_id in ids
)
DELETED = ("contact", DELETED_CONTACT)

# A customer would create bounce columns of their own (Dataverse has no standard one); the demo writes
# the standard description column so the result is visible.
DEMO_SETTINGS = {
    "EXPECTED_ORGANIZATION_ID": ORGANIZATION_ID,
    # For the demo's setup: a made-up Send-only connection string (the stand-in never connects to it).
    "DATAVERSE_ENDPOINT_CONNECTION_STRING": "Endpoint=sb://optout-demo.servicebus.windows.net/;"
    "SharedAccessKeyName=dataverse-send;SharedAccessKey=ZGVtby1rZXk=;EntityPath=campaign-log",
    "CONCEP_WORKFLOWS": "Concep Opt Out (child);Concep Bounce Detail",
    "BOUNCE_UPDATE": '{"description": "{activity_type} on {occurred_on}: {detail}"}',
    "DATAVERSE_MAX_ATTEMPTS": "3",
    "DATAVERSE_BACKOFF_SECONDS": "0.05",
}


def sample_files(folder: Path = SAMPLES) -> list[Path]:
    """Message bodies in ``samples/``: numbered files, in order (README/expected.json are not messages)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name[:1].isdigit())


def run_demo(
    files: Sequence[Path] | None = None, *, out: TextIO = sys.stdout
) -> tuple[list[RunResult], dict[str, Any]]:
    """Run the demo; print the report to ``out``; return the results and the final rows by table."""
    files = sample_files() if files is None else list(files)
    with DataverseStandIn(token=TOKEN, tables=DEFAULT_TABLES, presets=("samples", "registration")) as standin:
        for table, row_id in (*SEED, DELETED):
            standin.add_row(table, row_id, donotbulkemail=False)
        standin.delete_row(*DELETED)
        standin.organization_id = ORGANIZATION_ID  # the samples' organisation, as EXPECTED_ORGANIZATION_ID says
        settings = Settings.from_env({**DEMO_SETTINGS, "DATAVERSE_URL": standin.url, "DATAVERSE_TOKEN": TOKEN})
        client = build_dataverse_client(settings)
        try:
            set_up_dataverse(client, settings, out)
            before = len(standin.requests)
            print("\n== The samples through the pipeline ==", file=out)
            local = LocalPipeline(settings, dataverse=client)
            results = [local.run(f"{path.parent.name}/{path.name}", path.read_bytes()) for path in files]
        finally:
            client.close()
        rows = {table: standin.rows(table) for table in ("contact", "lead", "account")}
        requests = len(standin.requests) - before
    _report(results, rows, requests, out)
    run_consent_demo(files[:1], out=out)
    return results, {"rows": rows, "requests": requests}


def set_up_dataverse(client: DataverseClient, settings: Settings, out: TextIO) -> None:
    """The administrator's three commands, as an adopter runs them: discover, setup, check --connect."""
    from optout_core.cli.check import connect_findings, print_findings
    from optout_core.cli.discover import discover
    from optout_core.cli.schema import SchemaReader
    from optout_core.cli.setup import setup

    print("== discover: the campaign log table and its options, read from Dataverse's metadata ==", file=out)
    discover(SchemaReader(client), out)
    print("\n== setup --deactivate-workflows: the Service Bus endpoint and the step, registered ==", file=out)
    setup(client, settings, out, deactivate_workflows=True)
    print("\n== check --connect: the configuration proved against the environment ==", file=out)
    findings, options = connect_findings(settings)
    print_findings(findings, options, settings.activity_type_column, out)


def run_consent_demo(files: Sequence[Path], *, out: TextIO = sys.stdout) -> tuple[list[RunResult], dict[str, Any]]:
    """The same opt-out with Customer Insights - Journeys consent on (CONSENT_PURPOSE_IDS): one event writes
    ``donotbulkemail`` and an opted-out contact point consent record (docs/consent.md). Returns the results and
    the consent records written."""
    with DataverseStandIn(token=TOKEN, tables=DEFAULT_TABLES, presets=("journeys",)) as standin:
        for n, (table, row_id) in enumerate(SEED):
            standin.add_row(table, row_id, donotbulkemail=False, emailaddress1=f"recipient{n}@example.com")
        env = {**DEMO_SETTINGS, "DATAVERSE_URL": standin.url, "DATAVERSE_TOKEN": TOKEN}
        settings = Settings.from_env({**env, "CONSENT_PURPOSE_IDS": COMMERCIAL_PURPOSE_ID})
        client = build_dataverse_client(settings)
        local = LocalPipeline(settings, dataverse=client)
        try:
            results = [local.run(f"{path.parent.name}/{path.name}", path.read_bytes()) for path in files]
        finally:
            client.close()
        consent = standin.rows("msdynmkt_contactpointconsent4")
        requests = len(standin.requests)
    print("\nWith Customer Insights - Journeys consent on (CONSENT_PURPOSE_IDS = the Commercial purpose):", file=out)
    _print_table(
        [("message", "outcome", "reason")] + [(r.source.split("/")[-1], r.outcome, r.reason or "") for r in results],
        out,
    )
    print("\nContact point consent records afterwards (addresses not shown):", file=out)
    state = [("id", "channel", "consent status", "purpose", "reason description")]
    for row_id, row in sorted(consent.items()):
        state.append(
            (
                row_id,
                "Email" if row.get("msdynmkt_contactpointtype") == EMAIL else str(row.get("msdynmkt_contactpointtype")),
                "Opted Out" if row.get("msdynmkt_value") == OPTED_OUT else str(row.get("msdynmkt_value")),
                "Commercial" if row.get("_msdynmkt_purposeid_value") == COMMERCIAL_PURPOSE_ID else "other",
                _short(str(row.get("msdynmkt_reason") or ""), 60),
            )
        )
    _print_table(state, out)
    print(f"\nWeb API requests: {requests}", file=out)
    return results, {"consent": consent, "requests": requests}


def _report(
    results: Sequence[RunResult], rows: dict[str, dict[str, dict[str, Any]]], requests: int, out: TextIO
) -> None:
    table = [("message", "decision", "outcome", "reason")]
    for r in results:
        decision = f"→ {r.route}" if r.route and r.outcome not in ("ignored", "rejected") else "-"
        table.append((r.source.split("/")[-1], decision, r.outcome, r.reason or ""))
    _print_table(table, out)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    print(f"\n{len(results)} messages: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=out)

    print("\nDataverse rows afterwards (Bulk Email = Do Not Allow means donotbulkemail is true):", file=out)
    state = [("table", "id", "Bulk Email", "description (BOUNCE_UPDATE)")]
    for name in ("contact", "lead", "account"):
        for row_id, row in sorted(rows[name].items()):
            bulk = "Do Not Allow" if row.get("donotbulkemail") else "Allow"
            state.append((name, row_id, bulk, _short(row.get("description") or "")))
    state.append((DELETED[0], DELETED[1], "(deleted: never re-created)", ""))
    _print_table(state, out)
    print(f"\nWeb API requests: {requests}", file=out)


def _print_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * width for width in widths), file=out)


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
