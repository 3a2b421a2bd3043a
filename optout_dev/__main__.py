"""``python -m optout_dev``: the developer's commands, outside the product package.

run [--json] FILE...   the whole pipeline in process for each message body, against DATAVERSE_URL
demo                   every sample against a local Dataverse stand-in
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from optout_core.cli.main import read_bodies, shown
from optout_core.domain.errors import SettingsError
from optout_core.domain.model import FUNCTIONS, Outcome
from optout_core.domain.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    pipeline = "router → " + "/".join(f.work for f in FUNCTIONS if f.route is not None)
    parser = argparse.ArgumentParser(prog="python -m optout_dev", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="print each outcome's structured log line")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help=f"run message bodies through {pipeline} in process")
    run.add_argument("--json", action="store_true", help="one JSON object per line")
    run.add_argument("--content-type", default="application/json", help=argparse.SUPPRESS)
    run.add_argument("files", nargs="+", metavar="FILE")
    commands.add_parser("demo", help="run samples/ against a local Dataverse stand-in and show the result")
    args = parser.parse_args(argv)
    # Outcome lines are for operators' log pipelines; on a terminal the commands print their own summary.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s", stream=sys.stderr)
    if args.command == "demo":
        from optout_dev.demo import run_demo

        run_demo()
        return 0
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    bodies = read_bodies(args.files)
    if bodies is None:
        return 2
    return run_bodies(bodies, settings, args.content_type, as_json=args.json)


def run_bodies(bodies: Sequence[tuple[str, bytes]], settings: Settings, content_type: str, *, as_json: bool) -> int:
    """Each body through the local pipeline; 1 when any event was not applied (put back, or failed)."""
    from optout_dev.local import FAILED, LocalPipeline

    # Each event ends with the outcome its function reaches (a put-back ends it as rescheduled): the command
    # never waits out a retry window in real time.
    local = LocalPipeline(settings, follow_put_backs=False)
    failed = False
    for path, body in bodies:
        try:
            result = local.run(path, body, content_type=content_type)
        except SettingsError as exc:  # e.g. DATAVERSE_URL missing when a message needs the Web API
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        failed |= result.outcome in (FAILED, Outcome.RESCHEDULED)
        if as_json:
            print(json.dumps({**result.as_dict(), "reason": shown(result.reason)}, ensure_ascii=False))
        else:
            target = f" {result.route} {result.recipient['table']}/{result.recipient['id']}" if result.recipient else ""
            reason = f": {shown(result.reason)}" if result.reason else ""
            print(f"{path}: {result.outcome}{target} ({result.dataverse_requests} Web API requests){reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
