"""check --connect's findings: each way a configuration can disagree with the environment, found and explained."""

from collections.abc import Mapping
from typing import Any

from optout_core.cli.findings import Finding
from optout_core.cli.registration import Registration
from optout_core.cli.schema import Column, Option, Table, deepest, shortfalls
from optout_core.cli.schema_check import (
    Facts,
    activity_type_findings,
    findings,
    privilege_findings,
    recipient_findings,
    registration_findings,
    table_findings,
    update_findings,
    workflow_findings,
)
from optout_core.domain.settings import Settings

TYPES = (
    Option(100000003, "Spam Report"),
    Option(100000004, "Group Opt out"),
    Option(100000005, "Client Opt Out"),
    Option(100000006, "User Opt Out"),
    Option(100000007, "Hard Bounce"),
    Option(100000008, "Soft Bounce"),
    Option(100000009, "Spam Complaint"),
)
MESSAGE, FILTER, ENDPOINT = (f"{n}0000000-0000-4000-8000-000000000000" for n in "123")


def _privileges(table: str) -> dict[str, tuple[str, str]]:
    return {kind: (f"{kind}-{table}", f"prv{kind}{table}") for kind in ("Read", "Write")}


LOG = Table(
    "concep_emailcampaignlog",
    "concep_emailcampaignlogs",
    "Email Campaign Log",
    True,
    {
        "concep_activitytype": Column("concep_activitytype", "Picklist", options=TYPES),
        "concep_recipientid": Column("concep_recipientid", "Lookup", targets=("contact", "lead", "account")),
        "concep_bouncereason": Column("concep_bouncereason", "String"),
    },
    _privileges("concep_emailcampaignlog"),
)
PERSON = {
    "donotbulkemail": Column("donotbulkemail", "Boolean"),
    "description": Column("description", "Memo"),
    "fullname": Column("fullname", "String", updatable=False),
    "preferredcontactmethodcode": Column("preferredcontactmethodcode", "Picklist", options=(Option(1, "Any"),)),
}
RECIPIENTS = {
    name: Table(name, f"{name}s", name, False, PERSON, _privileges(name)) for name in ("contact", "lead", "account")
}


def _settings(**env: str) -> Settings:
    return Settings.from_env(
        {"USER_OPT_OUT_ACTIVITY_TYPES": "User Opt Out", "BOUNCE_ACTIVITY_TYPES": "Hard Bounce", **env}
    )


def _codes(found: list[Finding], severity: str = "error") -> list[str]:
    return [f.code for f in found if f.severity == severity]


def test_a_missing_table_or_a_wrong_entity_set_is_an_error_with_its_fix() -> None:
    [missing] = table_findings(_settings(), None)
    assert (missing.code, missing.fix) == ("campaign_log.table_missing", "run `discover` and set CAMPAIGN_LOG_TABLE")
    [wrong] = table_findings(_settings(CAMPAIGN_LOG_ENTITY_SET="concep_logs"), LOG)
    assert wrong.severity == "error" and wrong.fix == "set CAMPAIGN_LOG_ENTITY_SET=concep_emailcampaignlogs"


def test_a_typo_in_a_type_list_is_an_error_naming_the_nearest_option() -> None:
    found, options = activity_type_findings(
        _settings(OPT_OUT_ACTIVITY_TYPES="Spam Reprot;Group Opt out;100000015"), LOG
    )
    errors = [f for f in found if f.severity == "error"]
    assert [f.code for f in errors] == ["activity_type.unknown_option"] * 2
    assert (
        "'Spam Reprot', which is no option of concep_activitytype (nearest: 100000003 'Spam Report')"
        in errors[0].message
    )
    assert "'100000015'" in errors[1].message
    assert options == TYPES


def test_options_that_look_like_opt_outs_but_are_in_no_list_are_warned_about() -> None:
    found, _ = activity_type_findings(_settings(), LOG)
    unlisted = [f.message for f in found if f.code == "activity_type.unlisted"]
    assert [m.split(" but")[0] for m in unlisted] == [
        "option 100000008 'Soft Bounce' looks like bounce",
        "option 100000009 'Spam Complaint' looks like opt out",
    ]
    assert _codes(found) == []


def test_an_entry_of_a_default_list_that_the_solution_lacks_is_only_a_warning() -> None:
    found, _ = activity_type_findings(Settings.from_env({}), LOG)  # the defaults list "Bounce", "Account Opt Out"
    assert _codes(found) == []
    assert {f.message.split(",")[0] for f in found if f.code == "activity_type.unknown_option"} == {
        "BOUNCE_ACTIVITY_TYPES lists 'Bounce'",
        "USER_OPT_OUT_ACTIVITY_TYPES lists 'Account Opt Out'",
    }


def test_the_activity_type_column_must_exist_and_be_of_a_kind_that_names_a_type() -> None:
    assert _codes(activity_type_findings(_settings(ACTIVITY_TYPE_COLUMN="concep_type"), LOG)[0]) == [
        "activity_type.column_missing"
    ]
    boolean = Table(
        LOG.name, LOG.entity_set, "", True, {"concep_activitytype": Column("concep_activitytype", "Boolean")}
    )
    assert _codes(activity_type_findings(_settings(), boolean)[0]) == ["activity_type.kind"]
    text = Table(LOG.name, LOG.entity_set, "", True, {"concep_activitytype": Column("concep_activitytype", "String")})
    assert _codes(activity_type_findings(_settings(), text)[0], "warning") == ["activity_type.unchecked"]


def test_recipient_columns_must_be_lookups_to_a_person_and_unset_ones_warn_when_ambiguous() -> None:
    assert _codes(recipient_findings(_settings(RECIPIENT_COLUMNS="concep_bouncereason"), LOG)) == ["recipient.column"]
    assert _codes(recipient_findings(_settings(RECIPIENT_COLUMNS="concep_recipientid"), LOG), "ok") == [
        "recipient.columns"
    ]
    two = Table(
        LOG.name,
        LOG.entity_set,
        "",
        True,
        {**LOG.columns, "concep_leadid": Column("concep_leadid", "Lookup", targets=("lead",))},
    )
    [ambiguous] = recipient_findings(_settings(), two)
    assert ambiguous.code == "recipient.ambiguous" and ambiguous.fix.startswith(
        "set RECIPIENT_COLUMNS=concep_leadid;concep_recipientid"
    )


def test_update_columns_must_exist_be_updatable_and_take_the_value_on_every_recipient_table() -> None:
    assert _codes(update_findings(_settings(), RECIPIENTS, LOG), "ok") == ["update.columns"]
    lead_without = {**RECIPIENTS, "lead": Table("lead", "leads", "", False, {})}
    [missing] = update_findings(_settings(), lead_without, LOG)
    assert "writes donotbulkemail on lead, which does not exist" in missing.message
    cases = {
        '{"donotbulkemail": true, "description": 5}': "is a Memo column and cannot take 5",
        '{"donotbulkemail": true, "fullname": "x"}': "is not valid for update",
        '{"donotbulkemail": true, "preferredcontactmethodcode": 7}': "is a choice column with no option 7",
    }
    for update, says in cases.items():
        found = update_findings(_settings(OPT_OUT_UPDATE=update), RECIPIENTS, LOG)
        assert found and all(says in f.message for f in found if f.severity == "error"), update


def test_a_bounce_detail_column_that_is_missing_is_an_error_only_when_the_update_uses_it() -> None:
    settings = _settings(BOUNCE_DETAIL_COLUMN="concep_reason")
    assert _codes(update_findings(settings, RECIPIENTS, LOG), "warning") == ["bounce.detail_column"]
    uses = _settings(BOUNCE_DETAIL_COLUMN="concep_reason", BOUNCE_UPDATE='{"description": "{detail}"}')
    assert _codes(update_findings(uses, RECIPIENTS, LOG)) == ["bounce.detail_column"]


def _facts(held: Mapping[str, str], registration: Registration | None = None) -> Facts:
    return Facts(LOG, RECIPIENTS, "app-user", held, registration or _registration())


def test_each_missing_or_shallow_privilege_is_an_error_naming_it() -> None:
    everything = {f"prv{k}{t}": "Global" for t in ("contact", "lead", "account") for k in ("Read", "Write")} | {
        "prvReadconcep_emailcampaignlog": "Global"
    }
    assert _codes(privilege_findings(_settings(), _facts(everything)), "ok") == ["privileges"]
    held = {n: d for n, d in everything.items() if n != "prvWritelead"} | {"prvReadconcep_emailcampaignlog": "Local"}
    found = privilege_findings(_settings(), _facts(held))
    assert sorted((f.code, f.message) for f in found) == [
        (
            "privileges.depth",
            "application user app-user: Read on concep_emailcampaignlog (prvReadconcep_emailcampaignlog): holds it "
            "at Local depth, needs Global",
        ),
        (
            "privileges.missing",
            "application user app-user: Write on lead (prvWritelead): does not hold it, needs Global",
        ),
    ]


def _registration(
    endpoint: Mapping[str, Any] | None = None, step: Mapping[str, Any] | None = None, **kw: Any
) -> Registration:
    endpoint = {
        "serviceendpointid": ENDPOINT,
        "name": "optout",
        "path": "campaign-log",
        "contract": 2,
        "messageformat": 2,
        **(endpoint or {}),
    }
    step = {
        "name": "s",
        "_sdkmessageid_value": MESSAGE,
        "_sdkmessagefilterid_value": FILTER,
        "statecode": 0,
        "mode": 1,
        "stage": 40,
        **(step or {}),
    }
    return Registration(
        (endpoint,), {ENDPOINT: (step,)}, MESSAGE, {"sdkmessagefilterid": FILTER}, kw.get("workflows", ())
    )


def test_the_registration_must_post_json_to_the_queue_from_an_enabled_async_post_operation_create_step() -> None:
    settings = _settings()
    assert _codes(registration_findings(settings, _registration()), "ok") == ["registration"]
    assert _codes(registration_findings(settings, _registration({"path": "other"}))) == [
        "registration.endpoint_missing"
    ]
    assert _codes(registration_findings(settings, _registration({"messageformat": 1}))) == ["registration.format"]
    assert _codes(registration_findings(settings, _registration({"contract": 8}))) == ["registration.contract"]
    sync = registration_findings(settings, _registration(step={"mode": 0}))
    assert _codes(sync) == ["registration.step", "registration.step_missing"] and "synchronous" in sync[0].message
    other_table = registration_findings(settings, _registration(step={"_sdkmessagefilterid_value": "elsewhere"}))
    assert _codes(other_table) == ["registration.step_missing"]


def test_concep_workflows_still_activated_are_warned_about_by_name() -> None:
    workflows = (
        {"workflowid": "w1", "name": "Concep Opt Out (child)", "statecode": 1, "primaryentity": LOG.name},
        {"workflowid": "w2", "name": "Concep Bounce Detail", "statecode": 0, "primaryentity": LOG.name},
    )
    [active] = workflow_findings(_settings(), _registration(workflows=workflows))
    assert "'Concep Opt Out (child)' (w1) is activated" in active.message and "handled twice" in active.message


def test_all_findings_come_together_with_the_option_route_table() -> None:
    everything = {f"prv{k}{t}": "Global" for t in ("contact", "lead", "account") for k in ("Read", "Write")} | {
        "prvReadconcep_emailcampaignlog": "Global"
    }
    found, options = findings(_settings(), _facts(everything))
    assert _codes(found) == []
    assert {o["label"]: o["route"] for o in options}["User Opt Out"] == "user_opt_out"


def test_the_deepest_grant_of_each_privilege_counts_whether_named_or_numbered() -> None:
    grants = [
        {"PrivilegeName": "prvWriteContact", "Depth": "Basic"},
        {"PrivilegeName": "prvWriteContact", "Depth": 3},
        {"PrivilegeName": "prvReadLead", "Depth": "Local"},
        {"PrivilegeName": "prvReadAccount", "Depth": "RecordFilter"},
    ]
    assert deepest(grants) == {"prvWriteContact": "Global", "prvReadLead": "Local"}


def test_a_privilege_short_of_the_depth_needed_is_named_with_both_depths() -> None:
    contact = Table("contact", "contacts", "Contact", False, privileges={"Write": ("1", "prvWriteContact")})
    [short] = shortfalls({"prvWriteContact": "Deep"}, [(contact, "Write", "Global")])
    assert short.describe() == "Write on contact (prvWriteContact): holds it at Deep depth, needs Global"
    assert shortfalls({"prvWriteContact": "Global"}, [(contact, "Write", "Global")]) == []
    assert shortfalls({}, [(contact, "Write", "Basic")])[0].held is None


def test_a_refused_re_read_is_an_error_naming_the_functions_and_the_columns_the_log_lacks() -> None:
    from optout_core.cli.schema_check import RowRead, read_findings
    from optout_core.dataverse.errors import DataverseRejected

    refused = DataverseRejected("Dataverse answered 400", status=400, code="0x0")
    select = ("concep_activitytype", "concep_bouncereason", "concep_reason", "createdon", "_concep_recipientid_value")
    facts = Facts(LOG, RECIPIENTS, "app-user", {}, _registration(), (RowRead(("CampaignLogRouter",), select, refused),))
    [found] = read_findings(_settings(), facts)
    assert found.code == "campaign_log.read" and found.severity == "error"
    assert "CampaignLogRouter re-read the campaign log with $select=" + ",".join(select) in found.message
    assert "has no column concep_reason, createdon" in found.message  # the lookup's value column is its column
    worked = Facts(LOG, RECIPIENTS, "app-user", {}, _registration(), (RowRead(("BulkEmailOptOut",), select, None),))
    assert _codes(read_findings(_settings(), worked), "ok") == ["campaign_log.reads"]


def test_without_an_application_user_for_azure_client_id_privileges_are_an_error_saying_how_to_create_one() -> None:
    settings = _settings(AZURE_CLIENT_ID="0f0e0d0c-0000-4000-8000-0000000000aa")
    [found] = privilege_findings(settings, Facts(LOG, RECIPIENTS, None, {}, _registration()))
    assert found.code == "app_user.missing" and found.severity == "error"
    assert "Power Platform admin center" in found.fix and "Application users" in found.fix
