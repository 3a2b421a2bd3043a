"""Registering the Service Bus endpoint and step, and switching classic workflows, against the stand-in over real
HTTP (docs/dataverse-admin.md §3, §4): the documented columns and option values, the SAS key never read back,
the seeded SDK messages, filters and workflows, binds to the endpoint, and the documented state pairs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from optout_dev.standin import CONCEP_WORKFLOWS, OTHER_WORKFLOWS, SDK_MESSAGE_IDS, DataverseStandIn, filter_id

API = "/api/data/v9.2/"
TIMEOUT = 5
MISSING = "00000000-1111-2222-3333-444444444444"
ENDPOINT = {
    "name": "optout campaign log queue",
    "contract": 2,  # Queue
    "connectionmode": 1,
    "authtype": 2,  # SAS Key
    "namespaceaddress": "sb://optout-test.servicebus.windows.net/",
    "solutionnamespace": "optout-test",
    "path": "campaign-log",
    "saskeyname": "dataverse-send",
    "saskey": "not-a-real-key",
    "messageformat": 2,  # Json
    "userclaim": 1,
}

pytestmark = pytest.mark.usefixtures("no_leaked_standin_threads")


@pytest.fixture
def standin() -> Iterator[DataverseStandIn]:
    with DataverseStandIn(presets=("samples", "registration")) as server:
        yield server


def url(server: DataverseStandIn, resource: str) -> str:
    return server.url + API + resource


def created_id(response: requests.Response) -> str:
    assert response.status_code == 204, response.text
    return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def add_endpoint(http: requests.Session, server: DataverseStandIn) -> str:
    return created_id(http.post(url(server, "serviceendpoints"), json=ENDPOINT, timeout=TIMEOUT))


def step(endpoint: str, table: str = "concep_emailcampaignlog") -> dict[str, object]:
    return {
        "name": f"{table} Create -> Service Bus",
        "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint})",
        "sdkmessageid@odata.bind": f"/sdkmessages({SDK_MESSAGE_IDS['Create']})",
        "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id('Create', table)})",
        "stage": 40,
        "mode": 1,
        "rank": 1,
        "supporteddeployment": 0,
        "asyncautodelete": True,
    }


# ----- the service endpoint --------------------------------------------------------------------------------------


def test_an_endpoint_is_found_by_name_and_its_sas_key_is_never_read_back(standin, http):
    endpoint = add_endpoint(http, standin)
    select = "serviceendpointid,name,contract,path,namespaceaddress,authtype,messageformat,issaskeyset"
    found = http.get(
        url(standin, "serviceendpoints"),
        params={"$select": select, "$filter": f"name eq '{ENDPOINT['name']}'"},
        timeout=TIMEOUT,
    ).json()["value"]
    assert [(row["serviceendpointid"], row["contract"], row["messageformat"], row["issaskeyset"]) for row in found] == [
        (endpoint, 2, 2, True)
    ]
    whole = http.get(url(standin, f"serviceendpoints({endpoint})"), timeout=TIMEOUT).json()
    assert {"saskey", "sastoken", "authvalue"}.isdisjoint(whole) and whole["issastokenset"] is False
    for secret in ("saskey", "sastoken", "authvalue"):
        assert (
            http.get(url(standin, "serviceendpoints"), params={"$select": secret}, timeout=TIMEOUT).status_code == 400
        )
    assert standin.rows("serviceendpoint")[endpoint]["saskey"] == "not-a-real-key"  # stored, for the test only


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"contract": 11}, "0x8004431a"),  # not a documented contract
        ({"authtype": 9}, "0x8004431a"),  # Managed Identity: on no reference page (unconfirmed)
        ({"messageformat": "Json"}, "0x80048d19"),
        ({"issaskeyset": True}, "0x80040203"),  # computed, not valid for create
    ],
)
def test_endpoint_values_are_checked_against_the_documented_options(standin, http, change, code):
    response = http.post(url(standin, "serviceendpoints"), json={**ENDPOINT, **change}, timeout=TIMEOUT)
    assert (response.status_code, response.json()["error"]["code"]) == (400, code)


def test_an_endpoint_without_a_system_required_column_is_refused(standin, http):
    body = {key: value for key, value in ENDPOINT.items() if key != "path"}
    response = http.post(url(standin, "serviceendpoints"), json=body, timeout=TIMEOUT)
    assert response.status_code == 400 and "'path'" in response.json()["error"]["message"]


def test_a_changed_key_updates_the_endpoint_in_place(standin, http):
    endpoint = add_endpoint(http, standin)
    patched = http.patch(
        url(standin, f"serviceendpoints({endpoint})"), json={"saskey": "rotated"}, headers={"If-Match": "*"},
        timeout=TIMEOUT,
    )  # fmt: skip
    assert patched.status_code == 204
    assert standin.rows("serviceendpoint")[endpoint]["saskey"] == "rotated"


# ----- messages, filters and the step ----------------------------------------------------------------------------


def test_the_create_message_and_its_filter_for_a_table_are_found_as_documented(standin, http):
    [message] = http.get(
        url(standin, "sdkmessages"), params={"$select": "sdkmessageid", "$filter": "name eq 'Create'"}, timeout=TIMEOUT
    ).json()["value"]
    assert message["sdkmessageid"] == SDK_MESSAGE_IDS["Create"]
    expression = (
        f"primaryobjecttypecode eq 'concep_emailcampaignlog' and _sdkmessageid_value eq {message['sdkmessageid']}"
    )
    [found] = http.get(
        url(standin, "sdkmessagefilters"),
        params={"$select": "sdkmessagefilterid,iscustomprocessingstepallowed", "$filter": expression},
        timeout=TIMEOUT,
    ).json()["value"]
    assert found == {
        "@odata.etag": found["@odata.etag"],
        "sdkmessagefilterid": filter_id("Create", "concep_emailcampaignlog"),
        "iscustomprocessingstepallowed": True,
    }


def test_a_step_binds_the_endpoint_message_and_filter_and_is_listed_by_handler(standin, http):
    endpoint = add_endpoint(http, standin)
    made = created_id(http.post(url(standin, "sdkmessageprocessingsteps"), json=step(endpoint), timeout=TIMEOUT))
    [row] = http.get(
        url(standin, "sdkmessageprocessingsteps"),
        params={
            "$select": "name,stage,mode,asyncautodelete,statecode,statuscode,_sdkmessageid_value,"
            "_sdkmessagefilterid_value",
            "$filter": f"_eventhandler_value eq {endpoint}",
        },
        timeout=TIMEOUT,
    ).json()["value"]
    assert row["sdkmessageprocessingstepid"] == made
    assert (row["stage"], row["mode"], row["asyncautodelete"], row["statecode"], row["statuscode"]) == (
        40,
        1,
        True,
        0,
        1,
    )
    assert row["_sdkmessageid_value"] == SDK_MESSAGE_IDS["Create"]
    assert row["_sdkmessagefilterid_value"] == filter_id("Create", "concep_emailcampaignlog")
    stored = standin.rows("sdkmessageprocessingstep")[made]
    assert stored["_eventhandler_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "serviceendpoint"


def test_a_step_bound_to_a_missing_endpoint_is_refused_with_the_row_named(standin, http):
    response = http.post(url(standin, "sdkmessageprocessingsteps"), json=step(MISSING), timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "0x80040217",
        "message": f"serviceendpoint With Id = {MISSING} Does Not Exist",
    }
    assert standin.rows("sdkmessageprocessingstep") == {}


def test_a_plugin_type_handler_is_not_modelled(standin, http):
    body = {**step(MISSING), "eventhandler_plugintype@odata.bind": f"/plugintypes({MISSING})"}
    del body["eventhandler_serviceendpoint@odata.bind"]
    assert http.post(url(standin, "sdkmessageprocessingsteps"), json=body, timeout=TIMEOUT).status_code == 501


def test_a_step_is_disabled_and_enabled_by_patching_its_state(standin, http):
    endpoint = add_endpoint(http, standin)
    made = created_id(http.post(url(standin, "sdkmessageprocessingsteps"), json=step(endpoint), timeout=TIMEOUT))
    target = url(standin, f"sdkmessageprocessingsteps({made})")

    def patch(body: dict[str, int]) -> int:
        return http.patch(target, json=body, headers={"If-Match": "*"}, timeout=TIMEOUT).status_code

    assert patch({"statecode": 1, "statuscode": 2}) == 204
    assert standin.rows("sdkmessageprocessingstep")[made]["statecode"] == 1
    assert patch({"statecode": 0, "statuscode": 2}) == 400  # Disabled belongs to state 1
    assert patch({"statecode": 0, "statuscode": 1}) == 204
    assert patch({"mode": 2}) == 400


def test_a_step_is_removed_by_delete(standin, http):
    endpoint = add_endpoint(http, standin)
    made = created_id(http.post(url(standin, "sdkmessageprocessingsteps"), json=step(endpoint), timeout=TIMEOUT))
    assert http.delete(url(standin, f"sdkmessageprocessingsteps({made})"), timeout=TIMEOUT).status_code == 204
    assert http.delete(url(standin, f"serviceendpoints({endpoint})"), timeout=TIMEOUT).status_code == 204
    assert standin.rows("sdkmessageprocessingstep") == {} and standin.rows("serviceendpoint") == {}


# ----- classic workflows -----------------------------------------------------------------------------------------


def test_concep_workflows_are_seeded_activated_with_an_unrelated_one_and_a_draft(standin, http):
    rows = http.get(
        url(standin, "workflows"),
        params={"$select": "name,statecode,statuscode,primaryentity", "$filter": "type eq 1 and category eq 0"},
        timeout=TIMEOUT,
    ).json()["value"]
    by_name = {row["name"]: (row["primaryentity"], row["statecode"], row["statuscode"]) for row in rows}
    assert by_name == {
        **dict.fromkeys(CONCEP_WORKFLOWS, ("concep_emailcampaignlog", 1, 2)),
        "Welcome new contact": ("contact", 1, 2),
        "Lead follow-up (draft)": ("lead", 0, 1),
    }
    assert set(OTHER_WORKFLOWS) | set(CONCEP_WORKFLOWS) == set(by_name)


def test_without_the_samples_table_no_concep_workflow_is_seeded(http):
    with DataverseStandIn(presets=("other", "registration")) as server:
        names = {row["name"] for row in server.rows("workflow").values()}
        assert names == set(OTHER_WORKFLOWS)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"statecode": 0, "statuscode": 1}, 204),  # deactivate: Draft/Draft
        ({"statecode": 0}, 204),  # the state's default status reason
        ({"statecode": 0, "statuscode": 2}, 400),  # Activated belongs to state 1
        ({"statecode": 1, "statuscode": 3}, 400),
        ({"statecode": 5}, 400),
    ],
)
def test_only_the_documented_state_pairs_are_accepted(standin, http, body, status):
    workflow = CONCEP_WORKFLOWS["Concep Opt Out (child)"]
    response = http.patch(url(standin, f"workflows({workflow})"), json=body, headers={"If-Match": "*"}, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    row = standin.rows("workflow")[workflow]
    assert (row["statecode"], row["statuscode"]) == ((0, 1) if status == 204 else (1, 2))
