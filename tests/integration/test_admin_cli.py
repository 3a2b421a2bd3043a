"""discover, check --connect and setup against the Dataverse stand-in over real HTTP: what an administrator runs to
set up the Dataverse side, on the samples' schema and on one with other names, codes and lookups."""

import json
from typing import Any
from urllib.parse import unquote

import pytest

from optout_core.cli.check import connect_findings
from optout_core.dataverse.auth import StaticTokenCredential
from optout_core.dataverse.client import DataverseClient
from optout_core.domain.settings import Settings
from optout_dev.standin import CONCEP_WORKFLOWS, OTHER_WORKFLOWS, SDK_MESSAGE_IDS, Fault, filter_id
from tests.support.cli import cli
from tests.support.dataverse import TOKEN, standin_env

KEY = "c2VjcmV0LWtleS1uZXZlci1wcmludGVk"
CONNECTION = (
    "Endpoint=sb://optout-bus.servicebus.windows.net/;SharedAccessKeyName=dataverse-send;"
    f"SharedAccessKey={KEY};EntityPath=campaign-log"
)
SAMPLE_SETTINGS = {
    "OPT_OUT_ACTIVITY_TYPES": "100000003;Spam Report;100000004;Group Opt out;100000005;Client Opt Out",
    "BOUNCE_ACTIVITY_TYPES": "100000007;Hard Bounce;100000008;Soft Bounce",
    "USER_OPT_OUT_ACTIVITY_TYPES": "100000006;User Opt Out",
    "RECIPIENT_COLUMNS": "concep_contactid;concep_leadid;concep_recipientid",
    "DATAVERSE_ENDPOINT_CONNECTION_STRING": CONNECTION,
    "CONCEP_WORKFLOWS": "Concep Opt Out (child);Concep Bounce Detail",
}


def _json(*args: str, env: dict[str, str]) -> tuple[int, Any]:
    result = cli(*args, "--json", env=env)
    assert KEY not in result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def samples(make_standin):
    return make_standin(campaign_log=True, presets=("registration",))


# -- discover --------------------------------------------------------------------------------------


def test_discover_finds_the_samples_campaign_log_and_proposes_settings_by_code_and_label(samples) -> None:
    code, found = _json("discover", env=standin_env(samples))

    assert code == 0
    assert [c["table"] for c in found["candidates"]] == ["concep_emailcampaignlog"]
    assert found["candidates"][0]["activity_type_column"] == "concep_activitytype"
    assert found["settings"] == {
        "CAMPAIGN_LOG_TABLE": "concep_emailcampaignlog",
        "CAMPAIGN_LOG_ENTITY_SET": "concep_emailcampaignlogs",
        "ACTIVITY_TYPE_COLUMN": "concep_activitytype",
        "OPT_OUT_ACTIVITY_TYPES": SAMPLE_SETTINGS["OPT_OUT_ACTIVITY_TYPES"],
        "BOUNCE_ACTIVITY_TYPES": SAMPLE_SETTINGS["BOUNCE_ACTIVITY_TYPES"],
        "USER_OPT_OUT_ACTIVITY_TYPES": SAMPLE_SETTINGS["USER_OPT_OUT_ACTIVITY_TYPES"],
        "RECIPIENT_COLUMNS": SAMPLE_SETTINGS["RECIPIENT_COLUMNS"],
        "BOUNCE_DETAIL_COLUMN": "concep_bouncereason",
    }
    routes = {o["value"]: o["route"] for o in found["options"]}
    assert routes[100000003] == "opt_out" and routes[100000006] == "user_opt_out" and routes[100000001] == "ignored"


def test_discover_reads_another_schema_and_ranks_a_decoy_table_below_it(make_standin) -> None:
    other = make_standin(campaign_log="other")
    code, found = _json("discover", env=standin_env(other))

    assert code == 0
    assert [c["table"] for c in found["candidates"]] == ["cnc_maillog", "cnc_survey"]
    settings = found["settings"]
    assert (settings["CAMPAIGN_LOG_TABLE"], settings["ACTIVITY_TYPE_COLUMN"]) == ("cnc_maillog", "cnc_eventkind")
    # A polymorphic Customer lookup (account, contact) is tried after the single-table lookup to lead.
    assert settings["RECIPIENT_COLUMNS"] == "cnc_leadid;cnc_customerid"
    assert settings["OPT_OUT_ACTIVITY_TYPES"].split(";")[0::2] == ["717750001", "717750003", "717750005"]
    assert {o["route"] for o in found["options"] if o["label"] in ("Hard bounce", "Bounced - soft")} == {"bounce"}


def test_discover_can_be_told_the_table_and_says_so_when_none_qualifies(make_standin, samples) -> None:
    code, found = _json("discover", "--table", "concep_emailcampaignlog", env=standin_env(samples))
    assert code == 0 and found["settings"]["CAMPAIGN_LOG_TABLE"] == "concep_emailcampaignlog"

    bare = make_standin()
    code, found = _json("discover", env=standin_env(bare))
    assert (code, found) == (1, {"candidates": [], "settings": {}, "options": []})
    text = cli("discover", env=standin_env(bare))
    assert text.returncode == 1 and "is the Concep solution installed" in text.stdout


def test_discover_reads_an_organisation_whose_labels_are_in_german_only_and_says_so(samples) -> None:
    samples.base_language = 1031
    code, found = _json("discover", env=standin_env(samples))
    assert code == 0 and found["label_language"] == 1031
    assert found["settings"]["OPT_OUT_ACTIVITY_TYPES"] == SAMPLE_SETTINGS["OPT_OUT_ACTIVITY_TYPES"]
    assert not [r for r in samples.requests if "LabelLanguages" in r.path]
    text = cli("discover", env=standin_env(samples)).stdout
    assert "Option labels are in language 1031 (the organisation's own" in text


def test_label_languages_keeps_only_the_labels_of_the_languages_it_names(samples) -> None:
    samples.base_language = 1031
    client = DataverseClient(samples.url, StaticTokenCredential(TOKEN))
    try:
        english = client.get("EntityDefinitions(LogicalName='contact')?$select=DisplayName&LabelLanguages=1033")
        german = client.get("EntityDefinitions(LogicalName='contact')?$select=DisplayName")
    finally:
        client.close()
    assert english is not None and german is not None
    assert english["DisplayName"]["LocalizedLabels"] == []
    assert [label["LanguageCode"] for label in german["DisplayName"]["LocalizedLabels"]] == [1031]
    assert german["DisplayName"]["UserLocalizedLabel"]["LanguageCode"] == 1031


def test_discover_refuses_a_table_name_that_is_no_logical_name_before_asking_dataverse(samples) -> None:
    result = cli("discover", "--table", "concep_emailcampaignlog')/Attributes", env=standin_env(samples))
    assert result.returncode == 2 and "is not a logical name" in result.stderr
    assert not [r for r in samples.requests if "EntityDefinitions" in r.path]


# -- setup -----------------------------------------------------------------------------------------


def _ours(standin: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    [endpoint] = [e for e in standin.rows("serviceendpoint").values() if e["name"] == "optout campaign log"]
    [step] = list(standin.rows("sdkmessageprocessingstep").values())
    return endpoint, step


def test_setup_dry_run_changes_nothing_then_apply_registers_and_a_second_run_is_a_no_op(samples) -> None:
    env = standin_env(samples, **SAMPLE_SETTINGS)
    code, planned = _json("setup", "--dry-run", env=env)
    assert code == 0 and planned["dry_run"] is True
    assert [(c["action"], c["record"]) for c in planned["changes"]] == [
        ("create", "serviceendpoint"),
        ("create", "step"),
    ]
    assert samples.rows("serviceendpoint") == {} and samples.rows("sdkmessageprocessingstep") == {}

    code, done = _json("setup", env=env)
    assert code == 0 and done["dry_run"] is False
    endpoint, step = _ours(samples)
    assert [c["id"] for c in done["changes"]] == [endpoint["serviceendpointid"], step["sdkmessageprocessingstepid"]]
    assert (endpoint["contract"], endpoint["messageformat"], endpoint["authtype"], endpoint["userclaim"]) == (
        2,
        2,
        2,
        1,
    )
    assert (endpoint["path"], endpoint["saskeyname"], endpoint["saskey"]) == ("campaign-log", "dataverse-send", KEY)
    assert endpoint["namespaceaddress"] == "sb://optout-bus.servicebus.windows.net/"
    assert (step["stage"], step["mode"], step["asyncautodelete"], step["statecode"]) == (40, 1, True, 0)
    assert step["_sdkmessageid_value"] == SDK_MESSAGE_IDS["Create"]
    assert step["_sdkmessagefilterid_value"] == filter_id("Create", "concep_emailcampaignlog")
    assert step["_eventhandler_value"] == endpoint["serviceendpointid"]

    code, again = _json("setup", env=env)
    assert code == 0 and [c["action"] for c in again["changes"]] == ["none", "none"]
    text = cli("setup", env=env)
    assert "Nothing to change" in text.stdout and KEY not in text.stdout


def test_a_changed_setting_updates_the_records_in_place(samples) -> None:
    env = standin_env(samples, **SAMPLE_SETTINGS)
    assert cli("setup", env=env).returncode == 0
    before, _ = _ours(samples)
    moved = {
        **env,
        "CAMPAIGN_LOG_QUEUE": "dataverse-log",
        "DATAVERSE_ENDPOINT_CONNECTION_STRING": CONNECTION.replace("campaign-log", "dataverse-log"),
    }
    code, done = _json("setup", env=moved)
    assert code == 0 and [(c["action"], c["record"]) for c in done["changes"]] == [
        ("update", "serviceendpoint"),
        ("none", "step"),
    ]
    after, _ = _ours(samples)
    assert after["serviceendpointid"] == before["serviceendpointid"] and after["path"] == "dataverse-log"


def test_a_rotated_key_whose_answer_is_lost_is_read_back_without_selecting_the_unreadable_key(samples) -> None:
    env = standin_env(samples, **SAMPLE_SETTINGS)
    assert cli("setup", env=env).returncode == 0
    rotated = {**env, "DATAVERSE_ENDPOINT_CONNECTION_STRING": CONNECTION.replace(KEY, "bmV3LWtleQ==")}
    samples.inject(Fault(drop=True, after=True, method="PATCH", path_contains="serviceendpoints"))
    assert cli("setup", env=rotated).returncode == 0
    reads = [unquote(r.path) for r in samples.requests if r.method == "GET" and "serviceendpoints(" in r.path]
    assert reads and not [path for path in reads if "saskey" in path.split("$select=")[-1].split(",")]
    endpoint, _ = _ours(samples)
    assert endpoint["saskey"] == "bmV3LWtleQ=="


def test_remove_deletes_what_setup_made_and_nothing_else(samples) -> None:
    env = standin_env(samples, **SAMPLE_SETTINGS)
    assert cli("setup", env=env).returncode == 0
    other = standin_env(samples, **{**SAMPLE_SETTINGS, "DATAVERSE_ENDPOINT_NAME": "another integration"})
    assert cli("setup", env=other).returncode == 0

    code, done = _json("setup", "--remove", env=env)
    assert code == 0 and [(c["action"], c["record"]) for c in done["changes"]] == [
        ("delete", "step"),
        ("delete", "serviceendpoint"),
    ]
    assert [e["name"] for e in samples.rows("serviceendpoint").values()] == ["another integration"]
    assert len(samples.rows("sdkmessageprocessingstep")) == 1


def test_setup_deactivates_only_the_named_concep_workflows(samples) -> None:
    code, done = _json("setup", "--deactivate-workflows", env=standin_env(samples, **SAMPLE_SETTINGS))
    assert code == 0
    assert [(c["action"], c["name"]) for c in done["changes"] if c["record"] == "workflow"] == [
        ("update", "Concep Opt Out (child)"),
        ("update", "Concep Bounce Detail"),
    ]
    states = {row["name"]: row["statecode"] for row in samples.rows("workflow").values()}
    assert states["Concep Opt Out (child)"] == 0 and states["Concep Bounce Detail"] == 0
    assert states["Concep Email Campaign Log - Router"] == 1 and states["Welcome new contact"] == 1
    assert set(OTHER_WORKFLOWS) <= set(states) and set(CONCEP_WORKFLOWS) <= set(states)


def test_a_workflow_name_shaped_like_a_guid_is_looked_up_by_name(samples) -> None:
    """36 characters and four hyphens, but no GUID: a quoted name, never an unquoted id (a 400 from Dataverse)."""
    named = {
        **SAMPLE_SETTINGS,
        "CONCEP_WORKFLOWS": "Opt-out bounce-handler v2-final-copy;Concep Bounce Detail;Concep: a/b & c=d?",
    }
    code, done = _json("setup", "--deactivate-workflows", env=standin_env(samples, **named))
    assert code == 0
    assert [c["name"] for c in done["changes"] if c["record"] == "workflow"] == ["Concep Bounce Detail"]
    asked = [unquote(r.path) for r in samples.requests if "/workflows?" in r.path]
    assert any("name eq 'Opt-out bounce-handler v2-final-copy'" in path for path in asked)
    # The characters the filter-rows page lists travel URL-encoded inside the string value.
    assert any("'Concep%3A%20a%2Fb%20%26%20c%3Dd%3F'" in r.path for r in samples.requests)


def test_setup_refuses_without_the_administrator_privileges_it_needs_and_writes_nothing(samples) -> None:
    everything = set(samples.privileges)
    samples.set_privileges(everything - {"prvCreateSdkMessageProcessingStep"})
    result = cli("setup", env=standin_env(samples, **SAMPLE_SETTINGS))
    assert result.returncode == 1
    assert "setup refused: this identity lacks prvCreateSdkMessageProcessingStep" in result.stdout
    assert samples.rows("serviceendpoint") == {}


# -- check --connect -------------------------------------------------------------------------------


def test_check_connect_proves_a_configuration_after_discover_and_setup(samples) -> None:
    env = standin_env(samples, **SAMPLE_SETTINGS)
    code, before = _json("check", "--connect", env=env)
    assert code == 1 and "registration.endpoint_missing" in [f["code"] for f in before["findings"]]

    assert cli("setup", "--deactivate-workflows", env=env).returncode == 0
    code, after = _json("check", "--connect", env=env)
    assert code == 0 and after["ok"] is True
    assert [f["code"] for f in after["findings"] if f["severity"] != "ok"] == []
    assert {o["label"]: o["route"] for o in after["options"]}["Hard Bounce"] == "bounce"


def _codes(standin: Any, severity: str = "error", **env: str) -> list[str]:
    settings = Settings.from_env(standin_env(standin, **{**SAMPLE_SETTINGS, **env}))
    found, _ = connect_findings(settings)
    return [f.code for f in found if f.severity == severity]


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"CAMPAIGN_LOG_TABLE": "concep_campaignlog"}, "campaign_log.table_missing"),
        ({"CAMPAIGN_LOG_ENTITY_SET": "concep_logs"}, "campaign_log.entity_set"),
        ({"ACTIVITY_TYPE_COLUMN": "concep_type"}, "activity_type.column_missing"),
        ({"ACTIVITY_TYPE_COLUMN": "createdon"}, "activity_type.kind"),
        ({"OPT_OUT_ACTIVITY_TYPES": "Spam Reprot;100000004"}, "activity_type.unknown_option"),
        ({"RECIPIENT_COLUMNS": "concep_bouncereason"}, "recipient.column"),
        ({"OPT_OUT_UPDATE": '{"donotbulkemail": true, "new_optedout": true}'}, "update.column"),
        ({"OPT_OUT_UPDATE": '{"donotbulkemail": true, "description": 5}'}, "update.column"),
        (
            {"BOUNCE_DETAIL_COLUMN": "concep_reason", "BOUNCE_UPDATE": '{"description": "{detail}"}'},
            "bounce.detail_column",
        ),
    ],
)
def test_check_connect_finds_each_misconfiguration(samples, env: dict[str, str], code: str) -> None:
    assert cli("setup", env=standin_env(samples, **SAMPLE_SETTINGS)).returncode == 0
    assert code in _codes(samples, **env)


def test_check_connect_names_a_missing_privilege_of_the_application_user(samples) -> None:
    samples.set_privileges(set(samples.privileges) - {"prvWriteLead"})
    assert "privileges.missing" in _codes(samples)


def _privilege_findings(standin: Any) -> list[Any]:
    settings = Settings.from_env(standin_env(standin, **SAMPLE_SETTINGS))
    found, _ = connect_findings(settings)
    return [f for f in found if f.code.startswith("privileges")]


def test_check_connect_refuses_user_depth_write_on_contact_and_says_what_to_change(samples) -> None:
    user_depth = dict.fromkeys(samples.privileges, "Global") | {"prvWriteContact": "Basic"}
    samples.set_privilege_depths(user_depth)
    [found] = [f for f in _privilege_findings(samples) if f.severity == "error"]
    assert found.code == "privileges.depth"
    assert "Write on contact (prvWriteContact): holds it at Basic depth, needs Global" in found.message
    assert "give Write on contact Global (Organization) depth" in found.fix


def test_check_connect_counts_a_team_role_at_its_real_depth(samples) -> None:
    """RetrieveUserPrivileges would say Basic for the team's grant; the effective depth is Global."""
    user_depth = dict.fromkeys(samples.privileges, "Global") | {"prvWriteContact": "Basic"}
    samples.set_privilege_depths(user_depth, team={"prvWriteContact": "Global"})
    assert [f.severity for f in _privilege_findings(samples)] == ["ok"]


def test_check_connect_finds_a_registration_that_would_break_delivery(samples) -> None:
    env = standin_env(samples, **SAMPLE_SETTINGS)
    assert cli("setup", env=env).returncode == 0
    endpoint, step = _ours(samples)
    client = DataverseClient(samples.url, StaticTokenCredential(TOKEN))
    try:
        client.patch("sdkmessageprocessingsteps", step["sdkmessageprocessingstepid"], {"mode": 0})
        assert _codes(samples) == ["registration.step", "registration.step_missing"]
        client.patch("serviceendpoints", endpoint["serviceendpointid"], {"messageformat": 1})
        assert "registration.format" in _codes(samples)
    finally:
        client.close()
    assert "workflow.active" in _codes(samples, "warning")


def test_an_application_user_that_may_not_read_the_registration_is_told_to_ask_an_administrator(samples) -> None:
    samples.set_privileges(set(samples.privileges) - {"prvReadServiceEndpoint", "prvReadUser"})
    settings = Settings.from_env(standin_env(samples, **SAMPLE_SETTINGS))
    found, _ = connect_findings(settings)
    unreadable = {f.code: f for f in found if f.severity == "warning" and f.code.endswith(".unreadable")}
    assert set(unreadable) >= {"registration.unreadable"}
    assert unreadable["registration.unreadable"].fix.startswith("run `check --connect` as a Dataverse administrator")
    assert [f.code for f in found if f.severity == "error"] == []


def test_a_step_deleted_by_hand_is_made_again_on_the_endpoint_that_exists(samples) -> None:
    env = standin_env(samples, **SAMPLE_SETTINGS)
    assert cli("setup", env=env).returncode == 0
    endpoint, step = _ours(samples)
    client = DataverseClient(samples.url, StaticTokenCredential(TOKEN))
    try:
        assert client.delete("sdkmessageprocessingsteps", step["sdkmessageprocessingstepid"])
    finally:
        client.close()

    code, done = _json("setup", env=env)
    assert code == 0 and [(c["action"], c["record"]) for c in done["changes"]] == [
        ("none", "serviceendpoint"),
        ("create", "step"),
    ]
    again, made = _ours(samples)
    assert again == endpoint and made["_eventhandler_value"] == endpoint["serviceendpointid"]


def test_a_change_dataverse_refuses_stops_setup_and_says_what_was_made(samples) -> None:
    samples.inject(Fault(status=400, method="POST", path_contains="sdkmessageprocessingsteps"))
    code, done = _json("setup", env=standin_env(samples, **SAMPLE_SETTINGS))
    assert code == 1 and "Dataverse refused a change" in done["error"]
    assert [(c["action"], c["record"]) for c in done["changes"]] == [("create", "serviceendpoint")]
    assert len(samples.rows("serviceendpoint")) == 1 and samples.rows("sdkmessageprocessingstep") == {}


def test_check_connect_checks_the_consent_write_when_only_topics_turn_it_on(make_standin) -> None:
    from optout_dev.standin import NEWSLETTER_TOPIC_ID

    journeys = make_standin(campaign_log=True, presets=("registration", "journeys"))
    settings = Settings.from_env(standin_env(journeys, **SAMPLE_SETTINGS, CONSENT_TOPIC_IDS=NEWSLETTER_TOPIC_ID))
    found, _ = connect_findings(settings)
    assert any(f.code.startswith("consent.") and f.code != "consent.off" for f in found)


def _log_reads(standin: Any) -> list[str]:
    return [
        unquote(r.path).split("?", 1)[1]
        for r in standin.requests
        if r.method == "GET" and unquote(r.path).split("?")[0].endswith("/concep_emailcampaignlogs") and "?" in r.path
    ]


def test_check_connect_makes_each_campaign_log_re_read_the_app_makes_with_exactly_its_select(samples) -> None:
    from optout_core.domain.model import Route
    from optout_core.domain.routing import row_select

    env = {"BOUNCE_UPDATE": '{"description": "{detail}"}'}
    settings = Settings.from_env(standin_env(samples, **{**SAMPLE_SETTINGS, **env}))
    found, _ = connect_findings(settings)
    reads = _log_reads(samples)
    for route in (None, Route.OPT_OUT, Route.BOUNCE):
        assert f"$select={','.join(row_select(settings, route))}&$top=1" in reads, route
    assert "campaign_log.reads" in [f.code for f in found if f.severity == "ok"]


def test_a_re_read_dataverse_refuses_is_an_error_naming_who_reads_it(samples) -> None:
    # The metadata looks right, but the read itself is refused: only making the read proves it.
    samples.inject(
        Fault(
            status=400,
            code="0x0",
            message="Could not find a property named 'concep_contactid'.",
            method="GET",
            path_contains="$top=1",
        ),
        times=3,
    )
    settings = Settings.from_env(standin_env(samples, **SAMPLE_SETTINGS))
    found, _ = connect_findings(settings)
    [refused, *_] = [f for f in found if f.code == "campaign_log.read"]
    assert (
        refused.severity == "error"
        and "400: 0x0" in refused.message
        and "every such read would fail" in refused.message
    )


def test_an_azure_client_id_without_an_application_user_is_an_error_saying_how_to_create_one(samples) -> None:
    # The one running the check is a person (no application user); AZURE_CLIENT_ID names the app's identity.
    samples.application_id = None
    found = connect_findings(
        Settings.from_env(
            standin_env(samples, AZURE_CLIENT_ID="0f0e0d0c-0000-4000-8000-0000000000aa", **SAMPLE_SETTINGS)
        )
    )[0]
    [missing] = [f for f in found if f.code == "app_user.missing"]
    assert missing.severity == "error"
    assert "0f0e0d0c-0000-4000-8000-0000000000aa has no application user" in missing.message
    assert "Application users" in missing.fix
    assert not [f for f in found if f.code == "privileges"]  # the caller's privileges prove nothing


def test_an_azure_client_id_with_an_application_user_proves_that_user(samples) -> None:
    from optout_dev.standin.users import APPLICATION_ID

    found = connect_findings(
        Settings.from_env(standin_env(samples, AZURE_CLIENT_ID=APPLICATION_ID, **SAMPLE_SETTINGS))
    )[0]
    [proved] = [f for f in found if f.code == "privileges"]
    assert proved.severity == "ok" and samples.user_id in proved.message
