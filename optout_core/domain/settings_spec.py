"""Every app setting the app reads: its name, default, meaning and parser, in one list.

:class:`~optout_core.domain.settings.Settings`, ``python -m optout_core check``, the app settings the Bicep
template deploys, ``local.settings.sample.json`` and the README's settings table are derived from :func:`spec`
(``./dev appsettings`` writes the files): a setting is added here, once. The settings of each function (its
trigger queue, its activity types, its portal toggle) come from the function table,
:data:`optout_core.domain.model.FUNCTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from optout_core.domain import setting_parsers as p
from optout_core.domain.consent import DEFAULT_DESCRIPTION
from optout_core.domain.model import FUNCTIONS, Function

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


def _toggle(function: Function) -> Setting:
    # Read through Settings.disabled, in both spellings (see settings._toggle).
    return Setting(
        f"AzureWebJobs.{function.name}.Disabled", "false", f"Portal toggle: true switches {function.name} off."
    )


def spec(functions: tuple[Function, ...] = FUNCTIONS) -> tuple[Setting, ...]:
    """Every setting, for the function table ``functions``."""
    return (
        *(_queue(f) for f in functions),
        *_BEFORE_TYPES,
        *(_types(f) for f in functions if f.types_setting),
        *_AFTER_TYPES,
        *(_toggle(f) for f in functions),
    )


def default(name: str) -> str:
    """The default of the setting ``name`` (for the few values used outside Settings, e.g. the failure policy)."""
    return next(s.default for s in SPEC if s.name == name)


_BEFORE_TYPES: tuple[Setting, ...] = (
    Setting(
        "REJECTED_QUEUE",
        "rejected",
        "Queue that keeps every rejected message with its reason, for redrive.",
        p.queue,
        field="rejected_queue",
    ),
    Setting(
        "CAMPAIGN_LOG_TABLE",
        "concep_emailcampaignlog",
        "Logical name of Concep's Email Campaign Log table; other tables are rejected.",
        p.logical_name,
        field="campaign_log_table",
    ),
    Setting(
        "CAMPAIGN_LOG_ENTITY_SET",
        "",
        "Web API entity set of the campaign log table, used to re-read trimmed messages; empty = the table name + s.",
        p.optional_identifier,
    ),
    Setting(
        "EXPECTED_ORGANIZATION_ID",
        "",
        "Your Dataverse organisation id; when set, messages from any other organisation are rejected.",
        p.optional_guid,
        field="expected_organization_id",
    ),
    Setting(
        "VERIFY_CAMPAIGN_LOG",
        "false",
        "true: before any write, check each event against Dataverse's own campaign log row and write its values "
        "(a forged or altered event is rejected). Recommended wherever the queue's SAS key is not tightly held.",
        p.boolean,
        field="verify_campaign_log",
    ),
    Setting(
        "ACTIVITY_TYPE_COLUMN",
        "concep_activitytype",
        "Campaign log column holding the activity type (choice, text or lookup).",
        p.logical_name,
        field="activity_type_column",
    ),
)

_AFTER_TYPES: tuple[Setting, ...] = (
    Setting(
        "USER_OPT_OUT_ACTIVITY_TYPES",
        "User Opt Out;Account Opt Out",
        "Send-account (user-level) opt-outs: recorded as ignored, CRM unchanged.",
        p.activity_types(required=False),
        field="user_opt_out_types",
    ),
    Setting(
        "RECIPIENT_COLUMNS",
        "",
        "Ordered ;-list of lookup columns naming the recipient; empty = the log's only contact/lead/account lookup.",
        p.logical_names,
        field="recipient_columns",
    ),
    Setting(
        "BOUNCE_DETAIL_COLUMN",
        "concep_bouncereason",
        "Campaign log column whose value fills {detail} in BOUNCE_UPDATE.",
        p.logical_name,
        field="bounce_detail_column",
    ),
    Setting(
        "OPT_OUT_UPDATE",
        '{"donotbulkemail": true}',
        "JSON object PATCHed onto the recipient for an opt-out.",
        p.update(required=True),
        field="opt_out_update",
    ),
    Setting(
        "BOUNCE_UPDATE",
        "",
        "JSON object PATCHed onto the recipient for a bounce; strings may hold {activity_type} {occurred_on} "
        "{log_id} {detail}. Empty = audit only.",
        p.update(required=False, placeholders=BOUNCE_PLACEHOLDERS),
        field="bounce_update",
    ),
    Setting(
        "CONSENT_PURPOSE_IDS",
        "",
        "Customer Insights - Journeys: ;-separated ids of the purposes (e.g. Commercial communications) an opt-out "
        "also records the address as opted out of, as contact point consent. Empty (with CONSENT_TOPIC_IDS) = off.",
    ),
    Setting(
        "CONSENT_TOPIC_IDS",
        "",
        "Customer Insights - Journeys: ;-separated ids of the topics an opt-out also records as opted out.",
    ),
    Setting(
        "RECIPIENT_EMAIL_COLUMNS",
        "emailaddress1",
        "With consent on: the recipient's address columns (;-separated) whose addresses are opted out.",
    ),
    Setting(
        "CONSENT_REASON_DESCRIPTION",
        DEFAULT_DESCRIPTION,
        "With consent on: the Reason Description written on each consent record ({log_id}: the campaign log id). "
        "A text of its own marks optout's records.",
    ),
    Setting(
        "DATAVERSE_URL",
        "",
        "Environment URL, e.g. https://contoso.crm.dynamics.com (needed by BulkEmailOptOut and BounceDetail).",
        p.dataverse_url,
        field="dataverse_url",
    ),
    Setting(
        "DATAVERSE_TOKEN",
        "",
        "Static bearer token, honoured only for a loopback DATAVERSE_URL (local stand-ins).",
        p.optional_text,
        field="dataverse_token",
        secret=True,
    ),
    Setting(
        "AZURE_CLIENT_ID",
        "",
        "Client id of a user-assigned managed identity for Dataverse; empty = DefaultAzureCredential.",
        p.optional_guid,
        field="azure_client_id",
    ),
    Setting(
        "AZURE_CLIENT_SECRET",
        "",
        "Only for a service principal instead of a managed identity (read by DefaultAzureCredential with "
        "AZURE_TENANT_ID).",
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
        "Web API requests in flight at once per worker process (Dataverse allows 52 per application user across "
        "all instances).",
        p.number(minimum=1, integer=True),
        field="dataverse_concurrency",
    ),
    Setting(
        "DATAVERSE_MAX_ATTEMPTS",
        "5",
        "Tries per Web API request in process (first included) before the work item is put back on its queue.",
        p.number(minimum=1, integer=True),
    ),
    Setting(
        "DATAVERSE_BACKOFF_SECONDS",
        "1",
        "First back-off after a 5xx/timeout; doubles per try, with jitter.",
        p.number(minimum=0),
    ),
    Setting("DATAVERSE_BACKOFF_MAX_SECONDS", "30", "Longest back-off between two tries.", p.number(minimum=0)),
    Setting(
        "DATAVERSE_MAX_RETRY_AFTER_SECONDS",
        "30",
        "Longest 429 Retry-After waited in process; a longer one puts the work item back on its queue, due after it.",
        p.number(minimum=0),
    ),
    Setting(
        "DATAVERSE_RETRY_AFTER_CAP_SECONDS",
        "300",
        "Longest Retry-After honoured at all (Dataverse's window is 5 minutes); a larger one is treated as this, "
        "and a non-finite, negative or unreadable one as the normal back-off. Either is logged.",
        p.number(minimum=0),
        field="retry_after_cap",
    ),
    Setting(
        "DATAVERSE_RETRY_WINDOW_SECONDS",
        "259200",
        "How long after its first attempt an event keeps being retried (put back on its queue with growing "
        "delays) through transient failures; then it ends as failed, kept on REJECTED_QUEUE for redrive.",
        p.number(minimum=0),
        field="retry_window",
    ),
    Setting(
        "OPT_OUT_BATCH_BUDGET_SECONDS",
        "60",
        "Time one BulkEmailOptOut batch may spend on Dataverse; what is not written by then is put back. Keep it "
        "well below the opt-out queue's lock duration (the host does not renew locks for batches).",
        p.number(minimum=1),
        field="opt_out_batch_budget",
    ),
    Setting(
        "DATAVERSE_ENDPOINT_CONNECTION_STRING",
        "",
        "For `setup`: the Send-only Service Bus connection string (with EntityPath = CAMPAIGN_LOG_QUEUE) that "
        "Dataverse's service endpoint posts with. Its key is never printed or logged.",
        p.optional_text,
        field="endpoint_connection_string",
        secret=True,
        scope="admin",
    ),
    Setting(
        "DATAVERSE_ENDPOINT_NAME",
        "optout campaign log",
        "For `setup`: name of the service endpoint (and, with the table, of its step) that `setup` registers "
        "and finds again.",
        p.text,
        field="endpoint_name",
        scope="admin",
    ),
    Setting(
        "CONCEP_WORKFLOWS",
        "",
        "For `setup --deactivate-workflows` and `check --connect`: ;-separated names (or ids) of Concep's opt-out "
        "and bounce workflows that optout replaces. Empty: `check` lists the activated workflows on the campaign "
        "log table and nothing is deactivated.",
        p.names,
        field="concep_workflows",
        scope="admin",
    ),
    Setting(
        "ServiceBusConnection",
        "",
        "Service Bus connection string (or use ServiceBusConnection__fullyQualifiedNamespace).",
        secret=True,
    ),
    Setting(
        "ServiceBusConnection__fullyQualifiedNamespace",
        "",
        "Namespace host (<ns>.servicebus.windows.net) for identity-based connections.",
    ),
    Setting(
        "ServiceBusConnection__credential",
        "",
        "managedidentity to use a user-assigned identity for Service Bus (with __clientId).",
    ),
    Setting(
        "ServiceBusConnection__clientId",
        "",
        "Client id of the user-assigned identity used for Service Bus (with __credential=managedidentity).",
    ),
)

SPEC = spec()
