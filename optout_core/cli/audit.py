"""``audit``: prove that every opt-out a window's campaign logs record is honoured, and with ``--fix`` repair what
is not (:mod:`optout_core.app.audit` does the work; this module reads the arguments and prints the report).

Exit 0 when every opt-out of the window is honoured at the end of the run, 1 when any is not (or a repair
failed, or a log names no recipient to check), 2 for a bad argument or setting.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from optout_core.domain.audit import CSV_HEADER, Report, Window, iso, parse_when
from optout_core.domain.errors import SettingsError
from optout_core.domain.model import Recipient
from optout_core.domain.redact import redact
from optout_core.domain.settings import Settings

if TYPE_CHECKING:
    from optout_core.app.audit import Progress

_SHOWN = 50  # table rows printed; --json and --csv carry every one


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", required=True, metavar="WHEN", help="ISO 8601 date or date-time (UTC if no offset)")
    parser.add_argument("--until", metavar="WHEN", help="end of the window, exclusive (default: now)")
    parser.add_argument("--fix", action="store_true", help="write OPT_OUT_UPDATE onto each recipient not honoured")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--csv", metavar="FILE", help="write the evidence, one line per opt-out log (ids only)")


def audit(args: argparse.Namespace, settings: Settings, *, out: TextIO, err: TextIO) -> int:
    from optout_core.app.audit import run_audit
    from optout_core.app.services import build_dataverse_client
    from optout_core.dataverse.errors import DataverseError

    try:
        since = parse_when(args.since)
        until = parse_when(args.until) if args.until else datetime.now(UTC)
        window = Window(since, until)
    except ValueError as exc:
        print(f"audit: {exc}", file=err)
        return 2
    try:
        client = build_dataverse_client(settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=err)
        return 2
    progress = _ProgressLine(err) if err.isatty() else None
    try:
        with contextlib.ExitStack() as files:
            evidence = None
            if args.csv:
                writer = csv.writer(files.enter_context(open(args.csv, "w", newline="", encoding="utf-8")))
                writer.writerow(CSV_HEADER)
                evidence = writer.writerow
            report = run_audit(
                settings,
                client,
                window,
                fix=args.fix,
                evidence=evidence,
                progress=progress.show if progress is not None else None,
            )
    except OSError as exc:
        print(f"audit: cannot write {args.csv}: {exc.strerror}", file=err)
        return 2
    except DataverseError as exc:
        print(f"Dataverse: {redact(str(exc))}", file=err)
        return 1
    finally:
        if progress is not None:
            progress.done()
        client.close()
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False), file=out)
    else:
        _print(report, out)
    return 0 if report.clean else 1


class _ProgressLine:
    """One line on a terminal's stderr, redrawn per page: a bar that fills as pages arrive, and the counts."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._shown = False

    def show(self, progress: Progress) -> None:
        pages, logs, opt_outs, recipients = progress.pages, progress.logs, progress.opt_outs, progress.recipients
        bar = "█" * (pages % 21) + "·" * (20 - pages % 21)  # how many pages are left is not known in advance
        self._err.write(
            f"\r[{bar}] page {pages}: {logs:,} logs read, {opt_outs:,} opt-outs, {recipients:,} recipients "
        )
        self._err.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self._err.write("\n")
            self._err.flush()


def _print(report: Report, out: TextIO) -> None:
    mode = "repair" if not report.dry_run else "dry run: nothing written"
    print(f"Opt-out audit {iso(report.window.since)} .. {iso(report.window.until)} ({mode})", file=out)
    counts = (
        ("opt-out logs", report.opt_outs),
        ("recipients", report.recipients),
        ("honoured", report.honoured),
        ("not honoured when read", len(report.not_honoured)),
        ("fixed", report.fixed),
        ("recipient missing", len(report.recipient_missing)),
        ("unresolved logs", len(report.unresolved)),
        ("failed", len(report.failed)),
        ("Web API requests", report.requests),
    )
    for name, count in counts:
        print(f"  {name:<24}{count:>10,}", file=out)
    rows = [
        *((f.recipient.table, f.recipient.id, _wanting(f.recipient, report), len(f.log_ids))
          for f in report.not_honoured),
        *((f.recipient.table, f.recipient.id, "recipient missing", len(f.log_ids)) for f in report.recipient_missing),
        *((f.recipient.table, f.recipient.id, f"failed: {f.reason}", "") for f in report.failed),
        *(("log", u.log_id, f"unresolved: {u.reason}", 1) for u in report.unresolved),
    ]  # fmt: skip
    if rows:
        print(f"\n  {'table':<8} {'id':<36}  {'logs':>5}  finding", file=out)
        for table, row_id, finding, logs in rows[:_SHOWN]:
            print(f"  {table:<8} {row_id:<36}  {logs!s:>5}  {redact(finding, 200)}", file=out)
        if len(rows) > _SHOWN:
            print(f"  … {len(rows) - _SHOWN} more (--json or --csv list every one)", file=out)
    if report.clean:
        print("\nevery opt-out of the window is honoured", file=out)
        return
    why = [
        f"{report.left} recipient(s) not honoured (--fix writes them)" if report.left else "",
        f"{len(report.failed)} failed" if report.failed else "",
        f"{len(report.unresolved)} log(s) name no recipient the router can resolve" if report.unresolved else "",
    ]
    print(f"\nNOT every opt-out is honoured: {'; '.join(w for w in why if w)}", file=out)


def _wanting(recipient: Recipient, report: Report) -> str:
    """A recipient found not honoured: still so (dry run), or what its repair did."""
    if report.dry_run:
        return "not honoured"
    if any(f.recipient == recipient for f in report.failed):
        return "not honoured; repair failed"
    if any(f.recipient == recipient for f in report.recipient_missing):
        return "not honoured; deleted before its repair"
    return "not honoured; fixed"
