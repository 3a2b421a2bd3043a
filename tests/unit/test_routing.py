"""The router's decision (optout_core.domain.routing.decide), on bodies in the exact Dataverse wire shape."""

import json
from enum import StrEnum

import pytest

from optout_core.app.settle import forward
from optout_core.domain.bounce import bounce_changes
from optout_core.domain.errors import SettingsError
from optout_core.domain.model import FUNCTIONS, Function, Outcome, Recipient, Route
from optout_core.domain.routing import RowRequest, Unrouted, decide, decide_row, row_select, type_route
from optout_core.domain.settings import Settings
from optout_core.domain.settings_spec import spec
from optout_dev.messages import (
    ACCOUNTS,
    CONTACTS,
    FOREIGN_ORG_ID,
    LEADS,
    LOG_ID,
    MSBIN1_BODY,
    OMIT,
    ORG_ID,
    XML_BODY,
    campaign_log,
    options,
    reference,
    wire,
)
from tools import appsettings

DEFAULTS = Settings.from_env({})
BOUNCE_TOGGLE = "AzureWebJobs.BounceDetail.Disabled"


def decision_for(context=None, settings=DEFAULTS, **kwargs):
    body = wire(context if context is not None else campaign_log(**kwargs))
    return decide(body, settings)


@pytest.mark.parametrize("activity", ["Spam Report", "Group Opt out", "Client Opt Out"])
@pytest.mark.parametrize("table, row_id", [("contact", CONTACTS[0]), ("lead", LEADS[0]), ("account", ACCOUNTS[0])])
def test_each_opt_out_type_routes_to_opt_out_for_contact_lead_and_account(activity, table, row_id):
    decision = decision_for(activity=activity, recipient=(table, row_id))
    assert decision.outcome is Outcome.ROUTED
    assert decision.route is Route.OPT_OUT
    assert decision.recipient == Recipient(table, row_id)
    assert decision.work_item.message_id == f"{LOG_ID}:opt_out"
    assert decision.work_item.activity_type == activity


@pytest.mark.parametrize("activity", ["Hard Bounce", "Soft Bounce"])
def test_bounce_types_route_to_bounce_with_their_detail_and_time(activity):
    decision = decision_for(
        activity=activity, bounce_reason="550 5.1.1 mailbox unavailable", created_on_ms=1741944413000
    )
    assert decision.outcome is Outcome.ROUTED and decision.route is Route.BOUNCE
    assert decision.work_item.detail == "550 5.1.1 mailbox unavailable"
    assert decision.work_item.occurred_on == "2025-03-14T09:26:53Z"


def test_opt_out_work_items_carry_no_bounce_detail():
    assert decision_for(activity="Spam Report", bounce_reason="x").work_item.detail is None


def test_user_level_opt_out_is_ignored_because_concep_already_stops_that_send_account():
    decision = decision_for(activity="User Opt Out")
    assert decision.outcome is Outcome.IGNORED
    assert "user-level" in decision.reason and "CRM is not changed" in decision.reason
    assert decision.work_item is None


def test_ordinary_activity_is_ignored_with_its_type_in_the_reason():
    decision = decision_for(activity="Open")
    assert decision.outcome is Outcome.IGNORED
    assert "'Open'" in decision.reason


def test_labels_match_ignoring_case_spaces_hyphens_and_underscores():
    settings = Settings.from_env({"OPT_OUT_ACTIVITY_TYPES": "group-opt_OUT"})
    decision = decision_for(
        activity={"__type": "OptionSetValue:x", "Value": 7}, activity_label="Group Opt out", settings=settings
    )
    assert decision.route is Route.OPT_OUT


def test_option_code_without_label_matches_only_a_listed_code():
    body = campaign_log(activity=100000004)  # no FormattedValues label
    ignored = decide(wire(body), DEFAULTS)
    assert ignored.outcome is Outcome.IGNORED and "list its option code" in ignored.reason
    routed = decide(wire(body), Settings.from_env({"OPT_OUT_ACTIVITY_TYPES": "Spam Report;100000004"}))
    assert routed.route is Route.OPT_OUT and routed.work_item.activity_code == 100000004


@pytest.mark.parametrize("label", ["User Opt Out", "Hard Bounce"])
def test_a_listed_option_code_decides_before_a_label_listed_elsewhere(label):
    # Codes are stable; labels are renamed and translated: the code listed as an opt-out wins over the label.
    settings = Settings.from_env({"OPT_OUT_ACTIVITY_TYPES": "Spam Report;100000003"})
    decision = decision_for(activity=100000003, activity_label=label, settings=settings)
    assert decision.outcome is Outcome.ROUTED and decision.route is Route.OPT_OUT
    assert type_route(label, 100000003, settings) is Route.OPT_OUT
    # the label still decides for a code no list names
    assert type_route(label, 100000009, settings) is not Route.OPT_OUT


def test_type_route_names_what_no_function_does():
    assert type_route("User Opt Out", None, DEFAULTS) is Unrouted.USER_OPT_OUT
    assert type_route("Open", None, DEFAULTS) is Unrouted.IGNORED
    assert type_route("Spam Report", None, DEFAULTS) is Route.OPT_OUT


def test_activity_type_as_plain_text():
    assert decision_for(activity="Client Opt Out ", activity_label=None).outcome is Outcome.ROUTED
    decision = decide(wire(campaign_log(extra_attributes={"concep_activitytype": "Client Opt Out"})), DEFAULTS)
    assert decision.route is Route.OPT_OUT


def test_activity_type_as_lookup_uses_its_name_or_the_formatted_value():
    named = campaign_log(
        extra_attributes={"concep_activitytype": reference("concep_activitytype", CONTACTS[2], "Spam Report")}
    )
    assert decide(wire(named), DEFAULTS).route is Route.OPT_OUT
    unnamed = campaign_log(
        extra_attributes={"concep_activitytype": reference("concep_activitytype", CONTACTS[2], None)},
        activity_label="Hard Bounce",
    )
    assert decide(wire(unnamed), DEFAULTS).route is Route.BOUNCE


def test_missing_activity_column_is_rejected_and_names_the_setting():
    decision = decision_for(activity=None)
    assert decision.outcome is Outcome.REJECTED
    assert "ACTIVITY_TYPE_COLUMN" in decision.reason


def test_null_activity_type_is_ignored():
    decision = decide(wire(campaign_log(extra_attributes={"concep_activitytype": None})), DEFAULTS)
    assert decision.outcome is Outcome.IGNORED and "empty" in decision.reason


def test_non_create_messages_are_ignored():
    decision = decision_for(message_name="Update")
    assert decision.outcome is Outcome.IGNORED and "'Update' is not Create" in decision.reason


@pytest.mark.parametrize("message_name", ["Delete", "Assign", "SetState"])
def test_messages_naming_the_log_by_entity_reference_are_ignored_as_non_creates(message_name):
    # Delete and Assign carry an EntityReference Target (SetState an EntityMoniker): the message name
    # is checked before the Target is read, so these are ignored as the step on the wrong message.
    decision = decision_for(message_name=message_name)
    assert decision.outcome is Outcome.IGNORED, decision.reason
    assert f"message '{message_name}' is not Create" in decision.reason
    assert decision.log_id == LOG_ID and decision.work_item is None


def test_a_foreign_table_delete_is_still_rejected_naming_the_setting():
    decision = decision_for(message_name="Delete", entity="contact")
    assert decision.outcome is Outcome.REJECTED and "CAMPAIGN_LOG_TABLE" in decision.reason


def test_a_create_whose_target_is_not_an_entity_is_rejected_after_the_header_checks():
    context = campaign_log(message_name="Delete", MessageName="Create")
    decision = decide(wire(context), DEFAULTS)
    assert decision.outcome is Outcome.REJECTED
    assert decision.reason == "InputParameters.Target is not an Entity"
    assert decision.log_id == LOG_ID
    # the header still comes first: the same body from another table names the table
    foreign = decide(wire(campaign_log(message_name="Delete", MessageName="Create", entity="contact")), DEFAULTS)
    assert foreign.outcome is Outcome.REJECTED and "CAMPAIGN_LOG_TABLE" in foreign.reason


def test_other_tables_are_rejected_naming_the_setting():
    decision = decision_for(entity="contact")
    assert decision.outcome is Outcome.REJECTED and "CAMPAIGN_LOG_TABLE" in decision.reason


def test_a_foreign_organisation_is_rejected_only_when_one_is_expected():
    context = campaign_log(organization_id=FOREIGN_ORG_ID)
    assert decide(wire(context), DEFAULTS).outcome is Outcome.ROUTED
    strict = Settings.from_env({"EXPECTED_ORGANIZATION_ID": ORG_ID.upper()})
    decision = decide(wire(context), strict)
    assert decision.outcome is Outcome.REJECTED and FOREIGN_ORG_ID in decision.reason
    assert decide(wire(campaign_log()), strict).outcome is Outcome.ROUTED


def test_a_trimmed_context_asks_for_the_campaign_log_row():
    request = decision_for(trimmed=True)
    assert isinstance(request, RowRequest)
    assert (request.entity_set, request.log_id, request.select) == ("concep_emailcampaignlogs", LOG_ID, ())


def test_with_recipient_columns_the_row_request_selects_only_what_the_decision_reads():
    settings = Settings.from_env(
        {"RECIPIENT_COLUMNS": "concep_contactid;concep_leadid", "CAMPAIGN_LOG_ENTITY_SET": "concep_emailcampaignlogset"}
    )
    request = decision_for(trimmed=True, settings=settings)
    assert request.entity_set == "concep_emailcampaignlogset"
    assert request.select == (  # BOUNCE_UPDATE is empty by default: the bounce detail is never written, never read
        "concep_activitytype",
        "createdon",
        "_concep_contactid_value",
        "_concep_leadid_value",
    )


def test_the_bounce_detail_column_is_read_only_when_a_bounce_could_write_it():
    env = {"RECIPIENT_COLUMNS": "concep_contactid"}
    with_detail = Settings.from_env({**env, "BOUNCE_UPDATE": '{"description": "{detail}"}'})
    without = Settings.from_env({**env, "BOUNCE_UPDATE": '{"lastusedincampaign": "{occurred_on}"}'})
    bounce_off = Settings.from_env({**env, "BOUNCE_UPDATE": '{"description": "{detail}"}', BOUNCE_TOGGLE: "true"})
    assert "concep_bouncereason" in row_select(with_detail)  # the router's read: any route
    assert "concep_bouncereason" in row_select(with_detail, Route.BOUNCE)
    # an opt-out's re-read never names it: a missing bounce column cannot fail a verified opt-out
    assert "concep_bouncereason" not in row_select(with_detail, Route.OPT_OUT)
    assert "concep_bouncereason" not in row_select(without)
    assert "concep_bouncereason" not in row_select(bounce_off)


def web_api_row(**columns):
    """A campaign log row as GET …?$select with Prefer: odata.include-annotations="*" returns it."""
    return {
        "@odata.etag": 'W/"1"',
        "concep_emailcampaignlogid": LOG_ID,
        "createdon": "2025-03-14T09:26:53Z",
        "concep_activitytype": 100000004,
        "concep_activitytype@OData.Community.Display.V1.FormattedValue": "Group Opt out",
        "_concep_recipientid_value": LEADS[0],
        "_concep_recipientid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "lead",
        "_concep_recipientid_value@OData.Community.Display.V1.FormattedValue": "A Person",
        "_ownerid_value": CONTACTS[2],
        "_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "systemuser",
        **columns,
    }


def test_the_row_is_decided_by_the_same_rules():
    request = decision_for(trimmed=True)
    decision = decide_row(request, web_api_row(), DEFAULTS)
    assert decision.outcome is Outcome.ROUTED and decision.route is Route.OPT_OUT
    assert decision.recipient == Recipient("lead", LEADS[0])
    assert decision.work_item.activity_type == "Group Opt out" and decision.work_item.activity_code == 100000004
    assert decision.work_item.occurred_on == "2025-03-14T09:26:53Z"
    assert decision.log_id == LOG_ID


def test_a_row_can_still_be_ignored_or_rejected():
    request = decision_for(trimmed=True)
    open_row = web_api_row(
        **{"concep_activitytype": 100000001, "concep_activitytype@OData.Community.Display.V1.FormattedValue": "Open"}
    )
    assert decide_row(request, open_row, DEFAULTS).outcome is Outcome.IGNORED
    no_recipient = web_api_row(_concep_recipientid_value=None)
    assert decide_row(request, no_recipient, DEFAULTS).reason.startswith("no recipient")


def test_a_trimmed_log_that_no_longer_exists_is_rejected():
    decision = decide_row(decision_for(trimmed=True), None, DEFAULTS)
    assert decision.outcome is Outcome.REJECTED and "no longer exists" in decision.reason


CLAIMS = "http://schemas.microsoft.com/xrm/2011/Claims/"


def test_dataverse_properties_that_agree_with_the_body_pass():
    properties = {
        CLAIMS + "EntityLogicalName": "concep_emailcampaignlog",
        CLAIMS + "RequestName": "Create",
        CLAIMS + "Organization": "whatever",
    }
    assert decide(wire(campaign_log()), DEFAULTS, properties=properties).outcome is Outcome.ROUTED


@pytest.mark.parametrize(
    "properties",
    [
        {CLAIMS + "EntityLogicalName": "account"},
        {CLAIMS + "RequestName": "Update"},
        {"https://schemas.microsoft.com/xrm/2011/Claims/EntityLogicalName": "contact"},
    ],
)
def test_dataverse_properties_that_contradict_the_body_are_rejected(properties):
    decision = decide(wire(campaign_log()), DEFAULTS, properties=properties)
    assert decision.outcome is Outcome.REJECTED and "altered or not posted" in decision.reason


def test_no_recipient_is_rejected():
    decision = decision_for(recipient=None)
    assert decision.outcome is Outcome.REJECTED and decision.reason.startswith("no recipient")


def test_several_different_recipients_are_ambiguous():
    decision = decision_for(
        recipient=None,
        lookups={"concep_contactid": reference("contact", CONTACTS[0]), "concep_leadid": reference("lead", LEADS[0])},
    )
    assert decision.outcome is Outcome.REJECTED
    assert decision.reason.startswith("ambiguous recipient") and "RECIPIENT_COLUMNS" in decision.reason


def test_the_same_recipient_in_two_lookups_is_not_ambiguous():
    decision = decision_for(lookups={"concep_contactid": reference("contact", CONTACTS[0].upper())})
    assert decision.recipient == Recipient("contact", CONTACTS[0])


def test_recipient_columns_pick_the_first_non_empty_column_in_order():
    settings = Settings.from_env({"RECIPIENT_COLUMNS": "concep_contactid;concep_leadid"})
    context = campaign_log(
        recipient=None,
        lookups={
            "concep_contactid": None,  # empty: skipped
            "concep_leadid": reference("lead", LEADS[1]),
            "concep_accountid": reference("account", ACCOUNTS[0]),  # not listed: never considered
        },
    )
    assert decide(wire(context), settings).recipient == Recipient("lead", LEADS[1])


def test_a_first_recipient_column_pointing_at_another_table_is_rejected_not_passed_over():
    # The first non-empty listed column decides: a later column never stands in for a log whose recipient
    # column names a system user, so a crafted log cannot opt out the contact of its second column.
    settings = Settings.from_env({"RECIPIENT_COLUMNS": "concep_ownerid;concep_contactid"})
    context = campaign_log(
        recipient=None,
        lookups={
            "concep_ownerid": reference("systemuser", CONTACTS[2]),
            "concep_contactid": reference("contact", CONTACTS[0]),
        },
    )
    decision = decide(wire(context), settings)
    assert decision.outcome is Outcome.REJECTED and decision.recipient is None
    assert "concep_ownerid" in decision.reason and "systemuser" in decision.reason


def test_a_listed_recipient_column_that_holds_no_lookup_is_rejected():
    settings = Settings.from_env({"RECIPIENT_COLUMNS": "concep_contactid"})
    context = campaign_log(recipient=None, lookups={"concep_contactid": "a1000000-0000-4000-8000-000000000001"})
    decision = decide(wire(context), settings)
    assert decision.outcome is Outcome.REJECTED and "does not hold a lookup" in decision.reason


def test_a_forged_label_is_cut_before_anything_reads_it():
    decision = decision_for(activity="Spam Report" + "x" * 100_000)
    assert decision.outcome is Outcome.IGNORED and decision.activity_type is not None
    assert len(decision.activity_type.label or "") <= 256


def test_recipient_columns_that_name_nothing_are_rejected():
    settings = Settings.from_env({"RECIPIENT_COLUMNS": "concep_contactid"})
    decision = decision_for(settings=settings)  # the builder uses concep_recipientid
    assert decision.outcome is Outcome.REJECTED and "concep_contactid" in decision.reason


def test_owner_and_other_system_lookups_are_not_recipients():
    # ownerid (systemuser) is present in every real Target; only contact/lead/account count.
    assert decision_for().recipient == Recipient("contact", CONTACTS[0])


@pytest.mark.parametrize(
    "bad_id",
    [
        "not-a-guid",
        "a1000000-0000-4000-8000-00000000000",
        "') or 1 eq 1 or ('",
        "a1000000-0000-4000-8000-000000000001/../../accounts",
    ],
)
def test_recipient_ids_must_be_guids_because_they_go_into_urls(bad_id):
    decision = decision_for(recipient=None, lookups={"concep_recipientid": reference("contact", bad_id)})
    assert decision.outcome is Outcome.REJECTED and "not a GUID" in decision.reason


def test_recipient_ids_are_normalised_to_lowercase():
    decision = decision_for(recipient=("contact", "{" + CONTACTS[0].upper() + "}"))
    assert decision.recipient.id == CONTACTS[0]


def test_switched_off_opt_out_is_not_forwarded_but_bounces_still_are():
    for name in ("AzureWebJobs.BulkEmailOptOut.Disabled", "AzureWebJobs_BulkEmailOptOut_Disabled"):
        settings = Settings.from_env({name: "true"})
        opt_out = decision_for(activity="Spam Report", settings=settings)
        assert opt_out.outcome is Outcome.IGNORED and "BulkEmailOptOut is switched off" in opt_out.reason
        assert decision_for(activity="Hard Bounce", settings=settings).route is Route.BOUNCE


def test_switched_off_bounce_is_not_forwarded_but_opt_outs_still_are():
    settings = Settings.from_env({"AzureWebJobs.BounceDetail.Disabled": "1"})
    assert decision_for(activity="Hard Bounce", settings=settings).outcome is Outcome.IGNORED
    assert decision_for(activity="Spam Report", settings=settings).route is Route.OPT_OUT


def test_unescaped_slashes_non_ascii_unknown_keys_and_offsets_are_read_alike():
    context = campaign_log(
        name="Frühjahrs-Newsletter – Ελληνικά",
        BrandNewMember={"x": [1, 2]},
        OperationCreatedOn="/Date(1741944415000-0700)/",
    )
    escaped = decide(wire(context), DEFAULTS)
    plain = decide(wire(context, escape_slashes=False), DEFAULTS)
    bom = decide(wire(context, bom=True), DEFAULTS)
    assert escaped == plain == bom
    assert escaped.outcome is Outcome.ROUTED


def test_a_context_missing_newer_top_level_keys_is_still_read():
    context = campaign_log(
        InitiatingUserAgent=OMIT, UserAzureActiveDirectoryObjectId=OMIT, InitiatingUserAzureActiveDirectoryObjectId=OMIT
    )
    assert decide(wire(context), DEFAULTS).outcome is Outcome.ROUTED


def test_a_createdon_wrapped_as_a_typed_datetime_is_unwrapped():
    decision = decision_for(activity="Hard Bounce", bounce_reason="550", wrap_dates=True)
    assert decision.work_item.occurred_on == "2025-03-14T09:26:53Z"
    settings = Settings.from_env({"BOUNCE_UPDATE": '{"x_bouncedon": "{occurred_on}"}'})
    assert bounce_changes(settings.bounce_update, decision.work_item) == {"x_bouncedon": "2025-03-14T09:26:53Z"}


@pytest.mark.parametrize(
    "value, kind",
    [
        (True, "a yes/no column"),
        (False, "a yes/no column"),
        (options(100000003), "a multi-select choice column"),
        (options(100000003, 100000004), "a multi-select choice column"),
    ],
)
def test_yes_no_and_multi_select_activity_columns_are_rejected_saying_what_is_supported(value, kind):
    decision = decision_for(activity=value)
    assert decision.outcome is Outcome.REJECTED
    assert f"the campaign log's concep_activitytype is {kind}" in decision.reason
    assert "yes/no and multi-select choice columns are not supported" in decision.reason
    assert "ACTIVITY_TYPE_COLUMN" in decision.reason and "choice, text or lookup" in decision.reason


@pytest.mark.parametrize(
    "value, label, kind",
    [
        (True, "Yes", "a yes/no column"),
        ("100000003,100000004", "Spam Report; Group Opt out", "a multi-select choice column"),
        ("100000003", "Spam Report", "a multi-select choice column"),
    ],
)
def test_a_re_read_row_names_yes_no_and_multi_select_columns_alike(value, label, kind):
    # The Web API returns a multi-select choice as a string of comma-separated codes with its labels.
    row = web_api_row(
        **{"concep_activitytype": value, "concep_activitytype@OData.Community.Display.V1.FormattedValue": label}
    )
    decision = decide_row(decision_for(trimmed=True), row, DEFAULTS)
    assert decision.outcome is Outcome.REJECTED
    assert f"concep_activitytype is {kind}: yes/no and multi-select choice columns are not supported" in decision.reason


def test_a_re_read_text_column_of_digits_is_still_text():
    row = web_api_row(concep_activitytype="100000003,100000004")
    del row["concep_activitytype@OData.Community.Display.V1.FormattedValue"]
    decision = decide_row(decision_for(trimmed=True), row, DEFAULTS)
    assert decision.outcome is Outcome.IGNORED and "'100000003,100000004'" in decision.reason


def test_createdon_with_an_offset_is_read_as_utc_milliseconds():
    context = campaign_log(extra_attributes={"createdon": "/Date(1741944413000+0000)/"})
    assert decide(wire(context), DEFAULTS).work_item.occurred_on == "2025-03-14T09:26:53Z"


@pytest.mark.parametrize(
    "body, content_type, words",
    [
        (MSBIN1_BODY, "application/msbin1", "message format to JSON"),
        (MSBIN1_BODY, "application/json", ".NET Binary"),
        (XML_BODY, "application/xml", "XML"),
        (XML_BODY, None, "XML"),
        (b'{"a":1}', "text/plain", "not application/json"),
        (b"", "application/json", "empty"),
        (b'{"MessageName": "Cre', "application/json", "not valid JSON"),
        (b"\xff\xfe{}", "application/json", "not UTF-8"),
        (b"[1, 2]", "application/json", "not a Dataverse"),
    ],
)
def test_unreadable_bodies_are_rejected_with_what_to_change(body, content_type, words):
    decision = decide(body, DEFAULTS, content_type=content_type)
    assert decision.outcome is Outcome.REJECTED
    assert words in decision.reason


def test_a_body_with_charset_parameter_is_json():
    body = wire(campaign_log())
    assert decide(body, DEFAULTS, content_type="application/json; charset=utf-8").outcome is Outcome.ROUTED


def test_wrong_types_in_fields_are_rejected_not_crashed():
    context = campaign_log()
    for key, value in [
        ("MessageName", 5),
        ("PrimaryEntityId", "zzz"),
        ("InputParameters", {"Target": 1}),
        ("OrganizationId", ["x"]),
    ]:
        broken = dict(context, **{key: value})
        decision = decide(json.dumps(broken).encode(), DEFAULTS)
        assert decision.outcome is Outcome.REJECTED, key
        assert key.split(".")[0] in decision.reason, decision.reason


class AddedRoute(StrEnum):
    UNSUBSCRIBE = "unsubscribe"


# A fourth function, added to the table in memory only: one row, as docs/architecture.md's walkthrough adds one.
UNSUBSCRIBE = Function(
    "UnsubscribeAll",
    "UNSUBSCRIBE_QUEUE",
    "unsubscribe",
    AddedRoute.UNSUBSCRIBE,
    "unsubscribe",
    "UNSUBSCRIBE_ACTIVITY_TYPES",
    "Unsubscribe All",
)
WITH_UNSUBSCRIBE = (*FUNCTIONS, UNSUBSCRIBE)


def test_a_function_added_to_the_table_is_routed_settled_and_listed():
    settings = Settings.from_env({"UNSUBSCRIBE_QUEUE": "unsubscribe-all"}, WITH_UNSUBSCRIBE)
    # routed: its activity types reach it, and the existing routes are unchanged
    decision = decision_for(activity="unsubscribe-all", settings=settings)
    assert decision.outcome is Outcome.ROUTED and decision.route == AddedRoute.UNSUBSCRIBE
    assert type_route("Unsubscribe All", None, settings) == "unsubscribe"
    assert decision_for(activity="Spam Report", settings=settings).route is Route.OPT_OUT
    # settled: the work item goes to its trigger queue
    message = forward(decision.work_item, settings)
    assert message.queue == "unsubscribe-all" and message.message_id == f"{LOG_ID}:unsubscribe"
    # listed: check's listing, the generated app settings and the README table carry its settings and toggle
    shown = {s.name: value for s, value in settings.effective()}
    assert shown["UNSUBSCRIBE_QUEUE"] == "unsubscribe-all"
    assert shown["UNSUBSCRIBE_ACTIVITY_TYPES"] == "Unsubscribe All"
    assert shown["AzureWebJobs.UnsubscribeAll.Disabled"] == "false"
    listed = spec(WITH_UNSUBSCRIBE)
    generated = appsettings.document(listed)["defaults"]
    assert generated["UNSUBSCRIBE_ACTIVITY_TYPES"] == "Unsubscribe All"
    assert "`UNSUBSCRIBE_QUEUE` | `unsubscribe`" in appsettings.readme_table(listed)
    # ignored types now name it among the routes
    reason = decision_for(activity="Open", settings=settings).reason
    assert reason.endswith("is not an opt-out, bounce or unsubscribe type"), reason


def test_the_settings_checks_cover_an_added_function():
    with pytest.raises(SettingsError, match="OPT_OUT_ACTIVITY_TYPES and UNSUBSCRIBE_ACTIVITY_TYPES both list"):
        Settings.from_env({"UNSUBSCRIBE_ACTIVITY_TYPES": "Spam Report"}, WITH_UNSUBSCRIBE)
    with pytest.raises(SettingsError, match="UNSUBSCRIBE_QUEUE and REJECTED_QUEUE must be 5 different queues"):
        Settings.from_env({"UNSUBSCRIBE_QUEUE": "bounce"}, WITH_UNSUBSCRIBE)
    with pytest.raises(SettingsError, match="UNSUBSCRIBE_QUEUE must be a Service Bus queue name"):
        Settings.from_env({"UNSUBSCRIBE_QUEUE": "un subscribe"}, WITH_UNSUBSCRIBE)
    off = Settings.from_env({"AzureWebJobs.UnsubscribeAll.Disabled": "true"}, WITH_UNSUBSCRIBE)
    assert decision_for(activity="Unsubscribe All", settings=off).reason == (
        "UnsubscribeAll is switched off (AzureWebJobs.UnsubscribeAll.Disabled)"
    )
