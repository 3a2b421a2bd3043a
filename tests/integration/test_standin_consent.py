"""Customer Insights – Journeys contact point consent as the stand-in serves it (docs/dataverse-admin.md §5): the
consent table's columns, choices and purpose lookup, the seeded purposes and topic, and Microsoft's recipe of
listing first, then creating or updating."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from optout_dev.standin import COMMERCIAL_PURPOSE_ID, NEWSLETTER_TOPIC_ID, TRANSACTIONAL_PURPOSE_ID, DataverseStandIn

API = "/api/data/v9.2/"
TIMEOUT = 5
CONSENTS = "msdynmkt_contactpointconsent4s"
EMAIL, OPTED_IN, OPTED_OUT, PURPOSE, INTERNAL, NO_REASONS = (
    534120000,
    534120001,
    534120002,
    534120000,
    534120000,
    534119999,
)

pytestmark = pytest.mark.usefixtures("no_leaked_standin_threads")


@pytest.fixture
def standin() -> Iterator[DataverseStandIn]:
    with DataverseStandIn(presets=("journeys",)) as server:
        yield server


def consent(value: int = OPTED_OUT, address: str = "ada@example.com", **extra: object) -> dict[str, object]:
    """An opt-out record as Microsoft's flow creates it (docs/dataverse-admin.md §5)."""
    return {
        "msdynmkt_contactpointvalue": address,
        "msdynmkt_contactpointtype": EMAIL,
        "msdynmkt_value": value,
        "msdynmkt_contactpointconsenttype": PURPOSE,
        "msdynmkt_purposeId@odata.bind": f"/msdynmkt_purposes({COMMERCIAL_PURPOSE_ID})",
        "msdynmkt_logicalreason": NO_REASONS,
        "msdynmkt_reason": "optout: campaign log 5c1e8a72",
        "msdynmkt_source": INTERNAL,
        **extra,
    }


def post(http: requests.Session, server: DataverseStandIn, body: object) -> requests.Response:
    return http.post(server.url + API + CONSENTS, json=body, timeout=TIMEOUT)


def listed(http: requests.Session, server: DataverseStandIn, address: str) -> list[dict[str, object]]:
    expression = (
        f"msdynmkt_contactpointvalue eq '{address}' and msdynmkt_contactpointtype eq {EMAIL} and "
        f"msdynmkt_contactpointconsenttype eq {PURPOSE} and _msdynmkt_purposeid_value eq {COMMERCIAL_PURPOSE_ID}"
    )
    params = {"$select": "msdynmkt_value,_msdynmkt_purposeid_value", "$filter": expression}
    response = http.get(server.url + API + CONSENTS, params=params, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["value"]


def test_the_two_purposes_and_a_topic_are_seeded_with_fixed_ids(standin, http):
    purposes = http.get(standin.url + API + "msdynmkt_purposes", timeout=TIMEOUT).json()["value"]
    assert {(row["msdynmkt_purposeid"], row["msdynmkt_name"]) for row in purposes} == {
        (COMMERCIAL_PURPOSE_ID, "Commercial communications"),
        (TRANSACTIONAL_PURPOSE_ID, "Transactional"),
    }
    assert standin.row("msdynmkt_topic", NEWSLETTER_TOPIC_ID)["msdynmkt_name"] == "Newsletter"


def test_list_then_create_then_update_as_microsofts_flow_does(standin, http):
    assert listed(http, standin, "ada@example.com") == []
    assert post(http, standin, consent(OPTED_IN)).status_code == 204
    [row] = listed(http, standin, "ADA@example.com")  # addresses match case-insensitively
    assert (row["msdynmkt_value"], row["_msdynmkt_purposeid_value"]) == (OPTED_IN, COMMERCIAL_PURPOSE_ID)
    key = row["msdynmkt_contactpointconsent4id"]
    updated = http.patch(
        f"{standin.url}{API}{CONSENTS}({key})",
        json={"msdynmkt_value": OPTED_OUT, "msdynmkt_reason": "optout"},
        headers={"If-Match": "*"},
        timeout=TIMEOUT,
    )
    assert updated.status_code == 204
    assert [row["msdynmkt_value"] for row in listed(http, standin, "ada@example.com")] == [OPTED_OUT]
    stored = standin.row("msdynmkt_contactpointconsent4", key)
    assert stored["_msdynmkt_purposeid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "msdynmkt_purpose"


def test_the_source_defaults_to_internal(standin, http):
    body = consent()
    del body["msdynmkt_source"]
    assert post(http, standin, body).status_code == 204
    [row] = standin.rows("msdynmkt_contactpointconsent4").values()
    assert row["msdynmkt_source"] == INTERNAL


def test_a_topic_consent_binds_the_topic_too(standin, http):
    body = consent(
        msdynmkt_contactpointconsenttype=534120001,
        **{"msdynmkt_topicId@odata.bind": f"/msdynmkt_topics({NEWSLETTER_TOPIC_ID})"},
    )
    assert post(http, standin, body).status_code == 204
    [row] = standin.rows("msdynmkt_contactpointconsent4").values()
    assert row["_msdynmkt_topicid_value"] == NEWSLETTER_TOPIC_ID


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        # the navigation property is msdynmkt_purposeId: case matters
        ({"msdynmkt_purposeid@odata.bind": f"/msdynmkt_purposes({COMMERCIAL_PURPOSE_ID})"}, 400, "0x80048d19"),
        ({"msdynmkt_purposeId@odata.bind": "/msdynmkt_purposes(00000000-0000-4000-8000-000000000000)"}, 404,
         "0x80040217"),
        ({"msdynmkt_value": 3}, 400, "0x8004431a"),
        ({"msdynmkt_contactpointtype": "Email"}, 400, "0x80048d19"),
        ({"msdynmkt_modifiedon": "2025-01-01T00:00:00Z"}, 400, "0x0"),  # no such column: modifiedon is standard
        ({"msdynmkt_logicalreason": 534120008}, 400, "0x8004431a"),
    ],
)  # fmt: skip
def test_consent_writes_are_checked_against_the_documented_columns(standin, http, change, status, code):
    body = consent()
    if any(key.lower().startswith("msdynmkt_purposeid@") for key in change):
        del body["msdynmkt_purposeId@odata.bind"]
    response = post(http, standin, {**body, **change})
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert standin.rows("msdynmkt_contactpointconsent4") == {}


def test_there_is_no_alternate_key_to_upsert_by(standin, http):
    address = f"{standin.url}{API}{CONSENTS}(msdynmkt_contactpointvalue='ada@example.com')"
    assert http.patch(address, json={"msdynmkt_value": OPTED_OUT}, timeout=TIMEOUT).status_code == 501


def test_a_user_without_create_on_consent_gets_403_naming_the_privilege(http):
    with DataverseStandIn(presets=("journeys",), privileges={"prvReadmsdynmkt_purpose"}) as server:
        refused = post(http, server, consent())
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == "0x80040220" and "prvCreatemsdynmkt_contactpointconsent4" in error["message"]
