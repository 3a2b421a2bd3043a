"""check --connect for the consent write (optout_core.cli.consent_check.consent_findings), against the stand-in."""

from urllib.parse import unquote

import pytest

from optout_core.app.services import build_dataverse_client
from optout_core.cli.consent_check import consent_findings
from optout_core.domain.settings import Settings
from optout_dev.standin.presets import COMMERCIAL_PURPOSE_ID, NEWSLETTER_TOPIC_ID
from tests.support.dataverse import standin_env

CONSENT = "msdynmkt_contactpointconsent4"
UNKNOWN = "0badc0de-0000-4000-8000-000000000001"


def findings_for(standin, **env):
    settings = Settings.from_env(standin_env(standin, **env))
    client = build_dataverse_client(settings)
    try:
        return consent_findings(client, settings)
    finally:
        client.close()


def codes(findings, severity=None):
    return [f.code for f in findings if severity is None or f.severity == severity]


@pytest.fixture
def journeys(make_standin):
    return make_standin(presets=("journeys",))


def test_nothing_is_checked_while_the_feature_is_off(journeys):
    assert codes(findings_for(journeys)) == ["consent.off"]
    assert journeys.requests == []


def test_a_complete_set_up_is_all_ok(journeys):
    found = findings_for(journeys, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID, CONSENT_TOPIC_IDS=NEWSLETTER_TOPIC_ID)
    assert codes(found) == [
        "consent.table",
        "consent.purpose",
        "consent.topic",
        "consent.address_columns",
        "consent.privileges",
    ]
    assert {f.severity for f in found} == {"ok"}


def test_without_journeys_the_table_is_missing(standin):
    [found] = findings_for(standin, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID)
    assert found.code == "consent.table_missing" and found.severity == "error"
    assert "Customer Insights - Journeys" in found.fix


def test_an_unknown_purpose_or_topic_is_named(journeys):
    found = findings_for(journeys, CONSENT_PURPOSE_IDS=f"{COMMERCIAL_PURPOSE_ID};{UNKNOWN}", CONSENT_TOPIC_IDS=UNKNOWN)
    assert codes(found, "error") == ["consent.purpose_missing", "consent.topic_missing"]
    assert all(UNKNOWN in f.message for f in found if f.severity == "error")


def test_an_address_column_the_tables_lack_is_an_error(journeys):
    found = findings_for(
        journeys, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID, RECIPIENT_EMAIL_COLUMNS="emailaddress1;new_workemail"
    )
    assert codes(found, "error") == ["consent.address_column_missing"] * 3  # contact, lead, account


@pytest.mark.parametrize("kind", ["Create", "Write", "Append", "Read"])
def test_a_missing_privilege_on_the_consent_table_is_named(journeys, kind):
    journeys.set_privileges(journeys.privileges - {f"prv{kind}{CONSENT}"})
    found = findings_for(journeys, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID)
    [missing] = [f for f in found if f.severity == "error"]
    assert missing.code == "consent.privileges_missing" and f"prv{kind}{CONSENT}" in missing.message


def test_append_to_on_the_purpose_is_needed_to_bind_it(journeys):
    journeys.set_privileges(journeys.privileges - {"prvAppendTomsdynmkt_purpose"})
    found = findings_for(journeys, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID)
    [missing] = [f for f in found if f.severity == "error"]
    assert (
        "AppendTo on msdynmkt_purpose (prvAppendTomsdynmkt_purpose): does not hold it, needs Global" in missing.message
    )


def test_a_consent_privilege_at_user_depth_is_an_error_and_a_team_s_organisation_depth_is_not(journeys):
    user_depth = dict.fromkeys(journeys.privileges, "Global") | {f"prvWrite{CONSENT}": "Basic"}
    journeys.set_privilege_depths(user_depth)
    found = findings_for(journeys, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID)
    [short] = [f for f in found if f.severity == "error"]
    assert f"Write on {CONSENT} (prvWrite{CONSENT}): holds it at Basic depth, needs Global" in short.message

    journeys.set_privilege_depths(user_depth, team={f"prvWrite{CONSENT}": "Global"})
    assert codes(findings_for(journeys, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID), "error") == []


def test_with_azure_client_id_the_application_s_own_user_is_checked_not_the_caller(journeys):
    application = "5c0ffee0-0000-4000-8000-00000000a99b"
    findings_for(journeys, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID, AZURE_CLIENT_ID=application)
    asked = [unquote(r.path) for r in journeys.requests if r.path.split("?")[0].endswith("/systemusers")]
    assert asked and all(f"applicationid eq {application}" in path for path in asked)


def test_an_azure_client_id_without_an_application_user_is_an_error_not_the_caller_s_privileges(journeys):
    journeys.application_id = None  # the caller is a person: no client id has an application user
    found = findings_for(
        journeys, CONSENT_PURPOSE_IDS=COMMERCIAL_PURPOSE_ID, AZURE_CLIENT_ID="5c0ffee0-0000-4000-8000-00000000a99b"
    )
    [missing] = [f for f in found if f.code == "consent.app_user_missing"]
    assert missing.severity == "error" and "Application users" in missing.fix
    assert "consent.privileges" not in codes(found, "ok")
