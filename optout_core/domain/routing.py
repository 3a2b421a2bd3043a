"""The router's decision: a pure function from one Service Bus message and the settings to an outcome.

This is the parent workflow's logic: read the campaign log, check it came from the right place, and
send opt-outs (Spam Report, Group Opt out, Client Opt Out) and bounces on to their functions. A
send-account (user-level) opt-out changes nothing in CRM, because Concep's platform already stops that
send account mailing the recipient. A switched-off function is not forwarded to, just as a deactivated
child workflow is never started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from optout_core.domain.bounce import uses_detail
from optout_core.domain.execution_context import (
    CampaignLogContext,
    ContextHeader,
    HeaderOnlyContext,
    TrimmedContext,
    UnreadableMessage,
    load_context,
)
from optout_core.domain.model import BOUNCE, ENTITY_SETS, Function, Outcome, Recipient, Route
from optout_core.domain.redact import MAX_LABEL, cap
from optout_core.domain.settings import Settings
from optout_core.domain.values import as_option_code, as_reference, references_one_of, unwrap
from optout_core.domain.webapi_row import context_from_row
from optout_core.domain.workitem import WorkItem

_CLAIMS = "http://schemas.microsoft.com/xrm/2011/Claims/"


@dataclass(frozen=True, slots=True)
class ActivityType:
    label: str | None
    code: int | None

    @property
    def name(self) -> str | None:
        """The label, or the option code as text when the message carries no label."""
        return self.label or (None if self.code is None else str(self.code))

    def __str__(self) -> str:
        code = str(self.code) if self.code is None or len(str(self.code)) <= 20 else str(self.code)[:20] + "…"
        if self.label and self.code is not None:
            return f"{_shown(self.label)} ({code})"
        return _shown(self.label) if self.label else f"option {code}"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome  # routed, ignored or rejected
    reason: str | None = None
    log_id: str | None = None
    operation_id: str | None = None
    correlation_id: str | None = None
    route: Route | None = None
    activity_type: ActivityType | None = None
    recipient: Recipient | None = None
    work_item: WorkItem | None = None  # set when routed


@dataclass(frozen=True, slots=True)
class RowRequest:
    """Dataverse trimmed the context (over 192 KB): the decision needs the campaign log row itself.

    The shell reads it (``GET {entity_set}({log_id})``) and calls :func:`decide_row`.
    """

    entity_set: str
    log_id: str
    select: tuple[str, ...]
    context: TrimmedContext

    def decided(self, outcome: Outcome, reason: str | None) -> Decision:
        """A decision about this message without its row (it is gone, unreadable, or not read in a dry run)."""
        context = self.context
        return Decision(
            outcome,
            reason,
            log_id=self.log_id,
            operation_id=context.operation_id,
            correlation_id=context.correlation_id,
        )


class _Stop(Exception):
    """Ends the decision early with an outcome; internal to this module."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


def decide(
    body: bytes,
    settings: Settings,
    *,
    content_type: str | None = "application/json",
    properties: Mapping[str, Any] | None = None,
) -> Decision | RowRequest:
    """Decide what to do with one message body posted by Dataverse (and its application properties).

    Returns a :class:`RowRequest` instead when the context was trimmed and the row must be read first.
    """
    try:
        context = load_context(body, content_type)
    except UnreadableMessage as exc:
        return Decision(Outcome.REJECTED, str(exc))
    properties = properties or {}
    try:
        _check_claims(context, properties)
        log_id = _check_source(context, settings)
    except _Stop as stop:
        return Decision(
            stop.outcome,
            stop.reason,
            log_id=context.primary_id,
            operation_id=context.operation_id,
            correlation_id=context.correlation_id,
        )
    if isinstance(context, HeaderOnlyContext):  # a Create (checked above) whose Target is not an Entity
        return Decision(
            Outcome.REJECTED,
            context.problem,
            log_id=log_id,
            operation_id=context.operation_id,
            correlation_id=context.correlation_id,
        )
    if isinstance(context, TrimmedContext):
        return _row_request(context, log_id, settings)
    return _decide_context(context, log_id, settings)


def decide_row(request: RowRequest, row: Mapping[str, Any] | None, settings: Settings) -> Decision:
    """Finish a decision from the campaign log row the Web API returned (None: the row is gone)."""
    if row is None:
        reason = f"the context was trimmed and campaign log {request.log_id} no longer exists in Dataverse"
        return request.decided(Outcome.REJECTED, reason)
    return _decide_context(context_from_row(request.context, row), request.log_id, settings)


def explain_row_request(request: RowRequest) -> Decision:
    """What a dry run without network can say about a trimmed message."""
    return request.decided(
        Outcome.IGNORED,
        f"the context was trimmed (over 192 KB): the router would read campaign log "
        f"{request.log_id} from the Web API to decide (not done in a dry run)",
    )


def _decide_context(context: CampaignLogContext, log_id: str, settings: Settings) -> Decision:
    operation_id, correlation_id = context.operation_id, context.correlation_id
    activity = route = None
    try:
        activity = _activity_type(context, settings)
        route = _route(activity, settings)
        recipient = _recipient(context, settings)
    except (_Stop, UnreadableMessage) as stop:
        outcome, reason = (stop.outcome, stop.reason) if isinstance(stop, _Stop) else (Outcome.REJECTED, str(stop))
        return Decision(
            outcome,
            reason,
            log_id=log_id,
            operation_id=operation_id,
            correlation_id=correlation_id,
            route=route,
            activity_type=activity,
        )
    item = WorkItem(
        route=route,
        log_id=log_id,
        recipient=recipient,
        activity_type=activity.label,
        activity_code=activity.code,
        operation_id=operation_id,
        correlation_id=correlation_id,
        occurred_on=context.created_on(),
        detail=_detail(context, settings) if route is Route.BOUNCE else None,
    )
    return Decision(
        Outcome.ROUTED,
        log_id=log_id,
        operation_id=operation_id,
        correlation_id=correlation_id,
        route=route,
        activity_type=activity,
        recipient=recipient,
        work_item=item,
    )


def _check_source(context: ContextHeader, settings: Settings) -> str:
    """The campaign log id of a message from the right place, or the reason to stop (raised)."""
    # Where the message came from first: a foreign or malformed message is rejected whatever its type.
    expected = settings.expected_organization_id
    if expected and context.organization_id is None:
        raise _Stop(
            Outcome.REJECTED, f"OrganizationId is missing, so it cannot match EXPECTED_ORGANIZATION_ID {expected}"
        )
    if expected and context.organization_id != expected:
        raise _Stop(
            Outcome.REJECTED, f"organisation {context.organization_id} is not EXPECTED_ORGANIZATION_ID {expected}"
        )
    if context.entity_name is None:
        raise _Stop(Outcome.REJECTED, "PrimaryEntityName is missing: not a campaign log message (CAMPAIGN_LOG_TABLE)")
    if context.entity_name.lower() != settings.campaign_log_table:
        raise _Stop(
            Outcome.REJECTED,
            f"table {_shown(context.entity_name)} is not the campaign log table "
            f"{settings.campaign_log_table!r} (CAMPAIGN_LOG_TABLE)",
        )
    if context.message_name is None:
        raise _Stop(Outcome.REJECTED, "MessageName is missing: not a Dataverse execution context")
    if context.message_name != "Create":
        raise _Stop(
            Outcome.IGNORED,
            f"message {_shown(context.message_name)} is not Create: only new campaign "
            "logs are processed (register the step on Create)",
        )
    if context.primary_id is None:
        raise _Stop(Outcome.REJECTED, "PrimaryEntityId (the campaign log id) is missing")
    return context.primary_id


def _shown(value: str | None, limit: int = 100) -> str:
    """A value from the message as it appears in a reason: quoted, shortened, and '(missing)' for none."""
    if value is None:
        return "(missing)"
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _check_claims(context: ContextHeader, properties: Mapping[str, Any]) -> None:
    """Dataverse's own properties, when present, must agree with the body (they are not signed either,
    but a contradiction means the message was not posted by this step as it stands)."""
    for claim, body_value in (("EntityLogicalName", context.entity_name), ("RequestName", context.message_name)):
        value = _claim(properties, claim)
        if value is not None and str(value).casefold() != str(body_value or "").casefold():
            raise _Stop(
                Outcome.REJECTED,
                f"application property {_CLAIMS}{claim} is {str(value)[:100]!r} but the "
                f"body says {body_value!r}: the message was altered or not posted "
                "by the campaign log step",
            )


def _claim(properties: Mapping[str, Any], name: str) -> Any:
    if _CLAIMS + name in properties:
        return properties[_CLAIMS + name]
    suffix = f"/claims/{name}".lower()  # old pages print https://; match the suffix as a fallback
    for key, value in properties.items():
        if isinstance(key, str) and key.lower().endswith(suffix):
            return value
    return None


def _row_request(context: TrimmedContext, log_id: str, settings: Settings) -> RowRequest:
    return RowRequest(settings.campaign_log_entity_set, log_id, row_select(settings), context)


def row_select(settings: Settings, route: Route | None = None) -> tuple[str, ...]:
    """The columns a decision reads from the campaign log row, for work on ``route`` (None: the router's read,
    any route). Without RECIPIENT_COLUMNS the lookups are unknown, so every column is read; with it, only what
    the decision uses (a wrong column name then fails loudly with the Web API's 400). BOUNCE_DETAIL_COLUMN is
    read only when a bounce could be written with it: a missing bounce column never fails an opt-out's read."""
    if not settings.recipient_columns:
        return ()
    detail = uses_detail(settings.bounce_update) and route in (None, Route.BOUNCE) and settings.is_enabled(BOUNCE)
    return (
        settings.activity_type_column,
        *((settings.bounce_detail_column,) if detail else ()),
        "createdon",
        *(f"_{column}_value" for column in settings.recipient_columns),
    )


def _activity_type(context: CampaignLogContext, settings: Settings) -> ActivityType:
    column = settings.activity_type_column
    if column not in context.target:
        raise _Stop(
            Outcome.REJECTED,
            f"the campaign log has no column {column!r}: set ACTIVITY_TYPE_COLUMN "
            "to the activity type column of your Concep solution",
        )
    value = unwrap(context.target[column])
    formatted = context.formatted.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Stop(Outcome.IGNORED, f"the campaign log's {column} is empty")
    kind = _unsupported_kind(value)
    if kind is not None:
        raise _Stop(
            Outcome.REJECTED,
            f"the campaign log's {column} is {kind}: yes/no and multi-select choice columns are not "
            "supported; set ACTIVITY_TYPE_COLUMN to a choice, text or lookup column",
        )
    if isinstance(value, str):
        return ActivityType(cap(value.strip(), MAX_LABEL), None)
    reference = as_reference(value)
    if reference is not None:  # a lookup to an activity type table: its name is the label
        label = cap((reference.name or formatted or "").strip(), MAX_LABEL)
        if not label:
            raise _Stop(
                Outcome.IGNORED,
                f"the campaign log's {column} is a lookup without a name: its activity type cannot be read",
            )
        return ActivityType(label, None)
    code = as_option_code(value)
    if code is None:
        raise _Stop(Outcome.REJECTED, f"the campaign log's {column} is neither a choice, text nor a lookup")
    return ActivityType(cap((formatted or "").strip(), MAX_LABEL) or None, code)


def _unsupported_kind(value: Any) -> str | None:
    """'a yes/no column' for a boolean, 'a multi-select choice column' for an OptionSetValueCollection
    (a bare array of OptionSetValues), else None."""
    if isinstance(value, bool):
        return "a yes/no column"
    if isinstance(value, list) and all(as_option_code(item) is not None for item in value):
        return "a multi-select choice column"
    return None


class Unrouted(StrEnum):
    """What an activity type gets when no function does its work."""

    USER_OPT_OUT = "user_opt_out"  # a send-account opt-out: Concep stops the send account, CRM is not changed
    IGNORED = "ignored"  # listed nowhere


def type_route(label: str | None, code: int | None, settings: Settings) -> Route | Unrouted:
    """What an activity type gets under ``settings``: the route of the function whose activity types list it,
    :attr:`Unrouted.USER_OPT_OUT` or :attr:`Unrouted.IGNORED`. The router's rule, shared with ``discover``,
    ``check --connect`` and the audit."""
    listed = _listed(label, code, settings)
    if isinstance(listed, Unrouted):
        return listed
    return listed.route if listed.route is not None else Unrouted.IGNORED


def _listed(label: str | None, code: int | None, settings: Settings) -> Function | Unrouted:
    """The list that names this activity type. A listed option code decides before any label: codes are stable,
    labels are renamed and translated (a code listed as an opt-out stays one under the label "User Opt Out")."""
    keys = ((None, code), (label, None)) if code is not None else ((label, None),)
    for key_label, key_code in keys:
        if settings.user_opt_out_types.matches(key_label, key_code):
            return Unrouted.USER_OPT_OUT
        function = settings.function_for_type(key_label, key_code)
        if function is not None:
            return function
    return Unrouted.IGNORED


def _route(activity: ActivityType, settings: Settings) -> Route:
    listed = _listed(activity.label, activity.code, settings)
    if listed is Unrouted.USER_OPT_OUT:
        raise _Stop(
            Outcome.IGNORED,
            f"activity type {activity} is a user-level (send-account) opt-out: "
            "Concep already stops that send account; CRM is not changed",
        )
    if isinstance(listed, Unrouted) or listed.route is None:
        hint = "" if activity.label else " (the message carries no label: list its option code)"
        works = [f.work for f in settings.functions if f.types_setting]
        kinds = " or ".join([", ".join(works[:-1]), works[-1]] if len(works) > 1 else works)
        raise _Stop(Outcome.IGNORED, f"activity type {activity} is not an {kinds} type{hint}")
    if not settings.is_enabled(listed):
        raise _Stop(Outcome.IGNORED, f"{listed.name} is switched off (AzureWebJobs.{listed.name}.Disabled)")
    return listed.route


def _recipient(context: CampaignLogContext, settings: Settings) -> Recipient:
    if settings.recipient_columns:
        return _listed_recipient(context.target, settings.recipient_columns)
    return _only_recipient(context.target)


def _listed_recipient(attributes: Mapping[str, Any], columns: tuple[str, ...]) -> Recipient:
    # The first listed column that holds a value decides: a later column never stands in for it, so a
    # log whose first column points elsewhere (a systemuser, say) cannot opt out another record.
    for column in columns:
        value = attributes.get(column)
        if unwrap(value) in (None, ""):
            continue
        reference = as_reference(value)
        if reference is None:
            raise _Stop(Outcome.REJECTED, f"the recipient column {column} does not hold a lookup")
        if reference.table not in ENTITY_SETS:
            raise _Stop(
                Outcome.REJECTED,
                f"the recipient column {column} references a {_shown(reference.table, 40)}, "
                "not a contact, lead or account",
            )
        return _valid(reference.table, reference.id, column)
    raise _Stop(
        Outcome.REJECTED,
        f"no recipient: none of RECIPIENT_COLUMNS ({';'.join(columns)}) references a contact, lead or account",
    )


def _only_recipient(attributes: Mapping[str, Any]) -> Recipient:
    """Without RECIPIENT_COLUMNS: the log's only contact, lead or account lookup (several rows: ambiguous)."""
    found: dict[tuple[str, str | None], str] = {}
    for column, value in attributes.items():
        if type(value) is not dict or not references_one_of(value, ENTITY_SETS):
            continue
        reference = as_reference(value)
        if reference is not None:
            found.setdefault((reference.table, reference.id), column)
    if not found:
        raise _Stop(Outcome.REJECTED, "no recipient: the campaign log references no contact, lead or account")
    if len(found) > 1:
        columns = ", ".join(sorted(set(found.values())))
        raise _Stop(
            Outcome.REJECTED, f"ambiguous recipient: columns {columns} reference different rows; set RECIPIENT_COLUMNS"
        )
    (table, row_id), column = next(iter(found.items()))
    return _valid(table, row_id, column)


def _valid(table: str, row_id: str | None, column: str) -> Recipient:
    if row_id is None:
        raise _Stop(Outcome.REJECTED, f"the recipient id in {column} is not a GUID")
    return Recipient(table, row_id)


def _detail(context: CampaignLogContext, settings: Settings) -> str | None:
    column = settings.bounce_detail_column
    value: Any = unwrap(context.target.get(column))
    formatted: Mapping[str, str] = context.formatted
    if column in formatted:  # a choice or lookup: its label reads better than its code
        return formatted[column]
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)
