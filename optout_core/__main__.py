"""Command line: ``python -m optout_core explain [--json] [--content-type TYPE] FILE...``.

``explain`` treats each file as one Service Bus message body and prints the router's decision under
the current app settings (environment variables). Nothing is sent and no network is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .errors import SettingsError
from .routing import Decision, decide
from .settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optout_core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="show the router's decision for message bodies (dry run)")
    explain.add_argument("--json", action="store_true", help="one JSON object per line")
    explain.add_argument("--content-type", default="application/json",
                         help="the Service Bus ContentType to assume (default application/json)")
    explain.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return _explain(args.files, settings, args.content_type, as_json=args.json)


def _explain(files: Sequence[str], settings: Settings, content_type: str, *, as_json: bool) -> int:
    bodies = []
    for path in files:
        try:
            with open(path, "rb") as handle:
                bodies.append((path, handle.read()))
        except OSError as exc:
            print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
            return 2
    for path, body in bodies:
        decision = decide(body, settings, content_type=content_type)
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


def _line(source: str, decision: Decision) -> str:
    target = f" → {decision.route} {decision.recipient}" if decision.work_item else ""
    reason = f": {decision.reason}" if decision.reason else ""
    return f"{source}: {decision.outcome}{target}{reason}"


if __name__ == "__main__":
    sys.exit(main())
