"""Dataverse values as a message or a Web API row carries them (optout_core/domain/values.py)."""

from datetime import UTC, datetime

import pytest

from optout_core.domain.values import Reference, as_option_code, as_reference, iso_utc, parse_date, unwrap

CONTACT = "1b6f2a4e-8c1d-4e2f-9a3b-5c6d7e8f9a0b"


def test_unwrap_opens_typed_wrappers_only():
    assert unwrap({"__type": "Guid:#System", "__value": CONTACT}) == CONTACT
    assert unwrap({"__value": CONTACT}) == {"__value": CONTACT}  # no type tag: not a wrapper
    assert unwrap("text") == "text"


@pytest.mark.parametrize(
    "value",
    [
        {
            "__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
            "LogicalName": "Contact",
            "Id": CONTACT.upper(),
            "Name": "x",
        },
        {"LogicalName": "contact", "Id": CONTACT, "Name": "x"},  # untagged, as in images
    ],
)
def test_a_lookup_is_read_by_its_tag_or_its_shape(value):
    assert as_reference(value) == Reference("contact", CONTACT, "x")


def test_an_entity_or_another_tag_is_no_lookup():
    assert as_reference({"LogicalName": "contact", "Id": CONTACT, "Attributes": []}) is None
    assert as_reference({"__type": "OptionSetValue:#x", "LogicalName": "contact", "Id": CONTACT}) is None
    assert as_reference({"LogicalName": "contact", "Id": "not-a-guid"}) == Reference("contact", None, None)


def test_option_codes_from_option_set_values_and_whole_numbers_never_booleans():
    assert as_option_code({"__type": "OptionSetValue:http://x", "Value": 100000003}) == 100000003
    assert as_option_code(7) == 7
    assert as_option_code(True) is None and as_option_code("7") is None


def test_dates_from_wcf_and_iso_8601_as_utc():
    assert iso_utc("/Date(1741944413000)/") == "2025-03-14T09:26:53Z"
    assert iso_utc("/Date(1741944413000+0100)/") == "2025-03-14T09:26:53Z"  # the ms are UTC (WCF rule)
    assert iso_utc("2025-03-14T10:26:53+01:00") == "2025-03-14T09:26:53Z"
    assert parse_date("2025-03-14T09:26:53Z") == datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
    assert parse_date("2025-03-14T09:26:53") is None  # no offset: not a moment
    assert iso_utc("/Date(999999999999999)/") is None and iso_utc("soon") is None
