"""``python -m optout_core setup [--dry-run] [--json] [--deactivate-workflows] [--remove]``: register the Dataverse
side idempotently — the Service Bus endpoint and the step on Create of the campaign log table — as an
administrator (``az login`` locally: ``DefaultAzureCredential``), never as the app's least-privilege user."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from optout_core.cli.registration import Change, EndpointKey, apply, plan_remove, plan_setup, read_registration
from optout_core.cli.schema import SchemaReader, needed_names, shortfalls
from optout_core.dataverse.errors import Undetermined
from optout_core.dataverse.webapi import WebApi
from optout_core.domain.errors import SettingsError
from optout_core.domain.settings import Settings

# What the administrator's identity needs, per table (System Administrator and System Customizer hold them).
_SETUP_PRIVILEGES = (
    ("serviceendpoint", ("Create", "Read", "Write")),
    ("sdkmessageprocessingstep", ("Create", "Read", "Write")),
    ("sdkmessage", ("Read",)),
    ("sdkmessagefilter", ("Read",)),
)
_REMOVE_PRIVILEGES = (("serviceendpoint", ("Read", "Delete")), ("sdkmessageprocessingstep", ("Read", "Delete")))
_WORKFLOW_PRIVILEGES = (("workflow", ("Read", "Write")),)


def setup(
    client: WebApi,
    settings: Settings,
    out: TextIO,
    *,
    dry_run: bool = False,
    as_json: bool = False,
    deactivate_workflows: bool = False,
    remove: bool = False,
) -> int:
    try:
        key = None if remove else EndpointKey.parse(settings.endpoint_connection_string, settings.campaign_log_queue)
        needs: list[tuple[str, tuple[str, ...]]] = list(_REMOVE_PRIVILEGES if remove else _SETUP_PRIVILEGES)
        if deactivate_workflows and not remove:
            needs += _WORKFLOW_PRIVILEGES
        missing = _missing(client, needs)
        if missing:
            raise SettingsError(
                f"this identity lacks {', '.join(missing)}: run setup as a Dataverse administrator (System "
                "Administrator or System Customizer role), e.g. after `az login` as one"
            )
        found = read_registration(client, settings)
        if remove:
            plan = plan_remove(settings, found)
        else:
            assert key is not None
            plan = plan_setup(settings, key, found, deactivate_workflows=deactivate_workflows)
    except SettingsError as exc:
        print(json.dumps({"error": str(exc)}) if as_json else f"setup refused: {exc}", file=out)
        return 1
    done: Sequence[Change] = plan
    failure: str | None = None
    if not dry_run:
        done, error = apply(client, plan)
        if isinstance(error, Undetermined):
            failure = f"{error} — run setup again: it finds what exists by name and completes the rest"
        elif error is not None:
            failure = f"Dataverse refused a change: {error}"
    if as_json:
        result: dict[str, object] = {"changes": [c.as_json() for c in done], "dry_run": dry_run}
        if failure:
            result["error"] = failure
        print(json.dumps(result), file=out)
    else:
        _print(done, dry_run, failure, out)
    return 1 if failure else 0


def _missing(client: WebApi, needs: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """The privileges ``setup`` needs and lacks, by name. Any depth will do: it changes the records it creates
    (and workflows an administrator's role reaches)."""
    reader = SchemaReader(client)
    tables = [(reader.privileges_only(name), kinds) for name, kinds in needs]  # one read per table
    wanted = [(table, kind, "Basic") for table, kinds in tables for kind in kinds]
    held = reader.privilege_depths(str(client.whoami().get("UserId", "")), needed_names(wanted))
    return [short.name for short in shortfalls(held, wanted)]


def _print(changes: Sequence[Change], dry_run: bool, failure: str | None, out: TextIO) -> None:
    if all(c.action == "none" for c in changes) and not failure:
        print("Nothing to change: the endpoint and step are registered as the settings say.", file=out)
    verb = {"create": "would create", "update": "would update", "delete": "would delete"} if dry_run else {}
    for c in changes:
        action = verb.get(
            c.action, {"create": "created", "update": "updated", "delete": "deleted"}.get(c.action, "unchanged")
        )
        fields = f" ({', '.join(sorted(c.values))})" if c.action == "update" and c.values else ""
        print(f"  {action:<13} {c.record:<16} {c.name}{f' [{c.id}]' if c.id else ''}{fields}", file=out)
    if failure:
        print(f"setup stopped: {failure}", file=out)
