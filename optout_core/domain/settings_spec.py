"""Every app setting the app reads: its name, default and meaning, in one list.

``local.settings.sample.json``, ``python -m optout_core check`` and :class:`~optout_core.domain.settings.Settings`
are derived from :data:`SPEC`: a setting is added here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

from optout_core.domain.consent import DEFAULT_DESCRIPTION
from optout_core.domain.model import FUNCTIONS

BOUNCE_PLACEHOLDERS = ("activity_type", "occurred_on", "log_id", "detail")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str
    secret: bool = False
    # "app": read by the functions, so an app setting of the Function App. "admin": read only by the
    # administrator's commands (``setup``, ``check --connect``) on their own machine, never deployed.
    scope: str = "app"


SPEC: tuple[Setting, ...] = (
    Setting(
        "CAMPAIGN_LOG_QUEUE",
        "campaign-log",
        "Queue Dataverse posts campaign log Create events to (CampaignLogRouter's trigger).",
    ),
    Setting("OPT_OUT_QUEUE", "opt-out", "Queue of opt-out work items (BulkEmailOptOut's trigger)."),
    Setting("BOUNCE_QUEUE", "bounce", "Queue of bounce work items (BounceDetail's trigger)."),
    Setting("REJECTED_QUEUE", "rejected", "Queue that keeps every rejected message with its reason, for redrive."),
    Setting(
        "CAMPAIGN_LOG_TABLE",
        "concep_emailcampaignlog",
        "Logical name of Concep's Email Campaign Log table; other tables are rejected.",
    ),
    Setting(
        "CAMPAIGN_LOG_ENTITY_SET",
        "",
        "Web API entity set of the campaign log table, used to re-read trimmed messages; empty = the table name + s.",
    ),
    Setting(
        "EXPECTED_ORGANIZATION_ID",
        "",
        "Your Dataverse organisation id; when set, messages from any other organisation are rejected.",
    ),
    Setting(
        "VERIFY_CAMPAIGN_LOG",
        "false",
        "true: before any write, check each event against Dataverse's own campaign log row and write its values "
        "(a forged or altered event is rejected). Recommended wherever the queue's SAS key is not tightly held.",
    ),
    Setting(
        "ACTIVITY_TYPE_COLUMN",
        "concep_activitytype",
        "Campaign log column holding the activity type (choice, text or lookup).",
    ),
    Setting(
        "OPT_OUT_ACTIVITY_TYPES",
        "Spam Report;Group Opt out;Client Opt Out",
        "Activity types (labels and/or option codes, ;-separated) that opt the recipient out.",
    ),
    Setting(
        "BOUNCE_ACTIVITY_TYPES",
        "Hard Bounce;Soft Bounce;Bounce",
        "Activity types (labels and/or option codes, ;-separated) handled as bounces.",
    ),
    Setting(
        "USER_OPT_OUT_ACTIVITY_TYPES",
        "User Opt Out;Account Opt Out",
        "Send-account (user-level) opt-outs: recorded as ignored, CRM unchanged.",
    ),
    Setting(
        "RECIPIENT_COLUMNS",
        "",
        "Ordered ;-list of lookup columns naming the recipient; empty = the log's only contact/lead/account lookup.",
    ),
    Setting(
        "BOUNCE_DETAIL_COLUMN",
        "concep_bouncereason",
        "Campaign log column whose value fills {detail} in BOUNCE_UPDATE.",
    ),
    Setting("OPT_OUT_UPDATE", '{"donotbulkemail": true}', "JSON object PATCHed onto the recipient for an opt-out."),
    Setting(
        "BOUNCE_UPDATE",
        "",
        "JSON object PATCHed onto the recipient for a bounce; strings may hold {activity_type} {occurred_on} "
        "{log_id} {detail}. Empty = audit only.",
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
    ),
    Setting(
        "DATAVERSE_TOKEN",
        "",
        "Static bearer token, honoured only for a loopback DATAVERSE_URL (local stand-ins).",
        secret=True,
    ),
    Setting(
        "AZURE_CLIENT_ID",
        "",
        "Client id of a user-assigned managed identity for Dataverse; empty = DefaultAzureCredential.",
    ),
    Setting(
        "AZURE_CLIENT_SECRET",
        "",
        "Only for a service principal instead of a managed identity (read by DefaultAzureCredential with "
        "AZURE_TENANT_ID).",
        secret=True,
    ),
    Setting("DATAVERSE_TIMEOUT_SECONDS", "30", "Connect/read timeout of one Web API request."),
    Setting(
        "DATAVERSE_MAX_CONCURRENCY",
        "8",
        "Web API requests in flight at once per worker process (Dataverse allows 52 per application user across "
        "all instances).",
    ),
    Setting(
        "DATAVERSE_MAX_ATTEMPTS",
        "5",
        "Tries per Web API request in process (first included) before the work item is put back on its queue.",
    ),
    Setting("DATAVERSE_BACKOFF_SECONDS", "1", "First back-off after a 5xx/timeout; doubles per try, with jitter."),
    Setting("DATAVERSE_BACKOFF_MAX_SECONDS", "30", "Longest back-off between two tries."),
    Setting(
        "DATAVERSE_MAX_RETRY_AFTER_SECONDS",
        "30",
        "Longest 429 Retry-After waited in process; a longer one puts the work item back on its queue, due after it.",
    ),
    Setting(
        "DATAVERSE_RETRY_AFTER_CAP_SECONDS",
        "300",
        "Longest Retry-After honoured at all (Dataverse's window is 5 minutes); a larger one is treated as this, "
        "and a non-finite, negative or unreadable one as the normal back-off. Either is logged.",
    ),
    Setting(
        "DATAVERSE_RETRY_WINDOW_SECONDS",
        "259200",
        "How long after its first attempt an event keeps being retried (put back on its queue with growing "
        "delays) through transient failures; then it ends as failed, kept on REJECTED_QUEUE for redrive.",
    ),
    Setting(
        "OPT_OUT_BATCH_BUDGET_SECONDS",
        "60",
        "Time one BulkEmailOptOut batch may spend on Dataverse; what is not written by then is put back. Keep it "
        "well below the opt-out queue's lock duration (the host does not renew locks for batches).",
    ),
    Setting(
        "DATAVERSE_ENDPOINT_CONNECTION_STRING",
        "",
        "For `setup`: the Send-only Service Bus connection string (with EntityPath = CAMPAIGN_LOG_QUEUE) that "
        "Dataverse's service endpoint posts with. Its key is never printed or logged.",
        secret=True,
        scope="admin",
    ),
    Setting(
        "DATAVERSE_ENDPOINT_NAME",
        "optout campaign log",
        "For `setup`: name of the service endpoint (and, with the table, of its step) that `setup` registers "
        "and finds again.",
        scope="admin",
    ),
    Setting(
        "CONCEP_WORKFLOWS",
        "",
        "For `setup --deactivate-workflows` and `check --connect`: ;-separated names (or ids) of Concep's opt-out "
        "and bounce workflows that optout replaces. Empty: `check` lists the activated workflows on the campaign "
        "log table and nothing is deactivated.",
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
    *(
        Setting(f"AzureWebJobs.{f.name}.Disabled", "false", f"Portal toggle: true switches {f.name} off.")
        for f in FUNCTIONS
    ),
)
