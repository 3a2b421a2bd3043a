"""The compliance audit: are the opt-outs a window's campaign logs record honoured on their recipients, and, when
asked, the repair of those that are not.

One call, :func:`run_audit` (settings, client, window, fix), returns the :class:`~optout_core.domain.audit.Report`;
the CLI and the scheduled function OptOutAudit (:func:`run_scheduled`: the last ``AUDIT_LOOKBACK_DAYS``, repairing
when ``AUDIT_FIX``, one ``audit`` line and the counts as metrics) share it. It streams: the campaign logs are
paged (``$filter`` of the window and
the opt-out types, ``$select`` of the columns the router reads, ``Prefer: odata.maxpagesize``, ``@odata.nextLink``
as given), and each page's new recipients are read by id with ``In`` queries (as many ids a request as a URL
holds) and, with ``fix``,
written through BulkEmailOptOut's own path (:func:`~optout_core.app.opt_out.write_opt_outs`) before the next page
is asked for. Only recipients and the logs of recipients found wanting are kept. Each request follows the one
failure policy in the transport: a 429 on a page is waited out and the same link asked again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from optout_core.app import telemetry
from optout_core.app.opt_out import write_opt_outs
from optout_core.app.outcome import OutcomeRecord, log_outcome
from optout_core.app.services import Dataverse, Services
from optout_core.dataverse.errors import DataverseError
from optout_core.dataverse.webapi import query_path
from optout_core.domain.audit import (
    MAX_URL,
    Failure,
    LogReader,
    OptOutLog,
    Report,
    Status,
    UnresolvedLog,
    Window,
    any_id,
    choice_options,
    evidence_row,
    findings,
    honoured,
    id_groups,
    iso,
    log_filter,
    log_select,
    opt_out_codes,
    update_select,
)
from optout_core.domain.model import AUDIT as AUDIT_TIMER
from optout_core.domain.model import ENTITY_SETS, Outcome, Recipient
from optout_core.domain.redact import redact
from optout_core.domain.settings import Settings
from optout_core.domain.settings_spec import SPEC

AUDIT = AUDIT_TIMER.name  # the name its outcome lines carry
PAGE_SIZE = 5000  # the Web API's largest page (page-results: larger preferences are ignored)


class AuditClient(Dataverse, Protocol):
    """What the audit asks of Dataverse: the functions' reads and writes, and the Web API's paging and metadata
    (:class:`optout_core.dataverse.webapi.WebApi`, which :class:`optout_core.dataverse.client.DataverseClient`
    extends)."""

    url: str  # the environment's URL, which each request's path follows

    def pages(
        self,
        entity_set: str,
        *,
        select: Sequence[str],
        where: str | None,
        page_size: int = 5000,
        annotations: bool = True,
    ) -> Iterator[tuple[list[dict[str, Any]], int]]: ...

    def get(self, path: str, *, missing_ok: bool = False) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Progress:
    pages: int
    logs: int  # campaign logs read so far (opt-outs or not)
    opt_outs: int
    recipients: int


Evidence = Callable[[tuple[str, ...]], None]  # receives each CSV line (domain.audit.CSV_HEADER's columns)


def run_audit(
    settings: Settings,
    client: AuditClient,
    window: Window,
    *,
    fix: bool = False,
    evidence: Evidence | None = None,
    progress: Callable[[Progress], None] | None = None,
    page_size: int = PAGE_SIZE,
) -> Report:
    """Audit ``window``; with ``fix``, write each recipient found not honoured, once. Raises a
    :class:`~optout_core.dataverse.errors.DataverseError` when the campaign logs themselves cannot be read."""
    run = _Run(settings, client, fix, evidence)
    codes, run.requests = _opt_out_codes(settings, client)
    reader = LogReader(settings)
    pages = logs = 0
    if codes is None or codes:  # a choice column without any opt-out option holds no opt-out
        pages_ = client.pages(
            settings.campaign_log_entity_set,
            select=(*log_select(settings), reader.primary_key) if log_select(settings) else (),
            where=log_filter(settings, window, codes),
            page_size=page_size,
        )
        for rows, requests in prefetched(pages_):
            run.requests += requests
            pages, logs = pages + 1, logs + len(rows)
            run.page(reader.read_all(rows))
            if progress is not None:
                progress(Progress(pages, logs, run.opt_outs, len(run.status)))
    return run.report(window)


def prefetched[T](pages: Iterator[T]) -> Iterator[T]:
    """``pages`` as given, with the next one asked for while the caller works on the current one: the log pages
    and the recipients' reads then overlap instead of taking turns. One page waits at most (memory stays bounded);
    an error on the way is raised here, in order; leaving the loop early stops the reader thread."""
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def read() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        ready.put(("page", page), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            ready.put(("error", exc))

    reader = threading.Thread(target=read, name="audit-pages", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        reader.join()


class _Run:
    """The state of one audit: each recipient's status, and the logs of the recipients found wanting."""

    def __init__(self, settings: Settings, client: AuditClient, fix: bool, evidence: Evidence | None) -> None:
        self.settings, self.client, self.fix, self.evidence = settings, client, fix, evidence
        self.status: dict[Recipient, Status] = {}
        self.found_wanting: list[Recipient] = []  # not honoured when read, in the order found
        self.missing: list[Recipient] = []
        self.log_ids: dict[Recipient, list[str]] = {}  # only for recipients not honoured or missing
        self.failed: dict[Recipient, str] = {}
        self.unresolved: list[UnresolvedLog] = []
        self.opt_outs = self.honoured = self.fixed = self.requests = 0

    def page(self, found: Sequence[OptOutLog | UnresolvedLog]) -> None:
        self.opt_outs += len(found)
        new = list(
            dict.fromkeys(f.recipient for f in found if isinstance(f, OptOutLog) and f.recipient not in self.status)
        )
        self._read(new)
        if self.fix:
            self._repair([r for r in new if self.status[r] is Status.NOT_HONOURED], found)
        # Once per log of the window: one dictionary look-up each, two more with evidence.
        log_ids, evidence = self.log_ids, self.evidence
        for log in found:
            if isinstance(log, UnresolvedLog):
                self.unresolved.append(log)
                if evidence is not None:
                    evidence(evidence_row(log, Status.UNRESOLVED))
                continue
            ids = log_ids.get(log.recipient)
            if ids is not None:
                ids.append(log.log_id)
            if evidence is not None:
                evidence(evidence_row(log, self.status[log.recipient]))

    def _read(self, recipients: Sequence[Recipient]) -> None:
        """Each new recipient's OPT_OUT_UPDATE columns: per table, ``$filter`` queries naming as many ids as a URL
        holds (a page's recipients in a few requests; a recipient not answered no longer exists)."""
        by_table: dict[str, list[Recipient]] = {}
        for recipient in recipients:
            by_table.setdefault(recipient.table, []).append(recipient)
        for table, members in by_table.items():
            entity_set, key = ENTITY_SETS[table], f"{table}id"
            select = (*update_select(self.settings), key) if update_select(self.settings) else ()
            room = MAX_URL - len(f"{self.client.url}{query_path(entity_set, select, None)}&$filter=")
            by_id = {r.id: r for r in members}
            for group in id_groups(key, list(by_id), room):
                try:
                    rows: dict[str, dict[str, Any]] = {}
                    # The values alone: the honoured test compares them, and formatted values cost the service.
                    found = self.client.pages(entity_set, select=select, where=any_id(key, group), annotations=False)
                    for page, requests in found:
                        self.requests += requests
                        rows.update((str(row.get(key, "")).lower(), row) for row in page)
                except DataverseError as exc:
                    for row_id in group:
                        self._judge(by_id[row_id], exc)
                    continue
                for row_id in group:
                    self._judge(by_id[row_id], rows.get(row_id))

    def _judge(self, recipient: Recipient, row: dict[str, Any] | DataverseError | None) -> None:
        if isinstance(row, DataverseError):
            self.status[recipient] = Status.FAILED
            self.failed[recipient] = redact(f"could not be read: {row}")
        elif row is None:
            self.status[recipient] = Status.MISSING
            self.missing.append(recipient)
            self.log_ids[recipient] = []
        elif honoured(row, self.settings):
            self.status[recipient] = Status.HONOURED
            self.honoured += 1
        else:
            self.status[recipient] = Status.NOT_HONOURED
            self.found_wanting.append(recipient)
            self.log_ids[recipient] = []

    def _repair(self, recipients: Sequence[Recipient], found: Sequence[OptOutLog | UnresolvedLog]) -> None:
        """BulkEmailOptOut's write for each recipient found not honoured, with one outcome line each."""
        if not recipients:
            return
        started = time.perf_counter()
        first_log: dict[Recipient, str] = {}
        for log in found:
            if isinstance(log, OptOutLog):
                first_log.setdefault(log.recipient, log.log_id)
        written, requests = write_opt_outs(recipients, first_log, self.settings, self.client)
        self.requests += requests
        wrote = ", ".join(self.settings.opt_out_update)
        for recipient, outcome in zip(recipients, written, strict=True):
            record = OutcomeRecord(
                AUDIT,
                Outcome.APPLIED,
                log_id=first_log[recipient],
                recipient=str(recipient),
                dataverse_requests=requests,
            )
            requests = 0  # reported once, on the first line
            failed = outcome.failure(wrote)
            if failed is not None:
                self.status[recipient] = Status.FAILED
                self.failed[recipient] = redact(str(failed))
                log_outcome(record.but(outcome=Outcome.FAILED, reason=self.failed[recipient]), started)
            elif not outcome.found:
                self.status[recipient] = Status.MISSING
                self.missing.append(recipient)
                log_outcome(record.but(outcome=Outcome.RECIPIENT_MISSING, reason="deleted since it was read"), started)
            else:
                self.status[recipient] = Status.FIXED
                self.fixed += 1
                tally = outcome.consent
                reason = tally.describe(wrote) if tally is not None and not isinstance(tally, DataverseError) else None
                log_outcome(record.but(reason=reason or f"wrote {wrote}: found not honoured by the audit"), started)

    def report(self, window: Window) -> Report:
        return Report(
            window=window,
            opt_outs=self.opt_outs,
            recipients=len(self.status),
            honoured=self.honoured,
            not_honoured=findings(self.log_ids, self.found_wanting),
            recipient_missing=findings(self.log_ids, self.missing),
            unresolved=tuple(self.unresolved),
            fixed=self.fixed,
            failed=tuple(Failure(r, reason) for r, reason in self.failed.items()),
            requests=self.requests,
            dry_run=not self.fix,
            left=sum(1 for s in self.status.values() if s is Status.NOT_HONOURED),
        )


def _opt_out_codes(settings: Settings, client: AuditClient) -> tuple[frozenset[int] | None, int]:
    """The activity type codes to filter on, and the requests it took. Labels need the column's options (one
    metadata request); a column that is no choice (text, lookup) cannot be filtered by code: None."""
    types = settings.opt_out_types
    if not types.labels:
        return types.codes, 0
    table, column = settings.campaign_log_table, settings.activity_type_column
    answer = client.get(
        f"EntityDefinitions(LogicalName='{table}')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
        "?$select=LogicalName&$expand=OptionSet($select=Options),GlobalOptionSet($select=Options)",
        missing_ok=True,
    )
    for item in (answer or {}).get("value", ()):
        if isinstance(item, dict) and item.get("LogicalName") == column:
            return opt_out_codes(choice_options(item), settings), 1
    return None, 1


def run_scheduled(services: Services, now: datetime | None = None) -> Report | None:
    """OptOutAudit's run: audit the ``AUDIT_LOOKBACK_DAYS`` before ``now``, repairing when ``AUDIT_FIX``; log one
    ``audit`` line and emit its counts as metrics. None (and a line saying so) when the function is switched off:
    the host honours its toggle, and a missing toggle reads as off here too. A failure to read the campaign logs
    is logged on the line and raised, so the host records the run as failed."""
    settings = services.settings
    if not settings.is_enabled(AUDIT_TIMER):
        logging.getLogger("optout").info("%s is switched off (AzureWebJobs.%s.Disabled)", AUDIT, AUDIT)
        return None
    started = time.perf_counter()
    until = (now or datetime.now(UTC)).astimezone(UTC)
    window = Window(until - timedelta(days=_setting(settings, "AUDIT_LOOKBACK_DAYS")), until)
    fix = bool(_setting(settings, "AUDIT_FIX"))
    try:
        report = run_audit(settings, cast(AuditClient, services.dataverse), window, fix=fix)
    except DataverseError as exc:
        fields = {"since": iso(window.since), "until": iso(window.until), "dry_run": not fix}
        telemetry.audit_run(logging.ERROR, {**fields, "error": redact(str(exc))}, started)
        raise
    telemetry.audit_run(logging.INFO if report.clean else logging.WARNING, audit_fields(report), started)
    return report


def audit_fields(report: Report) -> dict[str, Any]:
    """The counts of a run, as its ``audit`` line and its metrics carry them (ids stay in the report)."""
    return {
        "since": iso(report.window.since),
        "until": iso(report.window.until),
        "opt_outs": report.opt_outs,
        "recipients": report.recipients,
        "honoured": report.honoured,
        "not_honoured": len(report.not_honoured),
        "recipient_missing": len(report.recipient_missing),
        "unresolved": len(report.unresolved),
        "fixed": report.fixed,
        "failed": len(report.failed),
        "left": report.left,
        "requests": report.requests,
        "dry_run": report.dry_run,
        "clean": report.clean,
    }


def _setting(settings: Settings, name: str) -> Any:
    """A setting without a Settings field, parsed by its own parser (from_env has validated it already)."""
    setting = next(s for s in SPEC if s.name == name)
    return setting.parse(name, settings.raw.get(name, setting.default))
