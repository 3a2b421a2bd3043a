"""The Dataverse Web API stand-in, specified by example over real HTTP (see dataverse-webapi.md §1-§4, §12)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.client import HTTPConnection, IncompleteRead
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optout_dev.standin import ENTITY_SETS, DataverseStandIn, Fault
from tests.support.dataverse import stop_during_a_request

CONTACT = "a91d3e55-12f0-ef11-be20-6045bd0f2c11"
MISSING = "00000000-1111-2222-3333-444444444444"
LEAD = "5b7c9d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e"
API = "/api/data/v9.2/"
TIMEOUT = 5


pytestmark = pytest.mark.usefixtures("no_leaked_standin_threads")


@pytest.fixture
def standin() -> Iterator[DataverseStandIn]:
    with DataverseStandIn() as server:
        server.add_row("contact", CONTACT, emailaddress1="ada@example.com", fullname="Ada", donotbulkemail=False)
        yield server


def patch(
    session: requests.Session,
    server: DataverseStandIn,
    resource: str,
    body: object = None,
    *,
    if_match: str | None = "*",
    **kwargs: object,
) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
    if if_match is not None:
        headers["If-Match"] = if_match
    return session.patch(
        server.url + API + resource,
        json={"donotbulkemail": True} if body is None else body,
        headers=headers,
        timeout=TIMEOUT,
        **kwargs,
    )  # type: ignore[arg-type]


def get(session: requests.Session, server: DataverseStandIn, resource: str, **kwargs: object) -> requests.Response:
    return session.get(server.url + API + resource, timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]


def error_of(response: requests.Response) -> tuple[str, str]:
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    return error["code"], error["message"]


# ----- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic bG9jYWwtdG9rZW4=", "local-token"])
def test_a_missing_or_wrong_bearer_token_gets_401_with_a_challenge(standin, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = requests.get(standin.url + API + "WhoAmI", headers=headers, timeout=TIMEOUT)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f"Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize, resource_id={standin.url}"
    )
    code, message = error_of(response)
    assert code == "" and message
    assert standin.writes == []


def test_every_answer_carries_odata_version_and_a_fresh_request_id(standin, http):
    first, second = get(http, standin, "WhoAmI"), requests.get(standin.url + API + "WhoAmI", timeout=TIMEOUT)
    assert first.headers["OData-Version"] == second.headers["OData-Version"] == "4.0"
    assert first.headers["x-ms-service-request-id"] != second.headers["x-ms-service-request-id"]


def test_rotate_token_makes_the_old_token_answer_401_like_an_expired_one(standin, http):
    assert get(http, standin, "WhoAmI").status_code == 200
    standin.rotate_token("fresh-token")
    assert get(http, standin, "WhoAmI").status_code == 401
    http.headers["Authorization"] = "Bearer fresh-token"
    assert get(http, standin, "WhoAmI").status_code == 200


def test_without_an_application_user_every_authenticated_call_gets_403(http):
    with DataverseStandIn(app_user=False) as server:
        server.add_row("contact", CONTACT)
        for response in (get(http, server, "WhoAmI"), patch(http, server, f"contacts({CONTACT})")):
            assert response.status_code == 403
            assert error_of(response) == ("0x80072560", "The user is not a member of the organization.")
        assert server.row("contact", CONTACT) == {"contactid": CONTACT}
        # ... while a bad token is still an authentication failure first.
        assert requests.get(server.url + API + "WhoAmI", timeout=TIMEOUT).status_code == 401


def test_the_authorization_header_is_never_recorded(standin, http):
    get(http, standin, "WhoAmI")
    (recorded,) = standin.requests
    assert recorded.method == "GET" and recorded.path == API + "WhoAmI" and recorded.status == 200
    assert "authorization" not in {name.lower() for name in recorded.headers}
    assert recorded.headers["OData-MaxVersion"] == "4.0"


# ----- PATCH (update-only) --------------------------------------------------------------------------


def test_patch_with_if_match_star_updates_an_existing_row_and_answers_204(standin, http):
    response = patch(http, standin, f"contacts({CONTACT})")
    assert response.status_code == 204 and response.content == b""
    assert response.headers["OData-EntityId"] == f"{standin.url}{API}contacts({CONTACT})"
    assert standin.row("contact", CONTACT) == {
        "contactid": CONTACT,
        "emailaddress1": "ada@example.com",
        "fullname": "Ada",
        "donotbulkemail": True,
    }
    assert standin.writes == [("contact", CONTACT, {"donotbulkemail": True})]
    assert standin.requests[-1].body == b'{"donotbulkemail": true}'
    assert standin.client_bugs == []


def test_the_guid_in_the_url_is_case_insensitive(standin, http):
    assert patch(http, standin, f"contacts({CONTACT.upper()})").status_code == 204
    assert standin.row("contact", CONTACT)["donotbulkemail"] is True


def test_prefer_return_representation_answers_200_with_the_row(standin, http):
    response = patch(
        http, standin, f"contacts({CONTACT})?$select=donotbulkemail", headers={"Prefer": "return=representation"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["donotbulkemail"] is True and body["contactid"] == CONTACT
    assert "emailaddress1" not in body and body["@odata.etag"].startswith('W/"')


@pytest.mark.parametrize("not_found_code", ["0x80040217", ""])
def test_patch_to_a_missing_row_answers_404_and_creates_nothing(http, not_found_code):
    with DataverseStandIn(not_found_code=not_found_code) as server:
        response = patch(http, server, f"contacts({MISSING})")
        assert response.status_code == 404
        assert error_of(response) == (not_found_code, f"contact With Id = {MISSING} Does Not Exist")
        assert server.row("contact", MISSING) is None and server.writes == []
        assert server.client_bugs == []


def test_a_deleted_row_is_not_found(standin, http):
    standin.delete_row("contact", CONTACT)
    assert patch(http, standin, f"contacts({CONTACT})").status_code == 404
    assert standin.rows("contact") == {}


@pytest.mark.parametrize("entity_set", ["Contacts", "contact", "contactz"])
def test_an_unknown_entity_set_answers_404_0x8006088a(standin, http, entity_set):
    response = patch(http, standin, f"{entity_set}({CONTACT})")
    assert response.status_code == 404
    assert error_of(response) == ("0x8006088a", f"Resource not found for the segment '{entity_set}'.")


def test_the_default_tables_are_contact_lead_and_account(standin, http):
    assert set(ENTITY_SETS) == {"contact", "lead", "account"}
    standin.add_row("lead", LEAD)
    assert patch(http, standin, f"leads({LEAD})").status_code == 204
    assert patch(http, standin, f"accounts({LEAD})").status_code == 404  # same id, other table


def test_an_unknown_column_answers_400_0x0_and_changes_nothing(standin, http):
    response = patch(http, standin, f"contacts({CONTACT})", {"donotbulkemail": True, "DoNotBulkEmail": True})
    assert response.status_code == 400
    assert error_of(response) == (
        "0x0",
        "Invalid property 'DoNotBulkEmail' was found in entity 'Microsoft.Dynamics.CRM.contact'.",
    )
    assert standin.row("contact", CONTACT)["donotbulkemail"] is False and standin.writes == []


@pytest.mark.parametrize("value", ["true", 1, [True]])
def test_a_boolean_column_needs_a_json_boolean(standin, http, value):
    response = patch(http, standin, f"contacts({CONTACT})", {"donotbulkemail": value})
    assert response.status_code == 400 and error_of(response)[0] == "0x80048d19"
    assert standin.writes == []


@pytest.mark.parametrize("body", [b"[1]", b"not json", b'"x"', b""])
def test_a_body_that_is_not_a_json_object_answers_400_0x80048d19(standin, http, body):
    response = http.patch(
        standin.url + API + f"contacts({CONTACT})",
        data=body,
        timeout=TIMEOUT,
        headers={"If-Match": "*", "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and error_of(response)[0] == "0x80048d19"


def test_a_json_body_needs_content_type_application_json(standin, http):
    response = http.patch(
        standin.url + API + f"contacts({CONTACT})",
        data=b'{"donotbulkemail": true}',
        headers={"If-Match": "*", "Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400 and standin.writes == []


def test_patch_without_if_match_is_a_client_bug_and_never_creates_the_row(standin, http):
    response = patch(http, standin, f"contacts({MISSING})", if_match=None)
    assert response.status_code == 400 and error_of(response)[0] == "STANDIN_UPSERT"
    assert standin.row("contact", MISSING) is None
    # Even for an existing row: the stand-in refuses, so the bug cannot go unnoticed.
    assert patch(http, standin, f"contacts({CONTACT})", if_match=None).status_code == 400
    assert standin.row("contact", CONTACT)["donotbulkemail"] is False and standin.writes == []
    bugs = standin.client_bugs
    assert len(bugs) == 2 and all("If-Match" in bug and "upsert" in bug for bug in bugs)


def test_if_none_match_star_on_patch_is_a_client_bug_answered_412(standin, http):
    response = patch(http, standin, f"contacts({CONTACT})", headers={"If-None-Match": "*"})
    assert response.status_code == 412
    assert len(standin.client_bugs) == 1 and standin.writes == []


def test_if_match_with_an_etag_is_optimistic_concurrency(standin, http):
    etag = get(http, standin, f"contacts({CONTACT})").json()["@odata.etag"]
    assert patch(http, standin, f"contacts({CONTACT})", if_match='W/"1"').status_code == 412
    assert patch(http, standin, f"contacts({CONTACT})", if_match=etag).status_code == 204
    assert patch(http, standin, f"contacts({CONTACT})", if_match=etag).status_code == 412  # now stale
    assert patch(http, standin, f"contacts({MISSING})", if_match=etag).status_code == 404


def test_a_key_that_is_not_a_guid_answers_400(standin, http):
    response = patch(http, standin, "contacts(not-a-guid)")
    assert response.status_code == 400 and error_of(response)[0] == "0x80060888"


# ----- GET ------------------------------------------------------------------------------------------------


def test_get_with_select_returns_the_selected_columns_the_key_and_an_etag(standin, http):
    response = get(http, standin, f"contacts({CONTACT})", params={"$select": "donotbulkemail,emailaddress1"})
    assert response.status_code == 200
    body = response.json()
    assert body.pop("@odata.etag").startswith('W/"')
    assert body.pop("@odata.context").endswith("#contacts(donotbulkemail,emailaddress1)/$entity")
    assert body == {"donotbulkemail": False, "emailaddress1": "ada@example.com", "contactid": CONTACT}


def test_get_without_select_returns_every_column_null_when_unset(standin, http):
    body = get(http, standin, f"contacts({CONTACT})").json()
    assert body["fullname"] == "Ada" and body["donotemail"] is None


def test_get_with_an_unknown_select_column_answers_400_0x0(standin, http):
    response = get(http, standin, f"contacts({CONTACT})", params={"$select": "donotbulkemail,nosuchcolumn"})
    assert response.status_code == 400
    assert error_of(response) == (
        "0x0",
        "Could not find a property named 'nosuchcolumn' on type 'Microsoft.Dynamics.CRM.contact'.",
    )


def test_get_of_a_missing_row_answers_404(standin, http):
    response = get(http, standin, f"contacts({MISSING})")
    assert response.status_code == 404
    assert error_of(response) == ("0x80040217", f"contact With Id = {MISSING} Does Not Exist")


def test_whoami_returns_the_fixed_identity(standin, http):
    response = get(http, standin, "WhoAmI")
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"].endswith("#Microsoft.Dynamics.CRM.WhoAmIResponse")
    assert body["UserId"] == standin.user_id and body["OrganizationId"] == standin.organization_id
    assert body["BusinessUnitId"] == standin.business_unit_id


@pytest.mark.parametrize(
    ("method", "resource", "status"),
    [
        ("POST", "WhoAmI", 405),
        ("POST", f"contacts({CONTACT})", 405),
        ("PUT", f"contacts({CONTACT})/donotbulkemail", 501),  # real, but not modelled: never pretend
        ("GET", "contacts?$orderby=fullname", 501),
        ("POST", "$batch", 400),  # modelled now: a JSON body is not a multipart batch
        ("GET", "$batch", 405),
        ("POST", "EntityDefinitions", 501),
        ("POST", "contacts/Microsoft.Dynamics.CRM.UpdateMultiple", 501),
    ],
)
def test_other_methods_and_paths_answer_405_or_501(standin, http, method, resource, status):
    response = http.request(method, standin.url + API + resource, json={}, timeout=TIMEOUT)
    assert response.status_code == status
    assert standin.row("contact", CONTACT) is not None


def test_paths_outside_the_v9_2_api_answer_404(standin, http):
    assert http.get(standin.url + "/api/data/v9.1/WhoAmI", timeout=TIMEOUT).status_code == 404
    assert http.get(standin.url + "/", timeout=TIMEOUT).status_code == 404


# ----- faults ---------------------------------------------------------------------------------------------


def test_an_injected_429_carries_retry_after_and_the_next_request_succeeds(standin, http):
    standin.inject(Fault(status=429, retry_after=1.2))
    throttled = patch(http, standin, f"contacts({CONTACT})")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2"  # whole seconds, rounded up
    assert error_of(throttled) == (
        "0x80072322",
        "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
    )
    assert standin.writes == []
    assert patch(http, standin, f"contacts({CONTACT})").status_code == 204
    assert [r.status for r in standin.requests] == [429, 204]


def test_a_429_always_has_retry_after_and_codes_can_be_overridden(standin, http):
    standin.inject(
        Fault(status=429),
        Fault(
            status=429,
            retry_after=0,
            code="0x80072326",
            message="Number of concurrent requests exceeded the limit of 52.",
        ),
    )
    assert get(http, standin, "WhoAmI").headers["Retry-After"] == "1"
    second = get(http, standin, "WhoAmI")
    assert second.headers["Retry-After"] == "0" and error_of(second)[0] == "0x80072326"


@pytest.mark.parametrize(("status", "code"), [(503, ""), (500, "0x80040216"), (502, ""), (504, "")])
def test_injected_server_errors_have_json_bodies(standin, http, status, code):
    standin.inject(Fault(status=status))
    response = patch(http, standin, f"contacts({CONTACT})")
    assert response.status_code == status and error_of(response)[0] == code


def test_faults_apply_before_authentication(standin):
    standin.inject(Fault(status=503))
    assert requests.get(standin.url + API + "WhoAmI", timeout=TIMEOUT).status_code == 503


def test_an_injected_401_behaves_like_an_expired_token(standin, http):
    standin.inject(Fault(status=401))
    response = get(http, standin, "WhoAmI")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert get(http, standin, "WhoAmI").status_code == 200


def test_an_injected_drop_is_a_connection_error_without_any_bytes(standin, http):
    standin.inject(Fault(drop=True))
    with pytest.raises(requests.ConnectionError):
        patch(http, standin, f"contacts({CONTACT})")
    assert standin.requests[-1].status == 0 and standin.writes == []
    assert patch(http, standin, f"contacts({CONTACT})").status_code == 204


def test_a_cut_answer_commits_the_write_then_breaks_off_mid_body(standin, http):
    standin.inject(Fault(cut=True))
    # requests reads the body inside send(): the status is never seen, urllib3's IncompleteRead surfaces.
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        patch(http, standin, f"contacts({CONTACT})")
    assert standin.writes == [("contact", CONTACT, {"donotbulkemail": True})]  # served first: committed
    (cut,) = standin.requests
    assert cut.cut and cut.status == 503  # a 204 has no body to cut: the fault's own answer is cut instead
    assert patch(http, standin, f"contacts({CONTACT})").status_code == 204  # the session reconnects
    assert [(r.status, r.cut) for r in standin.requests] == [(503, True), (204, False)]


@pytest.mark.parametrize(("method", "status"), [("GET", 200), ("PATCH", 502)])
def test_a_cut_answer_announces_more_body_than_it_sends_then_closes(standin, method, status):
    standin.inject(Fault(status=502, cut=True))
    connection = HTTPConnection(urlsplit(standin.url).hostname, urlsplit(standin.url).port, timeout=TIMEOUT)
    try:
        connection.request(
            method,
            API + f"contacts({CONTACT})",
            body=b'{"donotbulkemail":true}' if method == "PATCH" else None,
            headers={"Authorization": "Bearer local-token", "If-Match": "*", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        # A served answer with a body (the GET's 200) keeps its status line; a bodiless 204 becomes the 502.
        assert response.status == status and response.headers["Content-Type"].startswith("application/json")
        announced = int(response.headers["Content-Length"])
        with pytest.raises(IncompleteRead) as broken:
            response.read()
    finally:
        connection.close()
    assert 0 < len(broken.value.partial) < announced and broken.value.expected == announced - len(broken.value.partial)
    whole = requests.get(
        standin.url + API + f"contacts({CONTACT})", headers={"Authorization": "Bearer local-token"}, timeout=TIMEOUT
    )
    if method == "GET":
        assert whole.content.startswith(broken.value.partial) and len(whole.content) == announced
    assert standin.row("contact", CONTACT)["donotbulkemail"] is (method == "PATCH")
    assert standin.requests[0].status == status and standin.requests[0].cut


@pytest.mark.parametrize(
    "text", ["10000000000", "inf", "1e400", "-5", "soon", "Fri, 01 Jan 2100 00:00:00 GMT", "2.5", ""]
)
def test_retry_after_header_is_sent_exactly_as_given(standin, http, text):
    standin.inject(Fault(status=429, retry_after_header=text), Fault(status=503, retry_after_header=text))
    for status in (429, 503):
        response = get(http, standin, "WhoAmI")
        assert response.status_code == status
        assert response.raw.headers.getlist("Retry-After") == [text]  # instead of the numeric one, not besides
    assert get(http, standin, "WhoAmI").status_code == 200


def test_an_injected_delay_provokes_a_client_read_timeout(standin, http):
    standin.inject(Fault(status=503, delay=2))
    with pytest.raises(requests.ReadTimeout):
        http.get(standin.url + API + "WhoAmI", timeout=(TIMEOUT, 0.2))
    # stop() (by the fixture) wakes the sleeping handler instead of waiting out the delay


def test_faults_filter_on_method_and_path_and_queue_fifo(standin, http):
    standin.add_row("lead", LEAD)
    standin.inject(
        Fault(status=503, method="PATCH", path_contains="leads("), Fault(status=502, method="PATCH"), times=2
    )
    assert standin.pending_faults == 4
    assert get(http, standin, f"leads({LEAD})").status_code == 200  # GET: no match
    assert patch(http, standin, f"contacts({CONTACT})").status_code == 502  # first matching fault
    assert patch(http, standin, f"leads({LEAD})").status_code == 503
    assert patch(http, standin, f"leads({LEAD})").status_code == 503
    assert patch(http, standin, f"leads({LEAD})").status_code == 502
    assert patch(http, standin, f"leads({LEAD})").status_code == 204
    assert standin.pending_faults == 0


def test_a_seeded_fault_rate_is_deterministic(http):
    def statuses(seed: int, rate: float) -> list[int]:
        with DataverseStandIn() as server:
            server.add_row("contact", CONTACT)
            server.set_fault_rate(rate, [Fault(status=503), Fault(status=429, retry_after=0)], seed=seed)
            return [patch(http, server, f"contacts({CONTACT})").status_code for _ in range(40)]

    first = statuses(7, 0.5)
    assert first == statuses(7, 0.5)
    assert {503, 429, 204} <= set(first)
    assert first != statuses(8, 0.5)
    assert set(statuses(7, 0.0)) == {204}


def test_a_fault_rate_can_be_switched_off(standin, http):
    standin.set_fault_rate(1.0, [Fault(status=503)])
    assert get(http, standin, "WhoAmI").status_code == 503
    standin.set_fault_rate(0, [])
    assert get(http, standin, "WhoAmI").status_code == 200


def test_invalid_faults_are_refused():
    with pytest.raises(ValueError):
        Fault(status=200)
    with pytest.raises(ValueError):
        Fault(retry_after=-1)
    for fault in (
        {"cut": True, "drop": True},
        {"cut": True, "inner": True},
        {"retry_after": 1, "retry_after_header": "1"},
        {"status": 429, "retry_after_header": "1\r\nX-Injected: yes"},
    ):
        with pytest.raises(ValueError):
            Fault(**fault)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DataverseStandIn().set_fault_rate(1.5, [Fault()])


# ----- seeding ----------------------------------------------------------------------------------------------


def test_seeding_validates_tables_columns_and_ids():
    server = DataverseStandIn()
    with pytest.raises(ValueError):
        server.add_row("contact", CONTACT, nosuchcolumn=1)
    with pytest.raises(ValueError):
        server.add_row("opportunity", CONTACT)
    with pytest.raises(ValueError):
        server.add_row("contact", "not-a-guid")
    server.add_row("contact", CONTACT.upper(), donotbulkemail="stored as given")
    assert server.row("contact", CONTACT) == {"contactid": CONTACT, "donotbulkemail": "stored as given"}
    copy = server.row("contact", CONTACT)
    copy["donotbulkemail"] = True
    assert server.row("contact", CONTACT)["donotbulkemail"] == "stored as given"


def test_extra_tables_need_their_entity_set(http):
    with pytest.raises(ValueError):
        DataverseStandIn(tables={"opportunity": ["name"]})
    with DataverseStandIn(
        tables={"contact": ["donotbulkemail"], "opportunity": ["name"]}, entity_sets={"opportunity": "opportunities"}
    ) as server:
        server.add_row("opportunity", LEAD, name="Deal")
        assert patch(http, server, f"opportunities({LEAD})", {"name": "Big deal"}).status_code == 204
        assert server.row("opportunity", LEAD) == {"opportunityid": LEAD, "name": "Big deal"}
        assert patch(http, server, f"leads({LEAD})").status_code == 404  # tables= replaces the defaults
        assert patch(http, server, f"contacts({CONTACT})", {"emailaddress1": "x"}).status_code == 400


def test_patched_values_read_back_unchanged():
    with DataverseStandIn() as server, requests.Session() as session:
        session.headers["Authorization"] = "Bearer local-token"
        server.add_row("account", CONTACT)

        @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            st.fixed_dictionaries(
                {},
                optional={
                    "donotbulkemail": st.booleans(),
                    "donotemail": st.none() | st.booleans(),
                    "name": st.text(max_size=20),
                    "emailaddress1": st.none() | st.text(max_size=20),
                },
            )
        )
        def roundtrip(changes: dict[str, object]) -> None:
            assert patch(session, server, f"accounts({CONTACT})", changes).status_code == 204
            body = get(session, server, f"accounts({CONTACT})").json()
            assert {column: body[column] for column in changes} == changes
            assert server.writes[-1] == ("account", CONTACT, changes)

        roundtrip()
        assert server.client_bugs == []


# ----- the server itself -------------------------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(standin):
    host, port = urlsplit(standin.url).hostname, urlsplit(standin.url).port
    connection = HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        for _ in range(3):
            connection.request(
                "PATCH",
                API + f"contacts({CONTACT})",
                body=b'{"donotbulkemail":true}',
                headers={"Authorization": "Bearer local-token", "If-Match": "*", "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            assert response.status == 204 and response.read() == b""
            assert not response.will_close
        sock = connection.sock
        connection.request("GET", API + "WhoAmI", headers={"Authorization": "Bearer local-token"})
        response = connection.getresponse()
        assert response.status == 200 and int(response.headers["Content-Length"]) == len(response.read())
        assert connection.sock is sock  # same socket throughout
    finally:
        connection.close()
    assert len(standin.writes) == 3


def test_the_server_binds_127_0_0_1_only(standin):
    host, port = urlsplit(standin.url).hostname, urlsplit(standin.url).port
    assert host == "127.0.0.1" and port
    # All of 127/8 is loopback on Linux: a server bound to 0.0.0.0 would accept on 127.0.0.2.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", port), timeout=1).close()


def test_stop_frees_the_port_closes_connections_and_is_idempotent(http):
    server = DataverseStandIn().start()
    port = urlsplit(server.url).port
    assert get(http, server, "WhoAmI").status_code == 200  # leaves an idle keep-alive connection
    server.stop()
    server.stop()
    assert [t for t in threading.enumerate() if t.name.startswith("dataverse-standin") and t.is_alive()] == []
    with pytest.raises(requests.ConnectionError):
        get(http, server, "WhoAmI")
    with socket.socket() as probe:  # the port can be bound again at once
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    with DataverseStandIn(port=port) as again:
        assert again.url == server.url
        assert get(http, again, "WhoAmI").status_code == 200


def test_stop_does_not_wait_for_a_delayed_answer():
    server = DataverseStandIn().start()
    server.inject(Fault(status=503, delay=60))
    stopped, outcome = stop_during_a_request(server)
    assert stopped and outcome == [requests.ConnectionError]


def test_url_is_unavailable_before_start():
    with pytest.raises(RuntimeError):
        _ = DataverseStandIn().url
