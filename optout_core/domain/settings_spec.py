"""Every app setting the app reads: its name, default, meaning and parser, in one list.

:class:`~optout_core.domain.settings.Settings`, ``python -m optout_core check``, the app settings the Bicep
template deploys, ``local.settings.sample.json`` and the README's settings table are derived from :func:`spec`
(``./dev appsettings`` writes the files): a setting is added here, once. The settings of each function (its
trigger queue, its activity types, its portal toggle) come from the function table,
:data:`optout_core.domain.model.FUNCTIONS`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from optout_core.domain import setting_parsers as p
from optout_core.domain.consent_settings import DEFAULT_DESCRIPTION
from optout_core.domain.model import AUDIT, FUNCTIONS, TIMERS, Function, Timer

BOUNCE_PLACEHOLDERS = ("activity_type", "occurred_on", "log_id", "detail")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str
    parse: p.Parser = p.text  # text (stripped, default applied) -> value; its errors name the setting
    field: str | None = None  # the Settings attribute it fills as parsed; None: read with others, or not at all
    secret: bool = False
    # "app": read by the functions, so an app setting of the Function App. "admin": read only by the
    # administrator's commands (``setup``, ``check --connect``) on their own machine, never deployed.
    scope: str = "app"
    example: str = ""  # for the README's settings table


def _queue(function: Function) -> Setting:
    if function.route is None:
        meaning = f"Queue Dataverse posts {function.work} Create events to ({function.name}'s trigger)."
    else:
        meaning = f"Queue of {function.work} work items ({function.name}'s trigger)."
    return Setting(function.queue_setting, function.queue_default, meaning, p.queue)


def _types(function: Function) -> Setting:
    assert function.types_setting is not None
    return Setting(
        function.types_setting,
        function.types_default,
        f"Activity types (labels and/or option codes, ;-separated) handled as {function.work}s ({function.name}).",
        p.activity_types(required=function.types_required),
    )


def _toggle(function: Function | Timer) -> Setting:
    # Read through Settings.disabled, in both spellings (see settings._toggle).
    off = isinstance(function, Timer) and function.off_by_default
    meaning = f"Portal toggle: true switches {function.name} off." + (" Off until set to `false`." if off else "")
    return Setting(f"AzureWebJobs.{function.name}.Disabled", "true" if off else "false", meaning)


def _schedule(timer: Timer) -> Setting:
    return Setting(
        timer.schedule_setting,
        timer.schedule_default,
        f"When {timer.name} runs ({timer.work}): an NCRONTAB expression of six fields, `{{second}} {{minute}} "
        "{hour} {day} {month} {day-of-week}`, in UTC (the timer's default time zone).",
        ncrontab,
        example="0 30 1 * * 1",
    )


def ncrontab(name: str, text: str) -> str:
    """Six space-separated fields (the timer trigger's NCRONTAB form); the host parses the fields themselves."""
    if len(fields := text.split()) != 6 or any(len(field) > 64 for field in fields):
        raise ValueError(f"{text[:80]!r} is not six NCRONTAB fields, e.g. '0 0 2 * * *' for 02:00 every day")
    return " ".join(fields)


@functools.cache  # one list per function table (in production, one)
def spec(functions: tuple[Function, ...] = FUNCTIONS, timers: tuple[Timer, ...] = TIMERS) -> tuple[Setting, ...]:
    """Every setting, for the function table ``functions`` and the timers ``timers``."""
    return (
        *(_queue(f) for f in functions),
        *_BEFORE_TYPES,
        *(_types(f) for f in functions if f.types_setting),
        *_AFTER_TYPES,
        *(_schedule(t) for t in timers),
        *(_AUDIT if AUDIT in timers else ()),
        *(_toggle(f) for f in functions),
        *(_toggle(t) for t in timers),
    )


def lookback_days(name: str, text: str) -> int:
    """Whole days, 1 to 3660 (ten years: a window any date arithmetic can hold)."""
    if (days := int(p.number(minimum=1, integer=True)(name, text))) > 3660:
        raise ValueError(f"at most 3660 days, not {days}")
    return days


_AUDIT: tuple[Setting, ...] = (
    Setting(
        "AUDIT_LOOKBACK_DAYS",
        "7",
        "OptOutAudit: each run audits the campaign logs created in this many days before it.",
        lookback_days,
        example="30",
    ),
    Setting(
        "AUDIT_FIX",
        "false",
        "OptOutAudit: `true` also writes each recipient found not honoured, once, as BulkEmailOptOut does; "
        "`false` only reports.",
        p.boolean,
        example="true",
    ),
)


def default(name: str) -> str:
    """The default of the setting ``name`` (for the few values used outside Settings, e.g. the failure policy)."""
    return next(s.default for s in SPEC if s.name == name)


_BEFORE_TYPES: tuple[Setting, ...] = (
    Setting(
        "REJECTED_QUEUE",
        "rejected",
        "Where rejected messages are kept, with their reason, for redrive.",
        p.queue,
        field="rejected_queue",
    ),
    Setting(
        "CAMPAIGN_LOG_TABLE",
        "concep_emailcampaignlog",
        "Logical name of the Email Campaign Log table; messages about other tables are rejected.",
        p.logical_name,
        field="campaign_log_table",
    ),
    Setting(
        "CAMPAIGN_LOG_ENTITY_SET",
        "",
        "Web API entity set of the campaign log table, used to re-read a message Dataverse trimmed (over 192 KB); "
        "empty: the table name + `s`.",
        p.optional_identifier,
        example="concep_emailcampaignlogs",
    ),
    Setting(
        "EXPECTED_ORGANIZATION_ID",
        "",
        "Your environment's organisation id; when set, messages from any other organisation are rejected.",
        p.optional_guid,
        field="expected_organization_id",
        example="99d8114f-583c-44d5-9a40-2634f42fc1fa",
    ),
    Setting(
        "VERIFY_CAMPAIGN_LOG",
        "false",
        "`true`: before any write, each event is checked against Dataverse's own campaign log row (it must "
        "exist, and its activity type and recipient must match) and the row's values are written; a forged or "
        "altered event is rejected. Costs one read per event, one `$batch` of reads per batch in a burst. "
        "Recommended wherever the queue's SAS key cannot be tightly held; the application user then needs Read "
        "on the campaign log table.",
        p.boolean,
        field="verify_campaign_log",
        example="true",
    ),
    Setting(
        "ACTIVITY_TYPE_COLUMN",
        "concep_activitytype",
        "The log column holding the activity type (a choice, text or lookup).",
        p.logical_name,
        field="activity_type_column",
    ),
)

_AFTER_TYPES: tuple[Setting, ...] = (
    Setting(
        "USER_OPT_OUT_ACTIVITY_TYPES",
        "User Opt Out;Account Opt Out",
        "Send-account (user-level) opt-outs: ignored, CRM unchanged.",
        p.activity_types(required=False),
        field="user_opt_out_types",
    ),
    Setting(
        "RECIPIENT_COLUMNS",
        "",
        "Ordered `;`-list of lookup columns naming the recipient; the first non-empty one that points at a "
        "contact, lead or account wins. Empty: the log's only contact/lead/account lookup (several different "
        "ones are rejected as ambiguous).",
        p.logical_names,
        field="recipient_columns",
        example="concep_contactid;concep_leadid;concep_accountid",
    ),
    Setting(
        "BOUNCE_DETAIL_COLUMN",
        "concep_bouncereason",
        "Log column whose value fills `{detail}` in `BOUNCE_UPDATE`.",
        p.logical_name,
        field="bounce_detail_column",
    ),
    Setting(
        "OPT_OUT_UPDATE",
        '{"donotbulkemail": true}',
        "JSON object PATCHed onto the recipient for an opt-out.",
        p.update(required=True),
        field="opt_out_update",
        example='{"donotbulkemail": true, "donotemail": true}',
    ),
    Setting(
        "BOUNCE_UPDATE",
        "",
        "JSON object PATCHed onto the recipient for a bounce; string values may hold `{activity_type}`, "
        "`{occurred_on}` (ISO 8601 UTC of the log's `createdon`), `{log_id}`, `{detail}`. A value that is only "
        "a placeholder with no value becomes `null`. Empty: audit only (the bounce is logged, nothing written).",
        p.update(required=False, placeholders=BOUNCE_PLACEHOLDERS),
        field="bounce_update",
        example='{"new_emailbounced": true, "new_bouncedon": "{occurred_on}", "new_bouncereason": "{detail}"}',
    ),
    Setting(
        "CONSENT_PURPOSE_IDS",
        "",
        "Customer Insights – Journeys: `;`-separated ids of the purposes an opt-out also records the address "
        "as opted out of (contact point consent). Empty, with `CONSENT_TOPIC_IDS`: off.",
        example="4f1e7c2a-9b3d-4e8f-a1c2-0d3e4f5a6b01",
    ),
    Setting(
        "CONSENT_TOPIC_IDS",
        "",
        "Customer Insights – Journeys: `;`-separated ids of the topics an opt-out also records the address as "
        "opted out of, where topic-level consent is used.",
    ),
    Setting(
        "RECIPIENT_EMAIL_COLUMNS",
        "emailaddress1",
        "With consent on: the recipient's address columns (`;`-separated) that are opted out; each must exist "
        "on contact, lead and account.",
        example="emailaddress1;emailaddress2",
    ),
    Setting(
        "CONSENT_REASON_DESCRIPTION",
        DEFAULT_DESCRIPTION,
        "With consent on: the Reason Description written on each consent record (`{log_id}`: the campaign log "
        "id). A text of its own marks optout's records.",
    ),
    Setting(
        "DATAVERSE_URL",
        "",
        "Environment URL (needed by BulkEmailOptOut and BounceDetail).",
        p.dataverse_url,
        field="dataverse_url",
        example="https://contoso.crm.dynamics.com",
    ),
    Setting(
        "DATAVERSE_TOKEN",
        "",
        "Static bearer token, honoured **only** for a loopback `DATAVERSE_URL` (local stand-ins); refused otherwise.",
        p.optional_text,
        field="dataverse_token",
        secret=True,
    ),
    Setting(
        "AZURE_CLIENT_ID",
        "",
        "Client id (a GUID) of a user-assigned managed identity for Dataverse; empty = `DefaultAzureCredential` "
        "(system-assigned identity in Azure, your `az login` locally).",
        p.optional_guid,
        field="azure_client_id",
    ),
    Setting(
        "AZURE_CLIENT_SECRET",
        "",
        "Only if you use a service principal instead of a managed identity (with `AZURE_TENANT_ID` and "
        "`AZURE_CLIENT_ID`).",
        secret=True,
    ),
    Setting(
        "DATAVERSE_TIMEOUT_SECONDS",
        "30",
        "Connect/read timeout of one Web API request.",
        p.number(minimum=0.1),
        field="dataverse_timeout",
    ),
    Setting(
        "DATAVERSE_MAX_CONCURRENCY",
        "8",
        "Web API requests in flight at once per worker process; keep instances × this well under Dataverse's "
        "52 per application user.",
        p.number(minimum=1, integer=True),
        field="dataverse_concurrency",
    ),
    Setting(
        "DATAVERSE_MAX_ATTEMPTS",
        "5",
        "Tries per Web API request in process, the first included, before the work item is put back on its queue.",
        p.number(minimum=1, integer=True),
    ),
    Setting(
        "DATAVERSE_BACKOFF_SECONDS",
        "1",
        "First back-off after a 5xx or timeout; doubles each try, with jitter.",
        p.number(minimum=0, above=True),
    ),
    Setting(
        "DATAVERSE_BACKOFF_MAX_SECONDS",
        "30",
        "Longest back-off.",
        p.number(minimum=0),
    ),
    Setting(
        "DATAVERSE_MAX_RETRY_AFTER_SECONDS",
        "30",
        "Longest 429 `Retry-After` waited in process; a longer one puts the work item back on its queue, due after it.",
        p.number(minimum=0),
    ),
    Setting(
        "DATAVERSE_RETRY_AFTER_CAP_SECONDS",
        "300",
        "Longest `Retry-After` honoured at all (Dataverse's window is 5 minutes): a larger one is treated as "
        "this, a non-finite, negative or unreadable one as the normal back-off; both are logged.",
        p.number(minimum=0),
        field="retry_after_cap",
    ),
    Setting(
        "DATAVERSE_PROTECTION_WINDOW_SECONDS",
        "300",
        "Dataverse's service-protection window (5 minutes, fixed by the service): the span over which a process "
        "that is told its user's window is full reads its share of it and paces itself. Change it only against a "
        "stand-in whose time is scaled down.",
        p.number(minimum=0, above=True),
        field="protection_window",
    ),
    Setting(
        "DATAVERSE_RETRY_WINDOW_SECONDS",
        "259200",
        "How long after its first attempt an event keeps being put back through transient failures (72 hours); "
        "then it ends `failed`, kept on `REJECTED_QUEUE`.",
        p.number(minimum=0),
        field="retry_window",
        example="86400",
    ),
    Setting(
        "OPT_OUT_BATCH_BUDGET_SECONDS",
        "60",
        "Time one BulkEmailOptOut batch may spend on Dataverse; what is not written by then is put back. The "
        "host does not renew a batch's lock: keep this plus `DATAVERSE_TIMEOUT_SECONDS` well under the "
        "`opt-out` queue's lock duration.",
        p.number(minimum=1),
        field="opt_out_batch_budget",
    ),
    Setting(
        "DATAVERSE_ENDPOINT_CONNECTION_STRING",
        "",
        "For `setup` only (your machine, never an app setting): the campaign-log queue's Send-only connection "
        "string, ending `EntityPath=<CAMPAIGN_LOG_QUEUE>`; Dataverse's endpoint posts with it.",
        p.optional_text,
        field="endpoint_connection_string",
        secret=True,
        scope="admin",
        example="Endpoint=sb://…;SharedAccessKeyName=dataverse-send;SharedAccessKey=…;EntityPath=campaign-log",
    ),
    Setting(
        "DATAVERSE_ENDPOINT_NAME",
        "optout campaign log",
        "For `setup`: the name of the service endpoint (and its step) it registers and finds again.",
        p.text,
        field="endpoint_name",
        scope="admin",
    ),
    Setting(
        "CONCEP_WORKFLOWS",
        "",
        "For `setup --deactivate-workflows` and `check --connect`: `;`-separated names or ids of Concep's "
        "opt-out and bounce workflows that optout replaces. Empty: `check` warns about every activated "
        "workflow on the campaign log table, and nothing is deactivated.",
        p.names,
        field="concep_workflows",
        scope="admin",
        example="Concep Opt Out;Concep Bounce Detail",
    ),
    Setting(
        "ServiceBusConnection",
        "",
        "Service Bus connection string (triggers and the SDK sender).",
        secret=True,
        example="Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…",
    ),
    Setting(
        "ServiceBusConnection__fullyQualifiedNamespace",
        "",
        "Instead of a connection string: the namespace, used with the app's managed identity.",
        example="contoso-optout.servicebus.windows.net",
    ),
    Setting(
        "ServiceBusConnection__credential",
        "",
        "`managedidentity` to use a user-assigned identity for Service Bus.",
        example="managedidentity",
    ),
    Setting(
        "ServiceBusConnection__clientId",
        "",
        "Client id of a user-assigned identity for Service Bus (with "
        "`ServiceBusConnection__credential=managedidentity`).",
    ),
)

SPEC = spec()
