"""Command line for administrators and developers. Settings come from environment variables.

explain [--json] [--content-type TYPE] FILE...   the router's decision per message body (dry run, no network)
run [--json] FILE...                             the whole pipeline in process, against DATAVERSE_URL
demo                                             every sample against a local Dataverse stand-in
check [--connect]                                validate the settings; with --connect, sign in and call WhoAmI
redrive --from rejected|deadletter:Q [--to Q] [--max N] [--dry-run]   send kept messages back for reprocessing
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from optout_core.domain.errors import SettingsError
from optout_core.domain.routing import Decision, RowRequest, decide, explain_row_request
from optout_core.domain.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optout_core", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="print each outcome's structured log line")
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="show the router's decision for message bodies (dry run)")
    explain.add_argument("--json", action="store_true", help="one JSON object per line")
    explain.add_argument(
        "--content-type",
        default="application/json",
        help="the Service Bus ContentType to assume (default application/json)",
    )
    explain.add_argument("files", nargs="+", metavar="FILE")
    run = commands.add_parser("run", help="run message bodies through router → opt-out/bounce in process")
    run.add_argument("--json", action="store_true", help="one JSON object per line")
    run.add_argument("--content-type", default="application/json", help=argparse.SUPPRESS)
    run.add_argument("files", nargs="+", metavar="FILE")
    commands.add_parser("demo", help="run samples/ against a local Dataverse stand-in and show the result")
    check = commands.add_parser("check", help="validate the settings and show their effective values")
    check.add_argument("--connect", action="store_true", help="also sign in to Dataverse and call WhoAmI")
    redrive = commands.add_parser("redrive", help="move rejected or dead-lettered messages back for reprocessing")
    from optout_core.cli.redrive import add_arguments as add_redrive_arguments

    add_redrive_arguments(redrive)
    args = parser.parse_args(argv)
    # Outcome lines are for operators' log pipelines; on a terminal the commands print their own summary.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s", stream=sys.stderr)

    if args.command == "demo":
        from optout_dev.demo import run_demo

        run_demo()
        return 0
    if args.command == "check":
        return _check(connect_too=args.connect)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "redrive":
        from optout_core.cli.redrive import redrive as run_redrive

        return run_redrive(args, settings, os.environ, out=sys.stdout, err=sys.stderr)
    bodies = _read(args.files)
    if bodies is None:
        return 2
    if args.command == "run":
        return _run(bodies, settings, args.content_type, as_json=args.json)
    return _explain(bodies, settings, args.content_type, as_json=args.json)


def _read(files: Sequence[str]) -> list[tuple[str, bytes]] | None:
    bodies = []
    for path in files:
        try:
            with open(path, "rb") as handle:
                bodies.append((path, handle.read()))
        except OSError as exc:
            print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
            return None
    return bodies


def _explain(bodies: Sequence[tuple[str, bytes]], settings: Settings, content_type: str, *, as_json: bool) -> int:
    for path, body in bodies:
        decision = decide(body, settings, content_type=content_type)
        if isinstance(decision, RowRequest):
            decision = explain_row_request(decision)
        print(json.dumps(explanation(path, decision), ensure_ascii=False) if as_json else _line(path, decision))
    return 0


def explanation(source: str, decision: Decision) -> dict[str, object]:
    """The ``explain --json`` contract: one object per message."""
    return {
        "source": source,
        "outcome": str(decision.outcome),
        "route": str(decision.route) if decision.route and decision.work_item else None,
        "reason": decision.reason,
        "log_id": decision.log_id,
        "activity_type": decision.activity_type.name if decision.activity_type else None,
        "recipient": decision.recipient.as_dict() if decision.recipient else None,
    }


def _run(bodies: Sequence[tuple[str, bytes]], settings: Settings, content_type: str, *, as_json: bool) -> int:
    from optout_dev.local import FAILED, LocalPipeline

    local = LocalPipeline(settings)
    failed = False
    for path, body in bodies:
        try:
            result = local.run(path, body, content_type=content_type)
        except SettingsError as exc:  # e.g. DATAVERSE_URL missing when a message needs the Web API
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        failed |= result.outcome == FAILED
        if as_json:
            print(json.dumps(result.as_dict(), ensure_ascii=False))
        else:
            target = f" {result.route} {result.recipient['table']}/{result.recipient['id']}" if result.recipient else ""
            reason = f": {result.reason}" if result.reason else ""
            print(f"{path}: {result.outcome}{target} ({result.dataverse_requests} Web API requests){reason}")
    return 1 if failed else 0


def _check(*, connect_too: bool) -> int:
    from optout_core.cli.check import check_settings, connect

    settings = check_settings(os.environ, sys.stdout)
    if settings is None:
        return 1
    if connect_too:
        diagnosis = connect(settings)
        print(f"{'OK' if diagnosis.ok else 'FAILED':<8} {diagnosis.message}")
        return 0 if diagnosis.ok else 1
    return 0


def _line(source: str, decision: Decision) -> str:
    target = f" → {decision.route} {decision.recipient}" if decision.work_item else ""
    reason = f": {decision.reason}" if decision.reason else ""
    return f"{source}: {decision.outcome}{target}{reason}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
