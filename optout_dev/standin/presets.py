"""The typed tables the stand-in knows and the rows it seeds with them (docs/dataverse-admin.md): contact, lead and
account; the samples' campaign log and a second, different one; Customer Insights – Journeys consent (§5);
Service Bus registration and classic workflows (§3, §4). Option values are Microsoft's where §1-§5 list them;
the campaign-log schemas are made up (the real Concep schema is unconfirmed).

Microsoft's tables follow their published references (MicrosoftDocs/powerapps-docs
``powerapps-docs/developer/data-platform/reference/entities/<table>.md`` and
MicrosoftDocs/dynamics-365-customer-engagement ``ce/developer/reference/entities/<table>.md``): each column's type,
validity for read, create and update, options and navigation properties. tests/contracts/facts/dataverse holds what
they say and tests/contracts/dataverse holds the stand-in to it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from optout_dev.standin.schema import (
    Column,
    Option,
    Table,
    boolean,
    plain_column,
    plain_table,
    stable_id,
    state_columns,
)
from optout_dev.standin.tables import ENTITY_SETS

Seed = tuple[str, str, Mapping[str, Any]]  # (table, row id, values by read name)


def _choice(name: str, options: Mapping[int, str], kind: str = "Picklist", **kwargs: Any) -> Column:
    return Column(name, kind, tuple(Option(value, text) for value, text in options.items()), **kwargs)


_CONSENT = tuple(plain_column(name) for name in ("donotbulkemail", "donotemail", "donotbulkpostalmail",
                                                 "donotpostalmail", "donotphone", "donotfax", "donotsendmm",
                                                 "followemail"))  # fmt: skip
_PARTY = (
    *_CONSENT,
    *(Column(f"emailaddress{n}", label=f"Email{'' if n == 1 else f' Address {n}'}") for n in (1, 2, 3)),
    Column("description", "Memo", label="Description"),
    *state_columns(),
)
_OWNER = Column("ownerid", "Owner", targets=("systemuser", "team"), label="Owner")
_CREATED = Column("createdon", "DateTime", creatable=False, updatable=False, label="Created On")
_MODIFIED = Column("modifiedon", "DateTime", creatable=False, updatable=False, label="Modified On")
_NAMES = (Column("firstname", label="First Name"), Column("lastname", label="Last Name"), Column("fullname"))

STANDARD_TABLES: Mapping[str, Table] = {
    "contact": Table("contact", "contacts", (*_PARTY, *_NAMES), "Contact", "Contact", "fullname", 2, False),
    "lead": Table(
        "lead",
        "leads",
        (*_PARTY, *_NAMES, Column("companyname", label="Company Name"), Column("subject", label="Topic")),
        "Lead",
        "Lead",
        "fullname",
        4,
        False,
    ),
    "account": Table(
        "account", "accounts", (*_PARTY, Column("name", label="Account Name")), "Account", "Account", "name", 1, False
    ),
}

# ----- the samples' campaign log (optout_dev/messages.py) -----------------------------------------------

SAMPLES_ACTIVITY_OPTIONS: Mapping[int, str] = {
    100000000: "Sent",
    100000001: "Open",
    100000002: "Click",
    100000003: "Spam Report",
    100000004: "Group Opt out",
    100000005: "Client Opt Out",
    100000006: "User Opt Out",
    100000007: "Hard Bounce",
    100000008: "Soft Bounce",
    100000009: "Forward",
}
SAMPLES_CAMPAIGN_LOG = Table(
    "concep_emailcampaignlog",
    "concep_emailcampaignlogs",
    (
        Column("concep_name", label="Name", required="ApplicationRequired"),
        _choice("concep_activitytype", SAMPLES_ACTIVITY_OPTIONS, label="Activity Type"),
        Column(
            "concep_recipientid",
            "Lookup",
            targets=("contact", "lead", "account"),
            label="Recipient",
            navigation={
                "concep_recipientid_contact": "contact",
                "concep_recipientid_lead": "lead",
                "concep_recipientid_account": "account",
            },
        ),  # fmt: skip
        Column("concep_contactid", "Lookup", targets=("contact",), label="Contact"),
        Column("concep_leadid", "Lookup", targets=("lead",), label="Lead"),
        Column("concep_bouncereason", label="Bounce Reason"),
        _CREATED,
        *state_columns(),
        _OWNER,
    ),
    "concep_EmailCampaignLog",
    "Email Campaign Log",
    "concep_name",
    10245,
)

# ----- a second, different campaign-log schema (other names, codes, a global choice, a Customer lookup) ------

OTHER_EVENT_OPTIONS: Mapping[int, str] = {
    717750000: "Opened",
    717750001: "Client Opt Out",
    717750002: "Hard bounce",
    717750003: "Spam Report",
    717750004: "Bounced - soft",
    717750005: "Group Opt out",
    717750006: "User opt-out",
}
OTHER_CAMPAIGN_LOG = Table(
    "cnc_maillog",
    "cnc_maillogs",
    (
        Column("cnc_subject", label="Subject"),
        _choice("cnc_eventkind", OTHER_EVENT_OPTIONS, label="Event", global_option_set="cnc_eventkind"),
        Column(
            "cnc_customerid",
            "Customer",
            targets=("account", "contact"),
            label="Customer",
            navigation={"cnc_customerid_account": "account", "cnc_customerid_contact": "contact"},
        ),  # fmt: skip
        Column("cnc_leadid", "Lookup", targets=("lead",), label="Lead"),
        Column("cnc_bouncedetail", "Memo", label="Bounce detail"),
        _CREATED,
        *state_columns(),
        _OWNER,
    ),
    "cnc_MailLog",
    "Mail Log",
    "cnc_subject",
    10310,
)
# Unrelated, with a choice column holding one opt-out-like label: a candidate that must not rank first.
OTHER_SURVEY = Table(
    "cnc_survey",
    "cnc_surveys",
    (
        Column("cnc_title", label="Title"),
        _choice("cnc_answer", {717750000: "Satisfied", 717750001: "Unsatisfied", 717750002: "Opt out of surveys"}),
        Column("cnc_contactid", "Lookup", targets=("contact",), label="Contact"),
        *state_columns(),
        _OWNER,
    ),
    "cnc_Survey",
    "Survey",
    "cnc_title",
    10311,
)

# ----- Customer Insights – Journeys consent (docs/dataverse-admin.md §5) -----------------------------------

CHANNEL_EMAIL, OPTED_IN, OPTED_OUT, CONSENT_TYPE_PURPOSE, SOURCE_INTERNAL, NO_REASONS = (
    534120000, 534120001, 534120002, 534120000, 534120000, 534119999,
)  # fmt: skip
COMMERCIAL_PURPOSE_ID = "4f1e7c2a-9b3d-4e8f-a1c2-0d3e4f5a6b01"
TRANSACTIONAL_PURPOSE_ID = "4f1e7c2a-9b3d-4e8f-a1c2-0d3e4f5a6b02"
NEWSLETTER_TOPIC_ID = "5a2f8d3b-0c4e-4f90-b2d3-1e4f5a6b7c01"

CONSENT_TABLE = Table(
    "msdynmkt_contactpointconsent4",
    "msdynmkt_contactpointconsent4s",
    (
        Column("msdynmkt_contactpointvalue", label="Contact point", required="ApplicationRequired"),
        _choice(
            "msdynmkt_contactpointtype",
            {534120000: "Email", 534120001: "Text Message", 534120002: "Custom", 534120003: "Voice"},
            label="Channel",
            required="ApplicationRequired",
        ),
        _choice(
            "msdynmkt_value",
            {534120000: "Not Set", 534120001: "Opted In", 534120002: "Opted Out"},
            label="Consent status",
            required="ApplicationRequired",
        ),
        _choice("msdynmkt_contactpointconsenttype", {534120000: "Purpose", 534120001: "Topic"}, label="Consent type"),
        Column(
            "msdynmkt_purposeid",
            "Lookup",
            targets=("msdynmkt_purpose",),
            label="Purpose",
            navigation={"msdynmkt_purposeId": "msdynmkt_purpose"},
            required="ApplicationRequired",
        ),
        Column(
            "msdynmkt_topicid",
            "Lookup",
            targets=("msdynmkt_topic",),
            label="Topic",
            navigation={"msdynmkt_topicId": "msdynmkt_topic"},
        ),
        _choice(
            "msdynmkt_source",
            {
                534120000: "Internal",
                534120001: "Preference page",
                534120002: "Text message",
                534120003: "Loaded",
                534120004: "Preference Center",
                534120005: "Realtime Marketing Form",
                534120006: "Subscription Center",
                534120007: "Email – list-unsubscribe",
            },
            label="Source",
            required="ApplicationRequired",
            default=534120000,
        ),
        _choice(
            "msdynmkt_logicalreason",
            {
                534119999: "No reasons",
                534120000: "Opt-in – requested",
                534120001: "Opt-in – agreed",
                534120002: "Opt-in – other",
                534120003: "Opt-out – irrelevant",
                534120004: "Opt-out – too frequent",
                534120005: "Opt-out – didn't recall",
                534120006: "Opt-out – privacy",
                534120007: "Opt-out – one-click unsubscribe",
            },
            label="Reason",
            required="ApplicationRequired",
        ),
        Column("msdynmkt_reason", label="Reason Description"),
        Column("msdynmkt_modifiedonbehalf", label="Who requested the change"),
        Column(
            "msdynmkt_messageid",
            "Lookup",
            targets=("email",),
            label="Message",
            navigation={"email_msdynmkt_messageid": "email"},  # the reference's ReferencingEntityNavigationPropertyName
        ),
        _CREATED,
        _MODIFIED,
        *state_columns(),
        _OWNER,
    ),  # fmt: skip
    "msdynmkt_contactpointconsent4",
    "Contact point consent",
    "msdynmkt_contactpointvalue",
    10520,
)
PURPOSE_TABLE = Table(
    "msdynmkt_purpose",
    "msdynmkt_purposes",
    (Column("msdynmkt_name", label="Name"), *state_columns(), _OWNER),
    "msdynmkt_purpose",
    "Purpose",
    "msdynmkt_name",
    10521,
)
TOPIC_TABLE = Table(
    "msdynmkt_topic",
    "msdynmkt_topics",
    (Column("msdynmkt_name", label="Name"), *state_columns(), _OWNER),
    "msdynmkt_topic",
    "Topic",
    "msdynmkt_name",
    10522,
)

# ----- Service Bus registration (§3) and classic workflows (§4) -------------------------------------------

_ENABLED = (Option(0, "Enabled", default_status=1), Option(1, "Disabled", default_status=2))
_ENABLED_STATUS = (Option(1, "Enabled", state=0), Option(2, "Disabled", state=1))
SERVICE_ENDPOINT = Table(
    "serviceendpoint",
    "serviceendpoints",
    (
        Column("name", label="Name", required="SystemRequired"),
        Column("description", "Memo", label="Description"),
        _choice(
            "contract",
            {
                1: "OneWay",
                2: "Queue",
                3: "Rest",
                4: "TwoWay",
                5: "Topic",
                6: "Queue (Persistent)",
                7: "Event Hub",
                8: "Webhook",
                9: "Event Grid",
                10: "Managed Data Lake",
            },
            label="Contract",
            required="SystemRequired",
        ),
        _choice("connectionmode", {1: "Normal", 2: "Federated"}, label="Connection Mode", required="SystemRequired"),
        _choice(
            "authtype",
            {
                1: "ACS",
                2: "SAS Key",
                3: "SAS Token",
                4: "Webhook Key",
                5: "Http Header",
                6: "Http Query String",
                7: "Connection String",
                8: "Access Key",
            },
            label="Auth Type",
        ),
        Column("namespaceaddress", label="Namespace Address"),
        _choice("namespaceformat", {1: "Namespace Name", 2: "Namespace Address"}, label="Namespace Format"),
        Column("solutionnamespace", label="Solution Namespace"),  # SystemRequired, but derived (§3.1): not enforced
        Column("path", label="Path", required="SystemRequired"),
        Column("saskeyname", label="SAS Key Name"),
        Column("saskey", readable=False, label="SAS Key"),
        Column("sastoken", readable=False, label="SAS Token"),
        Column("authvalue", readable=False, label="Auth Value"),
        _choice("messageformat", {1: "Binary XML", 2: "Json", 3: "Text XML"}, label="Message Format"),
        _choice("messagecharset", {0: "Default", 1: "UTF8"}, label="Message Charset"),
        _choice("userclaim", {1: "None", 2: "UserId", 3: "UserInfo"}, label="User Claim", required="SystemRequired"),
        Column("url", label="Url"),
        boolean("issaskeyset", creatable=False, updatable=False, flag_of="saskey"),
        boolean("issastokenset", creatable=False, updatable=False, flag_of="sastoken"),
        boolean("isauthvalueset", creatable=False, updatable=False, flag_of="authvalue"),
    ),  # fmt: skip
    "ServiceEndpoint",
    "Service Endpoint",
    "name",
    4618,
    False,
    "OrganizationOwned",
)
SDK_MESSAGE = Table(
    "sdkmessage", "sdkmessages", (Column("name", label="Name"),), "SdkMessage", "Sdk Message", "name", 4606, False,
    "OrganizationOwned",
)  # fmt: skip
SDK_MESSAGE_FILTER = Table(
    "sdkmessagefilter",
    "sdkmessagefilters",
    (
        Column(  # read-only in the reference
            "primaryobjecttypecode", "EntityName", creatable=False, updatable=False, label="Primary Object Type Code"
        ),
        Column("sdkmessageid", "Lookup", targets=("sdkmessage",), label="SDK Message", required="SystemRequired"),
        boolean(
            "iscustomprocessingstepallowed",
            label="Custom Processing Step Allowed",
            required="SystemRequired",
            default=False,
        ),
    ),
    "SdkMessageFilter",
    "Sdk Message Filter",
    None,
    4607,
    False,
    "OrganizationOwned",
)
STEP = Table(
    "sdkmessageprocessingstep",
    "sdkmessageprocessingsteps",
    (
        Column("name", label="Name", required="SystemRequired"),
        Column("description", label="Description"),
        Column(
            "eventhandler",
            "Lookup",
            targets=("plugintype", "serviceendpoint"),
            label="Event Handler",
            navigation={"eventhandler_serviceendpoint": "serviceendpoint", "eventhandler_plugintype": "plugintype"},
            required="SystemRequired",
        ),
        Column("sdkmessageid", "Lookup", targets=("sdkmessage",), label="SDK Message", required="SystemRequired"),
        Column("sdkmessagefilterid", "Lookup", targets=("sdkmessagefilter",), label="SdkMessage Filter"),
        _choice(
            "stage",
            {
                5: "Initial Pre-operation (For internal use only)",
                10: "Pre-validation",
                15: "Internal Pre-operation Before External Plugins (For internal use only)",
                20: "Pre-operation",
                25: "Internal Pre-operation After External Plugins (For internal use only)",
                30: "Main Operation (For internal use only)",
                35: "Internal Post-operation Before External Plugins (For internal use only)",
                40: "Post-operation",
                45: "Internal Post-operation After External Plugins (For internal use only)",
                50: "Post-operation (Deprecated)",
                55: "Final Post-operation (For internal use only)",
                80: "Pre-Commit stage fired before transaction commit (For internal use only)",
                90: "Post-Commit stage fired after transaction commit (For internal use only)",
            },
            label="Execution Stage",
            required="SystemRequired",
        ),
        _choice("mode", {0: "Synchronous", 1: "Asynchronous"}, label="Execution Mode", required="SystemRequired"),
        Column("rank", "Integer", label="Execution Order", required="SystemRequired"),
        _choice(
            "supporteddeployment",
            {0: "Server Only", 1: "Microsoft Dynamics 365 Client for Outlook Only", 2: "Both"},
            label="Deployment",
            required="SystemRequired",
            default=0,
        ),
        boolean("asyncautodelete", label="Asynchronous Automatic Delete", required="SystemRequired", default=False),
        Column("filteringattributes", label="Filtering Attributes"),
        *state_columns(_ENABLED, _ENABLED_STATUS),
    ),  # fmt: skip
    "SdkMessageProcessingStep",
    "Sdk Message Processing Step",
    "name",
    4608,
    False,
)
WORKFLOW = Table(
    "workflow",
    "workflows",
    (
        Column("name", label="Process Name", required="SystemRequired"),
        Column("uniquename", label="Unique Name"),
        Column("description", "Memo", label="Description"),
        _choice(
            "category",
            {
                0: "Workflow",
                1: "Dialog",
                2: "Business Rule",
                3: "Action",
                4: "Business Process Flow",
                5: "Modern Flow",
                6: "Desktop Flow",
                7: "AI Flow",
            },
            label="Category",
            required="SystemRequired",
        ),
        _choice("type", {1: "Definition", 2: "Activation", 3: "Template"}, label="Type", required="SystemRequired"),
        Column("primaryentity", "EntityName", label="Primary Entity", required="SystemRequired"),
        *state_columns(
            (
                Option(0, "Draft", default_status=1),
                Option(1, "Activated", default_status=2),
                Option(2, "Suspended", default_status=3),
            ),
            (Option(1, "Draft", state=0), Option(2, "Activated", state=1), Option(3, "CompanyDLPViolation", state=2)),
        ),
        _OWNER,
    ),  # fmt: skip
    "Workflow",
    "Process",
    "name",
    4703,
    False,
)

# Fixed ids of the seeded registration rows.
SDK_MESSAGE_IDS: Mapping[str, str] = {
    "Create": "9ebdbb1b-ea3e-db11-86a7-000a3a5473e8",
    "Update": "20bebb1b-ea3e-db11-86a7-000a3a5473e8",
    "Delete": "1fbebb1b-ea3e-db11-86a7-000a3a5473e8",
}
CONCEP_WORKFLOWS: Mapping[str, str] = {  # activated, on the samples' campaign log
    "Concep Email Campaign Log - Router": "7c0a1d2e-3f40-4a5b-8c6d-7e8f9a0b1c01",
    "Concep Opt Out (child)": "7c0a1d2e-3f40-4a5b-8c6d-7e8f9a0b1c02",
    "Concep Bounce Detail": "7c0a1d2e-3f40-4a5b-8c6d-7e8f9a0b1c03",
}
OTHER_WORKFLOWS: Mapping[str, str] = {
    "Welcome new contact": "7c0a1d2e-3f40-4a5b-8c6d-7e8f9a0b1c04",  # activated, on contact
    "Lead follow-up (draft)": "7c0a1d2e-3f40-4a5b-8c6d-7e8f9a0b1c05",  # draft, on lead
}

# Preset name -> the tables it adds (DataverseStandIn(presets=...)).
PRESETS: Mapping[str, tuple[Table, ...]] = {
    "samples": (SAMPLES_CAMPAIGN_LOG,),
    "other": (OTHER_CAMPAIGN_LOG, OTHER_SURVEY),
    "journeys": (CONSENT_TABLE, PURPOSE_TABLE, TOPIC_TABLE),
    "registration": (SERVICE_ENDPOINT, SDK_MESSAGE, SDK_MESSAGE_FILTER, STEP, WORKFLOW),
}


def filter_id(message: str, table: str) -> str:
    """The id of the seeded ``sdkmessagefilter`` for ``message`` on ``table``."""
    return stable_id("sdkmessagefilter", message, table)


def seeds(tables: Mapping[str, Table]) -> list[Seed]:
    """The rows a stand-in serving ``tables`` starts with: purposes and a topic with the consent table; messages,
    a filter per message and table, and workflows with the registration tables."""
    rows: list[Seed] = []
    if "msdynmkt_purpose" in tables:
        rows.append(("msdynmkt_purpose", COMMERCIAL_PURPOSE_ID, {"msdynmkt_name": "Commercial communications"}))
        rows.append(("msdynmkt_purpose", TRANSACTIONAL_PURPOSE_ID, {"msdynmkt_name": "Transactional"}))
    if "msdynmkt_topic" in tables:
        rows.append(("msdynmkt_topic", NEWSLETTER_TOPIC_ID, {"msdynmkt_name": "Newsletter"}))
    if "sdkmessage" in tables:
        rows.extend(("sdkmessage", row_id, {"name": name}) for name, row_id in SDK_MESSAGE_IDS.items())
    if "sdkmessagefilter" in tables:
        for message, message_id in SDK_MESSAGE_IDS.items():
            for table in sorted(tables):
                values = {
                    "primaryobjecttypecode": table,
                    "_sdkmessageid_value": message_id,
                    "iscustomprocessingstepallowed": True,
                }
                rows.append(("sdkmessagefilter", filter_id(message, table), values))
    if "workflow" in tables:
        flows: list[tuple[str, str, str, int]] = [(OTHER_WORKFLOWS["Welcome new contact"], "Welcome new contact",
                                                   "contact", 1),
                                                  (OTHER_WORKFLOWS["Lead follow-up (draft)"],
                                                   "Lead follow-up (draft)", "lead", 0)]  # fmt: skip
        if SAMPLES_CAMPAIGN_LOG.name in tables:
            flows += [(row_id, name, SAMPLES_CAMPAIGN_LOG.name, 1) for name, row_id in CONCEP_WORKFLOWS.items()]
        for row_id, name, entity, state in flows:
            values = {"name": name, "category": 0, "type": 1, "primaryentity": entity, "statecode": state,
                      "statuscode": 2 if state else 1}  # fmt: skip
            rows.append(("workflow", row_id, values))
    return rows


def build_tables(
    tables: Mapping[str, Iterable[str] | Table] | None,
    entity_sets: Mapping[str, str] | None,
    presets: Iterable[str],
) -> dict[str, Table]:
    """The typed tables a stand-in serves: ``tables`` (typed, or plain column sets typed by :func:`plain_table`;
    default: contact, lead and account) plus each preset's."""
    sets = {**ENTITY_SETS, **(entity_sets or {})}
    typed: dict[str, Table] = {}
    for name, spec in (STANDARD_TABLES if tables is None else tables).items():
        if isinstance(spec, Table):
            if spec.name != name:
                raise ValueError(f"table {spec.name!r} given under the name {name!r}")
            typed[name] = replace(spec, entity_set=entity_sets[name]) if entity_sets and name in entity_sets else spec
            continue
        if name not in sets:
            raise ValueError(f"no entity set known for table {name!r}; pass entity_sets={{{name!r}: ...}}")
        typed[name] = plain_table(name, spec, sets[name], STANDARD_TABLES.get(name))
    for preset in presets:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        typed.update({table.name: table for table in PRESETS[preset]})
    return typed
