"""App settings (optout_core.domain.settings): defaults, validation that names the setting, toggles."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from optout_core.domain import setting_parsers
from optout_core.domain.errors import SettingsError
from optout_core.domain.model import AUDIT, BOUNCE
from optout_core.domain.policy import FailurePolicy
from optout_core.domain.settings import SPEC, ActivityTypes, Settings
from optout_core.domain.settings_spec import default
from tools import appsettings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_follow_concep_semantics():
    s = Settings.from_env({})
    assert s.campaign_log_table == "concep_emailcampaignlog"
    assert s.activity_type_column == "concep_activitytype"
    assert s.opt_out_types.matches("Spam Report", None)
    assert s.opt_out_types.matches("group opt out", None)
    assert s.opt_out_types.matches("CLIENT-OPT-OUT", None)
    assert s.bounce_types.matches("Hard Bounce", None)
    assert s.user_opt_out_types.matches("User Opt Out", None)
    assert dict(s.opt_out_update) == {"donotbulkemail": True}
    assert s.bounce_update is None
    assert s.disabled == frozenset({"OptOutAudit"})  # the scheduled audit ships switched off


def test_activity_types_mix_labels_and_option_codes():
    types = ActivityTypes.parse(" Spam Report ; 100000004;;Group_Opt-Out ")
    assert types.codes == {100000004}
    assert types.matches(None, 100000004)
    assert types.matches("group opt out", None)
    assert not types.matches("Open", 100000001)


@pytest.mark.parametrize(
    "env, setting",
    [
        ({"EXPECTED_ORGANIZATION_ID": "contoso"}, "EXPECTED_ORGANIZATION_ID"),
        ({"OPT_OUT_UPDATE": "{donotbulkemail: true}"}, "OPT_OUT_UPDATE"),
        ({"OPT_OUT_UPDATE": "[]"}, "OPT_OUT_UPDATE"),
        ({"BOUNCE_UPDATE": '{"x_status": "{reason}"}'}, "BOUNCE_UPDATE"),
        ({"DATAVERSE_URL": "http://contoso.crm.dynamics.com"}, "DATAVERSE_URL"),
        ({"DATAVERSE_URL": "https://contoso.crm.dynamics.com/api/data/v9.2"}, "DATAVERSE_URL"),
        ({"DATAVERSE_URL": "contoso"}, "DATAVERSE_URL"),
        ({"DATAVERSE_URL": "https://contoso.crm.dynamics.com", "DATAVERSE_TOKEN": "t"}, "DATAVERSE_TOKEN"),
        ({"DATAVERSE_MAX_ATTEMPTS": "0"}, "DATAVERSE_MAX_ATTEMPTS"),
        ({"DATAVERSE_TIMEOUT_SECONDS": "soon"}, "DATAVERSE_TIMEOUT_SECONDS"),
        ({"ACTIVITY_TYPE_COLUMN": "concep activity"}, "ACTIVITY_TYPE_COLUMN"),
        ({"RECIPIENT_COLUMNS": "concep_contactid;x-y"}, "RECIPIENT_COLUMNS"),
        ({"OPT_OUT_QUEUE": "opt out"}, "OPT_OUT_QUEUE"),
        ({"AzureWebJobs.BulkEmailOptOut.Disabled": "maybe"}, "AzureWebJobs.BulkEmailOptOut.Disabled"),
        ({"BOUNCE_ACTIVITY_TYPES": "Spam Report"}, "OPT_OUT_ACTIVITY_TYPES"),
        ({"BOUNCE_QUEUE": "opt-out"}, "BOUNCE_QUEUE"),
        ({"AUDIT_SCHEDULE": "0 2 * * *"}, "AUDIT_SCHEDULE"),  # five fields: the timer wants six
        ({"AUDIT_LOOKBACK_DAYS": "0"}, "AUDIT_LOOKBACK_DAYS"),
        ({"AUDIT_LOOKBACK_DAYS": "100000"}, "AUDIT_LOOKBACK_DAYS"),
        ({"AUDIT_FIX": "yes please"}, "AUDIT_FIX"),
        ({"AzureWebJobs_OptOutAudit_Disabled": "off"}, "AzureWebJobs_OptOutAudit_Disabled"),
    ],
)
def test_a_bad_value_fails_fast_naming_the_setting(env, setting):
    with pytest.raises(SettingsError, match=setting.replace(".", r"\.")):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "value",
    [";", " - ", ";;", " ; - ; _ ;", "-", "__", "Spam Report; - ", "100000003;--"],
)
def test_an_opt_out_list_without_a_usable_entry_or_with_an_empty_label_is_refused(value):
    # ";" or " - " would leave no opt-out type at all: every Spam Report would then be ignored.
    with pytest.raises(SettingsError, match="OPT_OUT_ACTIVITY_TYPES"):
        Settings.from_env({"OPT_OUT_ACTIVITY_TYPES": value})


@pytest.mark.parametrize("name", ["BOUNCE_ACTIVITY_TYPES", "USER_OPT_OUT_ACTIVITY_TYPES"])
@pytest.mark.parametrize("value", [" - ", "Hard Bounce;_", "-;;"])
def test_a_label_that_normalises_to_nothing_is_refused_in_every_list(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize("name", ["BOUNCE_ACTIVITY_TYPES", "USER_OPT_OUT_ACTIVITY_TYPES"])
def test_the_bounce_and_user_opt_out_lists_may_be_emptied_explicitly(name):
    # An empty value means the default; ";" lists nothing. Neither list can defeat an opt-out.
    settings = Settings.from_env({name: ";"})
    types = settings.bounce_types if name == "BOUNCE_ACTIVITY_TYPES" else settings.user_opt_out_types
    assert types == ActivityTypes()
    assert settings.opt_out_types.matches("Spam Report", None)


def test_the_refusal_says_what_an_entry_is():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"OPT_OUT_ACTIVITY_TYPES": "Spam Report; _ - "})
    assert "'_ -' is not an activity type" in str(raised.value)
    assert "matches nothing" in str(raised.value) and "option codes" in str(raised.value)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"OPT_OUT_ACTIVITY_TYPES": ";"})
    assert "at least one" in str(raised.value)


@pytest.mark.parametrize(
    "value",
    [
        '{"donotbulkemail": false}',
        '{"donotbulkemail": null}',
        '{"donotbulkemail": "true"}',
        '{"donotbulkemail": 1}',
        '{"donotbulkemail": true, "donotemail": false}',
        '{"DoNotBulkEmail": false}',
        '{"donotbulkemail": true, "donotbulkemail": false}',
        "null",
        "{}",
        "[]",
        '"donotbulkemail"',
    ],
)
def test_an_opt_out_update_that_would_allow_bulk_email_is_refused(value):
    with pytest.raises(SettingsError, match="OPT_OUT_UPDATE"):
        Settings.from_env({"OPT_OUT_UPDATE": value})


def test_an_opt_out_update_names_the_column_that_must_be_true():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"OPT_OUT_UPDATE": '{"donotbulkemail": true, "donotemail": false}'})
    assert "donotemail" in str(raised.value) and "true" in str(raised.value)


def test_an_opt_out_update_may_set_more_columns():
    value = '{"donotbulkemail": true, "donotemail": true, "description": "opted out", "x_count": 0}'
    settings = Settings.from_env({"OPT_OUT_UPDATE": value})
    assert dict(settings.opt_out_update) == json.loads(value)


def test_a_static_token_is_honoured_only_for_loopback_urls():
    s = Settings.from_env({"DATAVERSE_URL": "http://127.0.0.1:8080/", "DATAVERSE_TOKEN": "local"})
    assert s.dataverse_url == "http://127.0.0.1:8080" and s.dataverse_token == "local"
    assert "local" not in repr(s)
    Settings.from_env({"DATAVERSE_URL": "http://localhost:1", "DATAVERSE_TOKEN": "t"})


@pytest.mark.parametrize("name", ["AzureWebJobs.BounceDetail.Disabled", "AzureWebJobs_BounceDetail_Disabled"])
@pytest.mark.parametrize(
    "value, disabled", [("true", True), ("True", True), ("1", True), ("false", False), ("0", False)]
)
def test_portal_toggles_in_both_spellings(name, value, disabled):
    # Linux plans expose the portal's AzureWebJobs.<name>.Disabled with periods turned into underscores.
    assert Settings.from_env({name: value}).is_enabled(BOUNCE) is not disabled


@pytest.mark.parametrize("name", ["AzureWebJobs.OptOutAudit.Disabled", "AzureWebJobs_OptOutAudit_Disabled"])
@pytest.mark.parametrize("value, disabled", [(None, True), ("true", True), ("false", False), ("0", False)])
def test_the_audit_timer_is_off_until_its_toggle_says_false(name, value, disabled):
    env = {} if value is None else {name: value}
    assert Settings.from_env(env).is_enabled(AUDIT) is not disabled
    shown = {s.name: v for s, v in Settings.from_env(env).effective()}
    assert shown["AzureWebJobs.OptOutAudit.Disabled"] == str(disabled).lower()  # as `check` lists it


def test_either_spelling_of_a_toggle_saying_true_switches_the_audit_off():
    env = {"AzureWebJobs.OptOutAudit.Disabled": "false", "AzureWebJobs_OptOutAudit_Disabled": "true"}
    assert not Settings.from_env(env).is_enabled(AUDIT)


def test_bounce_update_placeholders_are_checked():
    s = Settings.from_env({"BOUNCE_UPDATE": '{"x_bounced": true, "x_reason": "{activity_type}: {detail}"}'})
    assert s.bounce_update["x_reason"] == "{activity_type}: {detail}"


def test_secrets_are_masked_in_the_effective_listing():
    s = Settings.from_env(
        {
            "DATAVERSE_URL": "http://127.0.0.1:1",
            "DATAVERSE_TOKEN": "very-secret",
            "ServiceBusConnection": "Endpoint=sb://x/;SharedAccessKey=abc",
        }
    )
    shown = {setting.name: value for setting, value in s.effective()}
    assert shown["DATAVERSE_TOKEN"] == "***" and shown["ServiceBusConnection"] == "***"
    assert "very-secret" not in json.dumps(shown)


def test_the_sample_local_settings_list_every_setting_with_its_default():
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())
    values = sample["Values"]
    placeholders = {"DATAVERSE_URL", "ServiceBusConnection__fullyQualifiedNamespace"}
    for setting in SPEC:
        if setting.name == "ServiceBusConnection":  # a secret: shown in Meanings, never in Values
            continue
        assert setting.name in values, setting.name
        if setting.name not in placeholders:
            assert values[setting.name] == setting.default, setting.name
    meanings = sample.get("Meanings", {})
    assert set(meanings) >= {s.name for s in SPEC}
    assert all(isinstance(v, str) for v in values.values())


def test_the_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in SPEC if f"`{s.name}`" not in readme]
    assert missing == []


def test_a_bounce_update_that_would_re_allow_bulk_email_is_refused():
    with pytest.raises(SettingsError, match="BOUNCE_UPDATE sets donotbulkemail to false"):
        Settings.from_env({"BOUNCE_UPDATE": '{"donotbulkemail": false, "description": "{detail}"}'})
    assert Settings.from_env({"BOUNCE_UPDATE": '{"donotbulkemail": true}'}).bounce_update == {"donotbulkemail": True}


@pytest.mark.parametrize(
    "value",
    ["contoso-app", "not a guid", "11111111-2222-3333-4444-55555555555", "{11111111-2222-3333-4444-555555555555"],
)
def test_azure_client_id_must_be_a_guid(value):
    # It goes into a $filter (applicationid eq …) and to the credential: anything but a GUID is refused at load.
    with pytest.raises(SettingsError, match="AZURE_CLIENT_ID must be a GUID") as raised:
        Settings.from_env({"AZURE_CLIENT_ID": value})
    assert repr(value) in str(raised.value)


def test_azure_client_id_is_read_as_a_lowercase_guid():
    settings = Settings.from_env({"AZURE_CLIENT_ID": "{A1B2C3D4-0000-4000-8000-00000000000F}"})
    assert settings.azure_client_id == "a1b2c3d4-0000-4000-8000-00000000000f"
    assert Settings.from_env({}).azure_client_id is None


GARBAGE = [
    "not valid {",
    "{unknown}",
    "-1",
    "0",
    "nan",
    "x y",
    "http://example.com/path",
    '{"donotbulkemail": 0}',
    " - ",
]
FREE_TEXT = {setting_parsers.text, setting_parsers.optional_text, setting_parsers.names}
# Read as text by the list, then validated together (consent) or in both spellings (portal toggles).
VALIDATED_LATER = {"CONSENT_PURPOSE_IDS", "CONSENT_TOPIC_IDS", "RECIPIENT_EMAIL_COLUMNS", "CONSENT_REASON_DESCRIPTION"}
CHECKED = [
    s for s in SPEC if s.parse not in FREE_TEXT or s.name in VALIDATED_LATER or s.name.startswith("AzureWebJobs.")
]


@pytest.mark.parametrize("setting", CHECKED, ids=lambda s: s.name)
def test_every_checked_setting_refuses_a_bad_value_naming_itself(setting):
    refused = []
    for value in GARBAGE:
        try:
            Settings.from_env({setting.name: value})
        except SettingsError as exc:
            refused.append(value)
            assert setting.name in str(exc), (value, str(exc))
    # free text aside, every setting has some value it refuses
    assert refused, setting.name


def test_each_default_is_written_once_in_the_settings_list():
    # The failure policy's defaults are the settings' defaults, not numbers of their own.
    policy = FailurePolicy()
    assert policy.window == float(default("DATAVERSE_RETRY_WINDOW_SECONDS"))
    assert policy.retry_after_cap == float(default("DATAVERSE_RETRY_AFTER_CAP_SECONDS"))
    settings = Settings.from_env({})
    assert settings.failure_policy == FailurePolicy(retry=settings.retry)
    assert settings.dataverse_timeout == float(default("DATAVERSE_TIMEOUT_SECONDS"))
    assert settings.retry.attempts == int(default("DATAVERSE_MAX_ATTEMPTS"))


def test_the_sample_and_the_readme_table_are_generated_from_the_settings_list():
    stale = f"stale: run `{appsettings.COMMAND}` (or ./dev appsettings) and commit it"
    assert (ROOT / "local.settings.sample.json").read_text(encoding="utf-8") == appsettings.sample(), stale
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert appsettings.readme_table() in readme, stale
    assert appsettings.with_readme_table(readme) == readme, stale


@pytest.mark.parametrize("value", ["0", "-1", "0.0", "-0.5"])
def test_a_back_off_of_zero_or_less_is_refused(value):
    # Zero would put a failing work item back on its queue in a hot loop.
    with pytest.raises(SettingsError, match="DATAVERSE_BACKOFF_SECONDS must be more than 0"):
        Settings.from_env({"DATAVERSE_BACKOFF_SECONDS": value})


def test_a_small_positive_back_off_is_accepted():
    assert Settings.from_env({"DATAVERSE_BACKOFF_SECONDS": "0.001"}).retry.backoff == 0.001


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:s3cret-pw@contoso.crm.dynamics.com",
        "https://admin@contoso.crm.dynamics.com",
        "https://:s3cret-pw@contoso.crm.dynamics.com",
        "http://u:s3cret-pw@127.0.0.1:8080",
    ],
)
def test_a_dataverse_url_with_credentials_is_refused_without_echoing_them(url):
    with pytest.raises(SettingsError, match="DATAVERSE_URL must not carry a user name or password") as refused:
        Settings.from_env({"DATAVERSE_URL": url})
    assert "s3cret" not in str(refused.value)
    assert "admin" not in str(refused.value)


def test_a_deeply_nested_update_fails_naming_the_setting():
    deep = '{"donotbulkemail": true, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for name in ("OPT_OUT_UPDATE", "BOUNCE_UPDATE"):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: deep})


@pytest.mark.parametrize("value", ['{"donotbulkemail": true, "x": [1]}', '{"donotbulkemail": true, "x": {"y": 1}}'])
def test_an_update_column_holds_one_value_not_a_structure(value):
    with pytest.raises(SettingsError, match="OPT_OUT_UPDATE: x must be set to text"):
        Settings.from_env({"OPT_OUT_UPDATE": value})


ALL_NAMES = [s.name for s in SPEC]
# Text shaped like each kind of value, and anything at all: every setting either parses or names itself.
SETTING_TEXT = st.one_of(
    st.text(max_size=300),
    st.from_regex(r"-?[0-9]{1,400}(\.[0-9]{0,5})?(e[+-]?[0-9]{1,4})?", fullmatch=True),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
    ).map(json.dumps),
    st.integers(min_value=1, max_value=3000).map(lambda n: '{"donotbulkemail": ' + "[" * n + "]" * n + "}"),
    st.builds(lambda u, h: f"https://{u}@{h}", st.text(max_size=20), st.text(max_size=20)),
)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(ALL_NAMES), value=SETTING_TEXT)
def test_no_setting_value_raises_anything_but_a_settings_error_naming_it(name, value):
    try:
        Settings.from_env({name: value})
    except SettingsError as exc:
        message = str(exc)
        spelled = {name, name.replace(".", "_")}
        assert any(n in message for n in spelled), (name, message)


def test_reading_the_settings_leaves_the_consent_write_unloaded():
    # Every process reads its settings with its first message; the consent records and their plan load only
    # where the consent write is on (bench: first_event_vs_floor).
    code = (
        "import sys; from optout_core.domain.settings import Settings; import optout_core.app.opt_out; "
        "print(Settings.from_env({}).consent.enabled, sorted(m for m in sys.modules if m.endswith('.consent')))"
    )
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert child.stdout.split(None, 1) == ["False", "[]\n"]
