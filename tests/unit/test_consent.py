"""The consent plan (optout_core.domain.consent): which contact point consent records an opt-out creates or updates,
given what exists; and its settings."""

import uuid

import pytest

from optout_core.domain.consent import (
    EMAIL,
    NO_REASONS,
    OPTED_OUT,
    SOURCE_INTERNAL,
    ConsentType,
    Existing,
    Scope,
    Tally,
    addresses,
    new_record,
    opted_out,
    plan,
    query_filter,
    record_id,
    scopes,
)
from optout_core.domain.consent_settings import ConsentSettings
from optout_core.domain.errors import SettingsError
from optout_core.domain.settings import Settings

COMMERCIAL = "0a5c3d2e-1111-4c2d-9e8f-0a1b2c3d4e01"
TRANSACTIONAL = "0a5c3d2e-1111-4c2d-9e8f-0a1b2c3d4e02"
NEWSLETTER = "0a5c3d2e-2222-4c2d-9e8f-0a1b2c3d4e03"
PURPOSE = Scope(ConsentType.PURPOSE, COMMERCIAL)
TOPIC = Scope(ConsentType.TOPIC, NEWSLETTER)
ADDRESS = "pat@example.com"


def record(
    n, *, address=ADDRESS, channel=EMAIL, kind=ConsentType.PURPOSE, status=534120001, purpose=COMMERCIAL, topic=None
):
    return Existing.from_row(
        {
            "msdynmkt_contactpointconsent4id": f"00000000-0000-0000-0000-{n:012d}",
            "msdynmkt_contactpointvalue": address,
            "msdynmkt_contactpointtype": channel,
            "msdynmkt_contactpointconsenttype": int(kind),
            "msdynmkt_value": status,
            "_msdynmkt_purposeid_value": purpose,
            "_msdynmkt_topicid_value": topic,
        }
    )


def rid(n):
    return f"00000000-0000-0000-0000-{n:012d}"


def test_no_record_for_the_purpose_means_one_is_created():
    assert plan(ADDRESS, [PURPOSE], []) == plan(ADDRESS, [PURPOSE], [record(1, purpose=TRANSACTIONAL)])
    assert plan(ADDRESS, [PURPOSE], []).create == (PURPOSE,)


def test_an_opted_in_or_not_set_record_is_updated_and_an_opted_out_one_left_alone():
    made = plan(
        ADDRESS, [PURPOSE], [record(1, status=534120001), record(2, status=534120000), record(3, status=OPTED_OUT)]
    )
    assert made.create == () and made.update == (rid(1), rid(2)) and made.kept == (rid(3),)
    assert made.writes == 2


def test_other_channels_purposes_topics_and_addresses_are_never_touched():
    others = [
        record(1, channel=534120001),  # text message
        record(2, purpose=TRANSACTIONAL),
        record(3, kind=ConsentType.TOPIC, topic=NEWSLETTER),  # a topic record of the same purpose
        record(4, address="someone.else@example.com"),
    ]
    made = plan(ADDRESS, [PURPOSE], others)
    assert made.create == (PURPOSE,) and made.update == () and made.kept == ()


def test_addresses_match_without_regard_to_case_as_dataverse_compares_text():
    assert plan("Pat@Example.COM", [PURPOSE], [record(1)]).update == (rid(1),)


def test_a_topic_is_matched_by_its_topic_id_and_consent_type():
    made = plan(ADDRESS, [PURPOSE, TOPIC], [record(1, kind=ConsentType.TOPIC, topic=NEWSLETTER, status=OPTED_OUT)])
    assert made.create == (PURPOSE,) and made.kept == (rid(1),)


def test_a_record_listed_twice_or_a_scope_named_twice_is_planned_once():
    made = plan(ADDRESS, [PURPOSE, PURPOSE], [record(1), record(1)])
    assert made.update == (rid(1),)


def test_a_new_record_is_email_opted_out_internal_no_reasons_with_the_purpose_bound():
    body = new_record(ADDRESS, PURPOSE, "marker")
    assert body == {
        "msdynmkt_contactpointconsent4id": record_id(ADDRESS, PURPOSE),
        "msdynmkt_contactpointvalue": ADDRESS,
        "msdynmkt_contactpointtype": EMAIL,
        "msdynmkt_contactpointconsenttype": 534120000,
        "msdynmkt_value": OPTED_OUT,
        "msdynmkt_source": SOURCE_INTERNAL,
        "msdynmkt_logicalreason": NO_REASONS,
        "msdynmkt_reason": "marker",
        "msdynmkt_purposeId@odata.bind": f"/msdynmkt_purposes({COMMERCIAL})",
    }
    assert new_record(ADDRESS, TOPIC, "m")["msdynmkt_topicId@odata.bind"] == f"/msdynmkt_topics({NEWSLETTER})"


def test_an_update_only_ever_opts_out():
    assert opted_out("m")["msdynmkt_value"] == OPTED_OUT
    assert set(opted_out("m")) == {"msdynmkt_value", "msdynmkt_source", "msdynmkt_logicalreason", "msdynmkt_reason"}


def test_the_query_lists_the_email_channel_of_one_address_with_quotes_doubled_and_specials_encoded():
    assert query_filter("o'neil+news@example.com") == (
        "msdynmkt_contactpointvalue eq 'o''neil%2Bnews%40example.com' and msdynmkt_contactpointtype eq 534120000"
    )


def test_a_recipient_s_addresses_are_its_distinct_non_empty_columns_in_order():
    row = {"emailaddress1": " Pat@example.com ", "emailaddress2": "pat@EXAMPLE.com", "emailaddress3": "", "x": None}
    assert addresses(row, ("emailaddress1", "emailaddress2", "emailaddress3", "x")) == ("Pat@example.com",)
    assert addresses({"emailaddress1": None}, ("emailaddress1",)) == ()


def test_the_outcome_text_counts_records_and_never_names_an_address():
    text = Tally(addresses=2, created=1, updated=1, kept=1).describe("donotbulkemail")
    assert text == (
        "wrote donotbulkemail and 2 consent records (1 created; 1 updated; 1 already opted out, left alone) "
        "for 2 address(es)"
    )
    assert Tally(empty=("emailaddress1",)).describe("donotbulkemail") == (
        "wrote donotbulkemail; no consent record: emailaddress1 empty"
    )


def test_consent_is_off_by_default_and_settings_parse_and_refuse():
    assert Settings.from_env({}).consent == ConsentSettings() and not ConsentSettings().enabled
    on = Settings.from_env(
        {
            "CONSENT_PURPOSE_IDS": f"{{{COMMERCIAL.upper()}}}; ;{COMMERCIAL}",
            "CONSENT_TOPIC_IDS": NEWSLETTER,
            "RECIPIENT_EMAIL_COLUMNS": "EmailAddress1;emailaddress2",
        }
    ).consent
    assert on.enabled and on.purposes == (COMMERCIAL,) and on.topics == (NEWSLETTER,)
    assert scopes(on) == (PURPOSE, TOPIC) and on.address_columns == ("emailaddress1", "emailaddress2")
    assert on.description_for("log-1") == "Opted out by optout from Concep campaign log log-1"
    with pytest.raises(SettingsError, match="CONSENT_PURPOSE_IDS: 'Commercial' is not a GUID"):
        Settings.from_env({"CONSENT_PURPOSE_IDS": "Commercial"})
    with pytest.raises(SettingsError, match="RECIPIENT_EMAIL_COLUMNS"):
        Settings.from_env({"RECIPIENT_EMAIL_COLUMNS": "email-address"})
    with pytest.raises(SettingsError, match="unknown placeholder"):
        Settings.from_env({"CONSENT_REASON_DESCRIPTION": "{recipient}"})


def test_the_reason_description_fits_its_column():
    long = ConsentSettings(purposes=(COMMERCIAL,), description="x" * 600 + "{log_id}")
    assert len(long.description_for("id")) == 500


@pytest.mark.parametrize(
    ("one", "other"), [("straße@example.com", "strasse@example.com"), ("ﬁona@example.com", "fiona@example.com")]
)
def test_addresses_that_differ_but_case_fold_alike_stay_distinct(one, other):
    assert addresses({"a": one, "b": other}, ("a", "b")) == (one, other)
    existing = Existing("r1", other, EMAIL, int(ConsentType.PURPOSE), None, COMMERCIAL, None)
    assert existing.is_for(other, PURPOSE) and not existing.is_for(one, PURPOSE)


def test_addresses_that_differ_only_in_case_are_one():
    assert addresses({"a": "Jane@Example.com", "b": "jane@example.COM"}, ("a", "b")) == ("Jane@Example.com",)


def test_a_created_record_s_id_is_a_name_based_uuid_of_scope_and_address_as_dataverse_compares_it():
    made = record_id(ADDRESS, PURPOSE)
    assert uuid.UUID(made).version == 5
    # Every worker, and every resend, names the same record; case does not make another address.
    assert record_id(ADDRESS, PURPOSE) == made == record_id(" " + ADDRESS.upper(), PURPOSE)
    assert record_id(ADDRESS, TOPIC) != made
    assert record_id("other@example.com", PURPOSE) != made
    assert record_id("straße@example.com", PURPOSE) != record_id("strasse@example.com", PURPOSE)


@pytest.mark.parametrize("status", [412, 400, 500])
def test_a_create_meeting_its_taken_id_is_recognised_by_the_error_code_whatever_the_status(status):
    # Microsoft publishes the code (0x80040237, "Cannot insert duplicate key"), not the status a POST gets with it.
    from optout_core.app.consent import _duplicate
    from optout_core.dataverse.errors import DataverseRejected, DataverseUnavailable

    kind = DataverseUnavailable if status >= 500 else DataverseRejected
    assert _duplicate(kind("taken", status=status, code="0x80040237"))
    assert not _duplicate(kind("other", status=status, code="0x80040203"))
    assert not _duplicate(None)
