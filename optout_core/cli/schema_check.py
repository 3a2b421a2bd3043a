"""``check --connect`` beyond WhoAmI: a configuration proved against the environment's real schema, privileges and
registration. :func:`read_facts` reads; every ``*_findings`` function is pure over what was read."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optout_core.cli.discover import looks_like, option_routes, recipient_columns
from optout_core.cli.findings import Finding, error, ok, warning
from optout_core.cli.registration import (
    ASYNCHRONOUS,
    JSON_FORMAT,
    POST_OPERATION,
    QUEUE_CONTRACTS,
    Registration,
    is_concep_workflow,
    read_registration,
    same,
)
from optout_core.cli.schema import (
    CHOICE_KINDS,
    GLOBAL,
    LOOKUP_KINDS,
    RECIPIENT_TABLES,
    Option,
    SchemaReader,
    Table,
    needed_names,
    shortfalls,
)
from optout_core.dataverse.client import DataverseClient
from optout_core.dataverse.errors import DataverseError
from optout_core.domain.odata import guid_literal
from optout_core.domain.routing import row_select
from optout_core.domain.settings import Settings, normalise_label
from optout_core.domain.settings_spec import SPEC

_TYPE_LISTS = ("OPT_OUT_ACTIVITY_TYPES", "BOUNCE_ACTIVITY_TYPES", "USER_OPT_OUT_ACTIVITY_TYPES")
_DEFAULTS = {setting.name: setting.default for setting in SPEC}
_TEXT_KINDS = frozenset({"String", "Memo"})
_SUPPORTED_TYPE_KINDS = frozenset(CHOICE_KINDS) | _TEXT_KINDS | LOOKUP_KINDS


@dataclass(frozen=True)
class Facts:
    log: Table | None
    recipients: Mapping[str, Table | None]
    user_id: str | None  # the application user whose privileges were read; None: AZURE_CLIENT_ID has none
    held: Mapping[str, str] | DataverseError  # privilege name -> deepest depth held, or why unreadable
    registration: Registration | DataverseError  # or why it could not be read (the app's user may not)
    reads: tuple[RowRead, ...] = ()  # the campaign log re-reads the app makes, each tried once


@dataclass(frozen=True)
class RowRead:
    """One re-read of a campaign log row as a function makes it: exactly ``row_select(settings, route)`` (empty:
    every column), tried as a ``$top=1`` query; ``failure`` is how Dataverse refused it (None: it worked)."""

    functions: tuple[str, ...]  # the functions that read with this $select
    select: tuple[str, ...]
    failure: DataverseError | None


def app_user_id(client: DataverseClient, settings: Settings, who: Mapping[str, Any]) -> str | None:
    """The application user whose privileges matter: with AZURE_CLIENT_ID set, the one whose ``applicationid`` it
    is (an administrator may be the one running the check), None when that client id has none; otherwise the
    caller of WhoAmI."""
    application_id = guid_literal(settings.azure_client_id)
    if application_id is None:
        return str(who.get("UserId", ""))
    users = client.query("systemusers", select=["systemuserid"], where=f"applicationid eq {application_id}")
    return str(users[0]["systemuserid"]) if users else None


def no_application_user(settings: Settings, code: str) -> Finding:
    """AZURE_CLIENT_ID names an identity without an application user: the app would be refused every call (403
    0x80072560), whoever runs the check."""
    return error(
        code,
        f"AZURE_CLIENT_ID {settings.azure_client_id} has no application user in this environment: the app's calls "
        "would all be refused (403 0x80072560), so its privileges cannot be proved",
        "create one: Power Platform admin center > Environments > (this environment) > Settings > Users + "
        "permissions > Application users > New app user, with this client id and the optout security role",
    )


def privilege_needs(log: Table | None, recipients: Mapping[str, Table | None]) -> list[tuple[Table | None, str, str]]:
    """Organisation depth for what the app does to rows it does not own: Read and Write on every recipient, Read
    on the campaign log (re-reads, VERIFY_CAMPAIGN_LOG). A Basic privilege covers only the user's own rows
    (PrivilegeDepth), so a Basic Write refuses each opt-out of someone else's contact with 403."""
    needs: list[tuple[Table | None, str, str]] = [
        (recipients[t], kind, GLOBAL) for t in RECIPIENT_TABLES for kind in ("Read", "Write")
    ]
    needs.append((log, "Read", GLOBAL))
    return needs


def read_facts(client: DataverseClient, settings: Settings, who: Mapping[str, Any]) -> Facts:
    reader = SchemaReader(client)
    user_id = app_user_id(client, settings, who)
    log = reader.table(settings.campaign_log_table)
    recipients = {name: reader.table(name) for name in RECIPIENT_TABLES}
    names = needed_names(privilege_needs(log, recipients))
    return Facts(
        log=log,
        recipients=recipients,
        user_id=user_id,
        held=_attempt(lambda: reader.privilege_depths(user_id, names)) if user_id is not None else {},
        registration=_attempt(lambda: read_registration(client, settings)),
        reads=row_reads(client, settings) if log is not None else (),
    )


def row_reads(client: DataverseClient, settings: Settings) -> tuple[RowRead, ...]:
    """Each distinct ``$select`` an enabled function re-reads the campaign log row with, tried once with ``$top=1``:
    a column the environment lacks fails here (400) as it would fail every such read of the app."""
    by_select: dict[tuple[str, ...], list[str]] = {}
    for function in settings.functions:
        if settings.is_enabled(function):
            by_select.setdefault(row_select(settings, function.route), []).append(function.name)
    reads = []
    for select, names in by_select.items():
        failure = None
        if select:  # an empty $select reads every column: no column can be missing
            try:
                client.query(settings.campaign_log_entity_set, select=select, top=1)
            except DataverseError as exc:
                if exc.status not in (400, 403, 404):
                    raise
                failure = exc
        reads.append(RowRead(tuple(names), select, failure))
    return tuple(reads)


def _attempt[T](read: Callable[[], T]) -> T | DataverseError:
    """What ``read`` returns, or the refusal: the app's least-privilege user may not read users, endpoints, steps
    or workflows, and an administrator runs ``check --connect`` to prove those."""
    try:
        return read()
    except DataverseError as exc:
        if exc.status in (403, 404):
            return exc
        raise


def _unreadable(code: str, what: str, exc: DataverseError) -> list[Finding]:
    return [
        warning(
            code,
            f"{what} could not be read as this identity ({exc.status}: {exc.code or 'no code'})",
            "run `check --connect` as a Dataverse administrator (az login) to prove it",
        )
    ]


def findings(settings: Settings, facts: Facts) -> tuple[list[Finding], list[dict[str, object]]]:
    """Every finding, and the activity type's options with the route each gets (empty when unknown)."""
    found = table_findings(settings, facts.log)
    options: list[dict[str, object]] = []
    if facts.log is not None:
        type_findings, type_options = activity_type_findings(settings, facts.log)
        found += type_findings + recipient_findings(settings, facts.log)
        options = option_routes(type_options, settings)
    found += update_findings(settings, facts.recipients, facts.log)
    found += read_findings(settings, facts)
    found += privilege_findings(settings, facts)
    if isinstance(facts.registration, DataverseError):
        return found + _unreadable(
            "registration.unreadable", "the endpoint, step and workflows", facts.registration
        ), options
    found += registration_findings(settings, facts.registration)
    found += workflow_findings(settings, facts.registration)
    return found, options


def table_findings(settings: Settings, log: Table | None) -> list[Finding]:
    table = settings.campaign_log_table
    if log is None:
        return [
            error(
                "campaign_log.table_missing",
                f"table {table} does not exist",
                "run `discover` and set CAMPAIGN_LOG_TABLE",
            )
        ]
    if log.entity_set and log.entity_set != settings.campaign_log_entity_set:
        return [
            error(
                "campaign_log.entity_set",
                f"table {table}'s entity set is {log.entity_set}, not {settings.campaign_log_entity_set}",
                f"set CAMPAIGN_LOG_ENTITY_SET={log.entity_set}",
            )
        ]
    return [ok("campaign_log.table", f"table {table} exists (entity set {log.entity_set})")]


def activity_type_findings(settings: Settings, log: Table) -> tuple[list[Finding], tuple[Option, ...]]:
    name = settings.activity_type_column
    column = log.columns.get(name)
    if column is None:
        fix = "run `discover` and set ACTIVITY_TYPE_COLUMN"
        return [error("activity_type.column_missing", f"{log.name} has no column {name}", fix)], ()
    if column.kind not in _SUPPORTED_TYPE_KINDS:
        fix = "set ACTIVITY_TYPE_COLUMN to a choice, text or lookup column"
        return [error("activity_type.kind", f"{name} is a {column.kind} column, which names no activity type", fix)], ()
    if column.kind not in CHOICE_KINDS:
        message = f"{name} is a {column.kind} column: its values cannot be checked against the type lists"
        return [warning("activity_type.unchecked", message, "make sure the labels in the type lists are exact")], ()
    found = [ok("activity_type.column", f"{name} is a choice column with {len(column.options)} options")]
    labels = {normalise_label(o.label): o for o in column.options}
    codes = {o.value: o for o in column.options}
    for setting in _TYPE_LISTS:
        for entry in (e.strip() for e in settings.raw.get(setting, "").split(";")):
            if not entry:
                continue
            code = int(entry) if entry.lstrip("-").isdigit() else None
            if (code is not None and code in codes) or (code is None and normalise_label(entry) in labels):
                continue
            # A typo is an error; an entry of the default list that this solution lacks is harmless.
            make = warning if settings.raw.get(setting) == _DEFAULTS[setting] else error
            found.append(
                make(
                    "activity_type.unknown_option",
                    f"{setting} lists {entry!r}, which is no option of {name}{_nearest(entry, column.options)}",
                    f"correct it in {setting} (`discover` prints every option with its code)",
                )
            )
    for option_route in option_routes(column.options, settings):
        option = codes[int(str(option_route["value"]))]
        suggested = looks_like(option.label)
        if suggested and option_route["route"] == "ignored":
            found.append(
                warning(
                    "activity_type.unlisted",
                    f"option {option.value} {option.label!r} looks like {suggested.replace('_', ' ')} but is in no "
                    "type list: such events are ignored",
                    "add it to the list it belongs to, or leave it out on purpose",
                )
            )
    return found, column.options


def _nearest(entry: str, options: Sequence[Option]) -> str:
    by_label = {normalise_label(o.label): o for o in options}
    close = difflib.get_close_matches(normalise_label(entry), list(by_label), n=1, cutoff=0.5)
    if not close:
        return ""
    option = by_label[close[0]]
    return f" (nearest: {option.value} {option.label!r})"


def recipient_findings(settings: Settings, log: Table) -> list[Finding]:
    lookups = recipient_columns(log)
    if not settings.recipient_columns:
        if not lookups:
            return [
                error(
                    "recipient.none",
                    f"{log.name} has no lookup to a contact, lead or account",
                    "check CAMPAIGN_LOG_TABLE",
                )
            ]
        if len(lookups) > 1:
            return [
                warning(
                    "recipient.ambiguous",
                    f"RECIPIENT_COLUMNS is unset and {log.name} has {len(lookups)} recipient lookups "
                    f"({', '.join(lookups)}): a log that fills more than one is rejected as ambiguous",
                    f"set RECIPIENT_COLUMNS={';'.join(lookups)} (the order they are tried in)",
                )
            ]
        return [ok("recipient.columns", f"the recipient is read from {lookups[0]}")]
    found = []
    for name in settings.recipient_columns:
        column = log.columns.get(name)
        if column is None or column.kind not in LOOKUP_KINDS or not set(column.targets) & set(RECIPIENT_TABLES):
            what = (
                "does not exist" if column is None else f"is not a lookup to a contact, lead or account ({column.kind})"
            )
            found.append(
                error(
                    "recipient.column",
                    f"RECIPIENT_COLUMNS names {name}, which {what}",
                    f"use one of: {', '.join(lookups)}",
                )
            )
    return found or [
        ok("recipient.columns", f"RECIPIENT_COLUMNS {';'.join(settings.recipient_columns)} are recipient lookups")
    ]


def update_findings(settings: Settings, recipients: Mapping[str, Table | None], log: Table | None) -> list[Finding]:
    found = []
    for setting, update in (
        ("OPT_OUT_UPDATE", settings.opt_out_update),
        ("BOUNCE_UPDATE", settings.bounce_update or {}),
    ):
        for column, value in update.items():
            if "@" in column:
                continue  # a lookup binding: its target is checked by Dataverse on the first write
            for table_name, table in recipients.items():
                problem = _cannot_take(table, column, value)
                if problem:
                    found.append(
                        error(
                            "update.column",
                            f"{setting} writes {column} on {table_name}, which {problem}",
                            f"correct {setting}",
                        )
                    )
    if not found:
        found.append(ok("update.columns", "OPT_OUT_UPDATE and BOUNCE_UPDATE fit contact, lead and account"))
    uses_detail = any("{detail}" in str(v) for v in (settings.bounce_update or {}).values())
    if log is not None and settings.bounce_detail_column not in log.columns:
        make = error if uses_detail else warning
        found.append(
            make(
                "bounce.detail_column",
                f"{log.name} has no column {settings.bounce_detail_column} (BOUNCE_DETAIL_COLUMN)",
                "run `discover`",
            )
        )
    return found


def read_findings(settings: Settings, facts: Facts) -> list[Finding]:
    """Each re-read of the campaign log row that Dataverse refused, naming the columns the table lacks."""
    found = []
    for read in facts.reads:
        if read.failure is None:
            continue
        columns = facts.log.columns if facts.log is not None else {}
        missing = [name for name in read.select if _column_name(name) not in columns]
        lacks = (
            f"; {facts.log.name if facts.log else 'the table'} has no column {', '.join(missing)}" if missing else ""
        )
        found.append(
            error(
                "campaign_log.read",
                f"{' and '.join(read.functions)} re-read the campaign log with $select={','.join(read.select)}, and "
                f"Dataverse refused it ({read.failure.status}: {read.failure.code or 'no code'}){lacks}: every such "
                "read would fail",
                "correct ACTIVITY_TYPE_COLUMN, RECIPIENT_COLUMNS or BOUNCE_DETAIL_COLUMN (`discover` lists the "
                "columns), or grant Read on the campaign log table",
            )
        )
    if facts.reads and not found:
        proved = "; ".join(f"{' and '.join(r.functions)}: {','.join(r.select) or 'every column'}" for r in facts.reads)
        found.append(ok("campaign_log.reads", f"every re-read of the campaign log row works ({proved})"))
    return found


def _column_name(selected: str) -> str:
    """A lookup is selected as its value column (``_x_value``); the table's column is ``x``."""
    if selected.startswith("_") and selected.endswith("_value"):
        return selected[1 : -len("_value")]
    return selected


def _cannot_take(table: Table | None, column_name: str, value: Any) -> str | None:
    if table is None:
        return "could not be read (the table is missing or hidden from this identity)"
    column = table.columns.get(column_name)
    if column is None:
        return "does not exist"
    if not column.updatable:
        return "is not valid for update"
    accepts = {
        "Boolean": isinstance(value, bool),
        "String": isinstance(value, str),
        "Memo": isinstance(value, str),
        "DateTime": isinstance(value, str),
        "Integer": isinstance(value, int) and not isinstance(value, bool),
        "BigInt": isinstance(value, int) and not isinstance(value, bool),
        "Decimal": isinstance(value, (int, float)) and not isinstance(value, bool),
        "Double": isinstance(value, (int, float)) and not isinstance(value, bool),
        "Money": isinstance(value, (int, float)) and not isinstance(value, bool),
    }
    if column.kind in CHOICE_KINDS and value is not None:
        if value not in {o.value for o in column.options}:
            return f"is a choice column with no option {value!r}"
        return None
    if value is None or accepts.get(column.kind, False):
        return None
    return f"is a {column.kind} column and cannot take {value!r}"


def privilege_findings(settings: Settings, facts: Facts) -> list[Finding]:
    if facts.user_id is None:
        return [no_application_user(settings, "app_user.missing")]
    if isinstance(facts.held, DataverseError):
        return _unreadable("privileges.unreadable", f"the privileges of user {facts.user_id}", facts.held)
    missing = shortfalls(facts.held, privilege_needs(facts.log, facts.recipients))
    if not missing:
        log = " and read the campaign log" if facts.log is not None else ""
        return [
            ok(
                "privileges",
                f"application user {facts.user_id} can read and write every contact, lead and account{log} "
                "(organisation depth)",
            )
        ]
    return [
        error(
            "privileges.missing" if short.held is None else "privileges.depth",
            f"application user {facts.user_id}: {short.describe()}",
            f"in its security role (README: least-privilege role), give {short.kind} on {short.table} "
            f"{short.needed} (Organization) depth",
        )
        for short in missing
    ]


def registration_findings(settings: Settings, found: Registration) -> list[Finding]:
    queue = settings.campaign_log_queue
    endpoints = [e for e in found.endpoints if same("path", e.get("path"), queue)]
    if not endpoints:
        return [error("registration.endpoint_missing", f"no service endpoint posts to queue {queue}", "run `setup`")]
    results: list[Finding] = []
    good_steps = 0
    for endpoint in endpoints:
        results += _endpoint_findings(endpoint)
        for step in _create_steps(found, endpoint):
            problem = _step_finding(step)
            if problem is None:
                good_steps += 1
            else:
                results.append(problem)
    if not good_steps:
        results.append(
            error(
                "registration.step_missing",
                f"no enabled, asynchronous, post-operation step on Create of {settings.campaign_log_table} "
                f"posts to {queue}",
                "run `setup`",
            )
        )
    return results or [ok("registration", f"Dataverse posts each new {settings.campaign_log_table} row to {queue}")]


def _endpoint_findings(endpoint: Mapping[str, Any]) -> list[Finding]:
    """What is wrong with a service endpoint posting to the queue: its contract, its message format."""
    name = endpoint.get("name")
    results = []
    if endpoint.get("contract") not in QUEUE_CONTRACTS:
        results.append(
            error(
                "registration.contract",
                f"endpoint {name!r} is not a queue contract",
                "run `setup` or fix it in the Plug-in Registration Tool",
            )
        )
    if endpoint.get("messageformat") != JSON_FORMAT:
        results.append(
            error(
                "registration.format",
                f"endpoint {name!r} posts in another format than JSON",
                "set Message Format to JSON (or run `setup`)",
            )
        )
    return results


def _create_steps(found: Registration, endpoint: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The endpoint's steps on Create of the campaign log table (steps for another message or table left out)."""
    if found.create_filter is None:
        return []
    create_filter = str(found.create_filter.get("sdkmessagefilterid"))
    return [
        step
        for step in found.steps.get(str(endpoint["serviceendpointid"]), ())
        if str(step.get("_sdkmessageid_value")) == found.create_message
        and str(step.get("_sdkmessagefilterid_value")) == create_filter
    ]


def _step_finding(step: Mapping[str, Any]) -> Finding | None:
    """The error of a Create step that is disabled, synchronous or not post-operation; None when it is right."""
    problems = [
        what
        for what, bad in (
            ("disabled", step.get("statecode") != 0),
            ("synchronous (a failure would block Concep's writes)", step.get("mode") != ASYNCHRONOUS),
            ("not post-operation", step.get("stage") != POST_OPERATION),
        )
        if bad
    ]
    if not problems:
        return None
    return error("registration.step", f"the Create step {step.get('name')!r} is {', '.join(problems)}", "run `setup`")


def workflow_findings(settings: Settings, found: Registration) -> list[Finding]:
    active = [w for w in found.workflows if w.get("statecode") == 1]
    named = [w for w in active if is_concep_workflow(w, settings)] if settings.concep_workflows else active
    return [
        warning(
            "workflow.active",
            f"workflow {w.get('name')!r} ({w.get('workflowid')}) is activated on {w.get('primaryentity')}: "
            "each event would be handled twice",
            "`setup --deactivate-workflows` (with CONCEP_WORKFLOWS naming it) or deactivate it in the maker portal",
        )
        for w in named
    ]
