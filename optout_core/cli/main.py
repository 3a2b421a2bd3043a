"""Command line for administrators and developers. Settings come from environment variables.

explain [--json] [--content-type TYPE] FILE...   the router's decision per message body (dry run, no network)
check [--connect] [--json]                       validate the settings; with --connect, prove them against Dataverse
discover [--table NAME] [--json]                 read Dataverse's metadata and propose the campaign log settings
setup [--dry-run] [--json] [--deactivate-workflows] [--remove]   register the endpoint and step in Dataverse
redrive --from rejected|deadletter:Q [--to Q] [--max N] [--dry-run]   send kept messages back for reprocessing
audit --since WHEN [--until WHEN] [--fix] [--json] [--csv FILE]   prove every opt-out of a window is honoured

The developer's ``run`` and ``demo`` live in ``python -m optout_dev``, outside the deployed package.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from optout_core.domain.errors import SettingsError
from optout_core.domain.redact import redact
from optout_core.domain.routing import Decision, RowRequest, decide, explain_row_request
from optout_core.domain.settings import Settings


def parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per administrator's task."""
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
    check = commands.add_parser("check", help="validate the settings and show their effective values")
    check.add_argument(
        "--connect", action="store_true", help="also prove them against Dataverse: schema, privileges, registration"
    )
    check.add_argument("--json", action="store_true", help="with --connect: one JSON object")
    discover = commands.add_parser("discover", help="read Dataverse's metadata and propose the settings")
    discover.add_argument("--table", help="the campaign log table's logical name, when not the best candidate")
    discover.add_argument("--json", action="store_true", help="one JSON object")
    setup = commands.add_parser("setup", help="register the service endpoint and step in Dataverse (administrator)")
    setup.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    setup.add_argument("--json", action="store_true", help="one JSON object")
    setup.add_argument(
        "--deactivate-workflows", action="store_true", help="also deactivate the workflows CONCEP_WORKFLOWS names"
    )
    setup.add_argument("--remove", action="store_true", help="delete the endpoint and step setup made")
    redrive = commands.add_parser("redrive", help="move rejected or dead-lettered messages back for reprocessing")
    from optout_core.cli.redrive import add_arguments as add_redrive_arguments

    add_redrive_arguments(redrive)
    audit = commands.add_parser("audit", help="prove every opt-out of a window is honoured; --fix repairs the rest")
    from optout_core.cli.audit import add_arguments as add_audit_arguments

    add_audit_arguments(audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Outcome lines are for operators' log pipelines; on a terminal the commands print their own summary.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s", stream=sys.stderr)

    if args.command == "check":
        return _check(connect_too=args.connect, as_json=args.json)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("discover", "setup"):
        return _admin(args, settings)
    if args.command == "redrive":
        from optout_core.cli.redrive import redrive as run_redrive

        return run_redrive(args, settings, os.environ, out=sys.stdout, err=sys.stderr)
    if args.command == "audit":
        from optout_core.cli.audit import audit as run_audit

        return run_audit(args, settings, out=sys.stdout, err=sys.stderr)
    bodies = read_bodies(args.files)
    if bodies is None:
        return 2
    return _explain(bodies, settings, args.content_type, as_json=args.json)


def read_bodies(files: Sequence[str]) -> list[tuple[str, bytes]] | None:
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
        "reason": shown(decision.reason),
        "log_id": decision.log_id,
        "activity_type": shown(decision.activity_type.name if decision.activity_type else None),
        "recipient": decision.recipient.as_dict() if decision.recipient else None,
    }


def _check(*, connect_too: bool, as_json: bool) -> int:
    from optout_core.cli.check import check_settings, connect_findings, print_findings

    if as_json and connect_too:
        try:
            settings = Settings.from_env(os.environ)
        except SettingsError as exc:
            refused = {"severity": "error", "code": "settings", "message": str(exc), "fix": "correct the setting"}
            print(json.dumps({"ok": False, "findings": [refused], "options": []}))
            return 1
    else:
        checked = check_settings(os.environ, sys.stdout)
        if checked is None:
            return 1
        settings = checked
    if not connect_too:
        return 0
    findings, options = connect_findings(settings)
    failed = any(f.severity == "error" for f in findings)
    if as_json:
        result = {"ok": not failed, "findings": [f.as_json() for f in findings], "options": options}
        print(json.dumps(result, ensure_ascii=False))
        return 1 if failed else 0
    print_findings(findings, options, settings.activity_type_column, sys.stdout)
    return 1 if failed else 0


def _admin(args: argparse.Namespace, settings: Settings) -> int:
    """discover and setup run as the administrator's own identity (``az login``), not the app's."""
    from optout_core.dataverse.auth import StaticTokenCredential, TokenCredentialLike
    from optout_core.dataverse.errors import DataverseError
    from optout_core.dataverse.webapi import WebApi

    if not settings.dataverse_url:
        print("configuration error: DATAVERSE_URL is not set", file=sys.stderr)
        return 2
    if settings.dataverse_token:  # a loopback stand-in (Settings allows a token nowhere else)
        credential: TokenCredentialLike = StaticTokenCredential(settings.dataverse_token)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    client = WebApi(settings.dataverse_url, credential, timeout=settings.dataverse_timeout)
    try:
        if args.command == "discover":
            from optout_core.cli.discover import discover
            from optout_core.cli.schema import SchemaReader

            return discover(SchemaReader(client), sys.stdout, table=args.table, as_json=args.json)
        from optout_core.cli.setup import setup

        return setup(
            client,
            settings,
            sys.stdout,
            dry_run=args.dry_run,
            as_json=args.json,
            deactivate_workflows=args.deactivate_workflows,
            remove=args.remove,
        )
    except DataverseError as exc:
        print(f"Dataverse: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _line(source: str, decision: Decision) -> str:
    target = f" → {decision.route} {decision.recipient}" if decision.work_item else ""
    reason = f": {shown(decision.reason)}" if decision.reason else ""
    return f"{source}: {decision.outcome}{target}{reason}"


def shown(text: str | None) -> str | None:
    """Text from a message or from Dataverse as the CLI prints it: bounded, addresses masked."""
    return None if text is None else redact(text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
