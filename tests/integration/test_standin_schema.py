"""The stand-in's typed schema and generic collections, specified by example over real HTTP: queries with
``$select``/``$filter``/``$top``, creates with ``@odata.bind``, deletes, and writes checked by column type
(docs/dataverse-webapi.md §1, §2, §8; docs/dataverse-admin.md §1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from optout_dev.standin import (
    DEFAULT_TABLES,
    SAMPLES_ACTIVITY_OPTIONS,
    Column,
    DataverseStandIn,
    Option,
    Table,
)
from tests.integration.test_standin_batch import changeset, flat, multipart, operation, post_batch

API = "/api/data/v9.2/"
TIMEOUT = 5
ADA = "a1000000-0000-4000-8000-00000000000a"
BOB = "a1000000-0000-4000-8000-00000000000b"
LEAD = "b2000000-0000-4000-8000-00000000000c"
LOG = "5c1e8a72-4f10-f011-998a-6045bd0f2d99"
MISSING = "00000000-1111-2222-3333-444444444444"
LOOKUP_TABLE = "@Microsoft.Dynamics.CRM.lookuplogicalname"

pytestmark = pytest.mark.usefixtures("no_leaked_standin_threads")


@pytest.fixture
def standin() -> Iterator[DataverseStandIn]:
    with DataverseStandIn(presets=("samples",)) as server:
        server.add_row("contact", ADA, emailaddress1="ada@example.com", firstname="Ada", donotbulkemail=False)
        server.add_row("contact", BOB, emailaddress1="bob@example.com", firstname="Bob", donotbulkemail=True)
        server.add_row("lead", LEAD, emailaddress1="cy@example.com")
        yield server


def url(server: DataverseStandIn, resource: str) -> str:
    return server.url + API + resource


def error_of(response: requests.Response) -> tuple[str, str]:
    body = response.json()["error"]
    return body["code"], body["message"]


def query(http: requests.Session, server: DataverseStandIn, resource: str, **params: str) -> requests.Response:
    return http.get(url(server, resource), params=params, timeout=TIMEOUT)


def create(
    http: requests.Session, server: DataverseStandIn, entity_set: str, body: object, **headers: str
) -> requests.Response:
    return http.post(url(server, entity_set), json=body, headers=headers, timeout=TIMEOUT)


def a_log(**extra: object) -> dict[str, object]:
    return {"concep_name": "Spring", "concep_activitytype": 100000003, **extra}


# ----- a plain column set is typed by name ---------------------------------------------------------------------


def test_plain_column_sets_are_still_accepted_and_typed_by_name(http):
    tables = {"contact": ["donotbulkemail", "nickname"], "thing": ["statecode", "statuscode", "_ownerx_value"]}
    with DataverseStandIn(tables=tables, entity_sets={"thing": "things"}) as server:
        contact, thing = server.tables["contact"], server.tables["thing"]
        assert contact.column("donotbulkemail").type == "Boolean"
        assert contact.column("nickname").type == "String"
        assert contact.schema_name == "Contact"  # contact keeps what the stand-in knows of it
        assert (thing.column("statecode").type, thing.column("statuscode").type) == ("State", "Status")
        assert thing.column("ownerx").type == "Lookup" and thing.column("ownerx").read_name == "_ownerx_value"
    assert set(DataverseStandIn().tables) == set(DEFAULT_TABLES)


def test_a_typed_table_can_be_served_as_given(http):
    colour = Column("colour", "Picklist", (Option(1, "Red"), Option(2, "Blue")))
    with DataverseStandIn(tables={"paint": Table("paint", "paints", (colour,))}) as server:
        made = create(http, server, "paints", {"colour": 2})
        assert made.status_code == 204
        assert [row["colour"] for row in server.rows("paint").values()] == [2]


# ----- collection queries ----------------------------------------------------------------------------------------


def test_a_collection_query_answers_value_with_the_selection_and_the_key(standin, http):
    response = query(http, standin, "contacts", **{"$select": "firstname,donotbulkemail"})
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"].endswith("$metadata#contacts(firstname,donotbulkemail)")
    assert [(row["firstname"], row["donotbulkemail"], row["contactid"]) for row in body["value"]] == [
        ("Ada", False, ADA),
        ("Bob", True, BOB),
    ]
    assert all(row["@odata.etag"].startswith('W/"') for row in body["value"])


def test_without_select_every_readable_column_is_returned(standin, http):
    [row] = query(http, standin, "leads").json()["value"]
    assert set(row) - {"@odata.etag"} == set(standin.tables["lead"].readable)


@pytest.mark.parametrize(
    ("expression", "firstnames"),
    [
        ("firstname eq 'Ada'", ["Ada"]),
        ("emailaddress1 eq 'BOB@example.com'", ["Bob"]),  # text compares case-insensitively, as in Dataverse
        ("firstname ne 'Ada'", ["Bob"]),
        ("lastname ne 'Lovelace'", []),  # as SQL's <>: a null column matches no 'ne' of a value
        ("lastname eq null", ["Ada", "Bob"]),
        ("donotbulkemail eq true", ["Bob"]),
        ("donotbulkemail eq false and firstname eq 'Ada'", ["Ada"]),
        ("statecode eq 0", []),  # never set: null is not 0
        ("statecode eq null", ["Ada", "Bob"]),
        (f"contactid eq {ADA}", ["Ada"]),
        ("firstname eq 'O''Neil'", []),
    ],
)
def test_filter_clauses_joined_by_and(standin, http, expression, firstnames):
    response = query(http, standin, "contacts", **{"$select": "firstname", "$filter": expression})
    assert response.status_code == 200, response.text
    assert [row["firstname"] for row in response.json()["value"]] == firstnames


def test_a_lookup_is_filtered_and_read_as_underscore_value_with_its_table_on_request(standin, http):
    standin.add_row("concep_emailcampaignlog", LOG, **a_log(_concep_contactid_value=ADA))
    standin.add_row("concep_emailcampaignlog", MISSING, concep_name="other")
    plain = query(http, standin, "concep_emailcampaignlogs", **{"$filter": f"_concep_contactid_value eq {ADA}"})
    [row] = plain.json()["value"]
    assert row["_concep_contactid_value"] == ADA and f"_concep_contactid_value{LOOKUP_TABLE}" not in row
    annotated = http.get(
        url(standin, "concep_emailcampaignlogs"),
        params={"$select": "_concep_contactid_value", "$filter": f"_concep_contactid_value eq {ADA.upper()}"},
        headers={"Prefer": 'odata.include-annotations="*"'},
        timeout=TIMEOUT,
    )
    [row] = annotated.json()["value"]
    assert row[f"_concep_contactid_value{LOOKUP_TABLE}"] == "contact"  # its one target


def test_top_limits_the_rows(standin, http):
    assert len(query(http, standin, "contacts", **{"$top": "1"}).json()["value"]) == 1


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"$select": "nosuchcolumn"}, 400),
        ({"$filter": "nosuchcolumn eq 1"}, 400),
        ({"$filter": "donotbulkemail eq 'true'"}, 400),  # a literal of the wrong type
        ({"$filter": "_concep_recipientid_value eq 'x'"}, 400),
        ({"$filter": "firstname eq 'Ada' or firstname eq 'Bob'"}, 501),
        ({"$filter": "contains(firstname,'A')"}, 501),
        ({"$orderby": "firstname"}, 501),
        ({"$expand": "parentcustomerid"}, 501),
        ({"$top": "x"}, 400),
    ],
)
def test_queries_outside_the_model_are_refused_loudly(standin, http, params, status):
    resource = "concep_emailcampaignlogs" if "_concep" in str(params) else "contacts"
    assert query(http, standin, resource, **params).status_code == status


@pytest.mark.parametrize(
    "where",
    [
        "firstname eq Opt-out bounce-handler v2-final-copy",  # a text value sent unquoted
        "firstname eq 'Ada",
        "firstname = 'Ada'",
        "firstname eq",
        "firstname eq 'Ada' and",
    ],
)
def test_a_malformed_filter_is_a_syntax_error_not_a_missing_feature(standin, http, where):
    answer = query(http, standin, "contacts", **{"$filter": where})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "0x80060888"
    assert error["message"].startswith("Syntax error at position ") and error["message"].endswith(f" in '{where}'.")


# ----- create -----------------------------------------------------------------------------------------------------


def test_create_answers_204_with_the_new_row_in_odata_entityid(standin, http):
    made = create(http, standin, "contacts", {"firstname": "Cy", "donotbulkemail": False})
    assert made.status_code == 204
    new_id = made.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    assert made.headers["OData-EntityId"] == f"{standin.url}{API}contacts({new_id})"
    assert standin.row("contact", new_id)["firstname"] == "Cy"
    assert standin.writes[-1][:2] == ("contact", new_id)


def test_create_with_return_representation_answers_201_and_the_row(standin, http):
    made = create(http, standin, "contacts", {"firstname": "Cy"}, Prefer="return=representation")
    assert made.status_code == 201
    body = made.json()
    assert body["firstname"] == "Cy" and body["contactid"] in made.headers["OData-EntityId"]
    assert made.headers["ETag"] == body["@odata.etag"]


def test_a_client_supplied_primary_key_is_honoured_and_a_taken_one_refused(standin, http):
    new_id = "c0ffee00-0000-4000-8000-000000000001"
    assert create(http, standin, "contacts", {"contactid": new_id}).status_code == 204
    assert standin.row("contact", new_id) is not None
    again = create(http, standin, "contacts", {"contactid": new_id})
    assert again.status_code == 412 and error_of(again)[0] == "0x80040237"


def test_a_bind_sets_the_lookup_and_its_table(standin, http):
    made = create(
        http, standin, "concep_emailcampaignlogs", a_log(**{"concep_recipientid_lead@odata.bind": f"/leads({LEAD})"})
    )
    assert made.status_code == 204, made.text
    [row] = standin.rows("concep_emailcampaignlog").values()
    assert row["_concep_recipientid_value"] == LEAD and row[f"_concep_recipientid_value{LOOKUP_TABLE}"] == "lead"
    assert row["statecode"] == 0 and row["statuscode"] == 1  # defaults, as the platform fills them
    assert row["_ownerid_value"] == standin.user_id


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (a_log(**{"concep_contactid@odata.bind": f"/contacts({MISSING})"}), 404, "0x80040217"),
        (a_log(**{"concep_contactid@odata.bind": f"/leads({LEAD})"}), 400, "0x80048d19"),  # not a target
        (a_log(**{"concep_nosuch@odata.bind": f"/contacts({ADA})"}), 400, "0x80048d19"),
        (a_log(_concep_contactid_value=ADA), 400, "0x80048d19"),  # lookups are set with a bind only
        (a_log(concep_contactid=ADA), 400, "0x0"),
        (a_log(concep_nosuch=1), 400, "0x0"),
        (a_log(concep_activitytype=42), 400, "0x8004431a"),  # not one of the options
        (a_log(concep_activitytype="Spam Report"), 400, "0x80048d19"),
        (a_log(createdon="2025-01-01T00:00:00Z"), 400, "0x80040203"),  # not valid for create
        (a_log(statuscode=2), 400, "0x80040203"),  # Inactive belongs to statecode 1, not the default 0
    ],
)
def test_create_checks_columns_types_and_binds(standin, http, body, status, code):
    made = create(http, standin, "concep_emailcampaignlogs", body)
    assert (made.status_code, error_of(made)[0]) == (status, code), made.text
    assert standin.rows("concep_emailcampaignlog") == {}


def test_a_missing_bind_target_names_the_row(standin, http):
    made = create(http, standin, "concep_emailcampaignlogs", {"concep_contactid@odata.bind": f"/contacts({MISSING})"})
    assert error_of(made) == ("0x80040217", f"contact With Id = {MISSING} Does Not Exist")


def test_an_out_of_range_choice_names_the_accepted_values(standin, http):
    made = create(http, standin, "concep_emailcampaignlogs", a_log(concep_activitytype=42))
    accepted = ",".join(str(value) for value in SAMPLES_ACTIVITY_OPTIONS)
    assert error_of(made)[1] == (
        "A validation error occurred. The value 42 of 'concep_activitytype' on record of type "
        f"'concep_emailcampaignlog' is outside the valid range. Accepted Values: {accepted}"
    )


def test_a_missing_system_required_column_is_refused(http):
    with DataverseStandIn(presets=("registration",)) as server:
        made = create(http, server, "workflows", {"name": "x", "category": 0, "type": 1})
        assert made.status_code == 400 and "'primaryentity'" in error_of(made)[1]


def test_a_missing_business_required_column_is_accepted_and_flagged(standin, http):
    assert create(http, standin, "concep_emailcampaignlogs", {"concep_activitytype": 100000000}).status_code == 204
    [bug] = standin.client_bugs
    assert "concep_name" in bug and "accepts it" in bug


# ----- update and delete -----------------------------------------------------------------------------------------


def test_patch_checks_types_and_settles_the_status_of_a_new_state(standin, http):
    standin.add_row("concep_emailcampaignlog", LOG, **a_log(statecode=0, statuscode=1))
    target = url(standin, f"concep_emailcampaignlogs({LOG})")
    assert http.patch(target, json={"statecode": 1}, headers={"If-Match": "*"}, timeout=TIMEOUT).status_code == 204
    assert standin.row("concep_emailcampaignlog", LOG)["statuscode"] == 2  # Inactive: the state's default
    wrong = http.patch(target, json={"statuscode": 1}, headers={"If-Match": "*"}, timeout=TIMEOUT)
    assert wrong.status_code == 400 and "not a valid status code" in error_of(wrong)[1]
    bad = http.patch(target, json={"concep_activitytype": 7}, headers={"If-Match": "*"}, timeout=TIMEOUT)
    assert bad.status_code == 400 and error_of(bad)[0] == "0x8004431a"
    rebind = {"concep_contactid@odata.bind": f"/contacts({BOB})"}
    assert http.patch(target, json=rebind, headers={"If-Match": "*"}, timeout=TIMEOUT).status_code == 204
    assert standin.row("concep_emailcampaignlog", LOG)["_concep_contactid_value"] == BOB


def test_delete_answers_204_then_404(standin, http):
    assert http.delete(url(standin, f"contacts({ADA})"), timeout=TIMEOUT).status_code == 204
    assert standin.row("contact", ADA) is None
    gone = http.delete(url(standin, f"contacts({ADA})"), timeout=TIMEOUT)
    assert gone.status_code == 404 and error_of(gone) == ("0x80040217", f"contact With Id = {ADA} Does Not Exist")


# ----- the same inside $batch -----------------------------------------------------------------------------------


def test_create_patch_and_delete_run_inside_a_batch(standin, http):
    body = multipart(
        [
            operation("POST", f"{API}contacts", {"firstname": "Dee"}),
            operation("DELETE", f"{API}contacts({BOB})"),
            operation("PATCH", f"{API}contacts({ADA})", {"donotbulkemail": True}, headers=[("If-Match", "*")]),
        ]
    )
    response = post_batch(http, standin, body)
    assert response.status_code == 200
    assert [part.status for part in flat(response)] == [204, 204, 204]
    assert standin.row("contact", BOB) is None and standin.row("contact", ADA)["donotbulkemail"] is True
    assert [row["firstname"] for row in standin.rows("contact").values()].count("Dee") == 1


def test_a_changeset_that_creates_then_fails_creates_nothing(standin, http):
    body = multipart(
        [
            changeset(
                [
                    operation("POST", f"{API}contacts", {"firstname": "Dee"}, content_id="1"),
                    operation("DELETE", f"{API}contacts({ADA})", content_id="2"),
                    operation("DELETE", f"{API}contacts({MISSING})", content_id="3"),
                ]
            )
        ]
    )
    response = post_batch(http, standin, body)
    assert response.status_code == 404
    assert set(standin.rows("contact")) == {ADA, BOB}


def test_a_changeset_that_succeeds_commits_its_create_and_delete(standin, http):
    body = multipart(
        [
            changeset(
                [
                    operation("POST", f"{API}contacts", {"firstname": "Dee"}, content_id="1"),
                    operation("PATCH", "$1", {"lastname": "Dunn"}, headers=[("If-Match", "*")], content_id="2"),
                    operation("DELETE", f"{API}contacts({BOB})", content_id="3"),
                ]
            )
        ]
    )
    response = post_batch(http, standin, body)
    assert response.status_code == 200, response.text
    names = {row.get("firstname"): row.get("lastname") for row in standin.rows("contact").values()}
    assert names == {"Ada": None, "Dee": "Dunn"}
