"""The stand-in's collection queries as Microsoft Learn documents them: server-driven paging ("Page results using
OData": ``Prefer: odata.maxpagesize``, ``Preference-Applied``, ``@odata.nextLink`` with a ``$skiptoken``, ``$top``
ignored while paging) and the ``$filter`` comparison, logical and grouping operators ("Filter rows using OData")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from email.message import Message
from typing import Any
from urllib.parse import unquote

import pytest
import requests

from optout_dev.standin import DataverseStandIn
from optout_dev.standin.paging import Position, paginate
from optout_dev.standin.query import AnyOf, Condition
from tests.support.dataverse import TOKEN

LOGS = "/api/data/v9.2/concep_emailcampaignlogs"
KEY = "concep_emailcampaignlogid"


def _get(server: DataverseStandIn, path: str, prefer: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}", **({"Prefer": prefer} if prefer else {})}
    return requests.get(path if path.startswith("http") else server.url + path, headers=headers, timeout=10)


@pytest.fixture
def server(make_standin: Any) -> DataverseStandIn:
    standin: DataverseStandIn = make_standin(campaign_log=True, recipients={})
    for n in range(12):
        standin.add_row(
            "concep_emailcampaignlog",
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"paging/{n}")),
            concep_name=f"log {n}",
            concep_activitytype=100000003 + n % 3,
            createdon=f"2025-11-{1 + n:02d}T12:00:00Z",
        )
    return standin


def _all_pages(server: DataverseStandIn, path: str, prefer: str) -> list[requests.Response]:
    answers = [_get(server, path, prefer)]
    while "@odata.nextLink" in answers[-1].json():
        answers.append(_get(server, answers[-1].json()["@odata.nextLink"], prefer))
    return answers


def test_pages_hold_at_most_the_preferred_size_in_key_order_and_the_next_link_carries_the_query(server) -> None:
    pages = _all_pages(server, f"{LOGS}?$select=concep_name&$top=2", "odata.maxpagesize=5")

    assert [len(p.json()["value"]) for p in pages] == [5, 5, 2]  # $top is ignored while paging
    assert all(p.headers["Preference-Applied"] == "odata.maxpagesize=5" for p in pages)
    keys = [row[KEY] for p in pages for row in p.json()["value"]]
    assert keys == sorted(server.rows("concep_emailcampaignlog"))
    link = pages[0].json()["@odata.nextLink"]
    assert link.startswith(f"{server.url}{LOGS}?$select=concep_name") and "$skiptoken=%3Ccookie" in link


def test_without_a_preference_or_beyond_5000_a_page_is_up_to_5000_rows_and_nothing_is_applied(server) -> None:
    for prefer in (None, "odata.maxpagesize=5001"):
        answer = _get(server, LOGS, prefer)
        assert len(answer.json()["value"]) == 12 and "@odata.nextLink" not in answer.json()
        assert "Preference-Applied" not in answer.headers
    assert len(_get(server, f"{LOGS}?$top=3").json()["value"]) == 3


def test_a_row_created_while_paging_shifts_nothing_already_read(server) -> None:
    first = _get(server, LOGS, "odata.maxpagesize=6").json()
    read = [row[KEY] for row in first["value"]]
    server.add_row("concep_emailcampaignlog", "00000000-0000-4000-8000-000000000000", concep_name="early")
    server.add_row("concep_emailcampaignlog", "ffffffff-0000-4000-8000-000000000000", concep_name="late")

    pages = _all_pages(server, first["@odata.nextLink"], "odata.maxpagesize=6")
    rest = [row[KEY] for page in pages for row in page.json()["value"]]

    assert not set(read) & set(rest) and len(rest) == 7 and rest[-1] == "ffffffff-0000-4000-8000-000000000000"
    assert "00000000-0000-4000-8000-000000000000" not in rest  # before the cookie's last key: not read again


def test_each_page_answers_the_rows_as_they_are_when_it_is_asked_for(server) -> None:
    table = "concep_emailcampaignlog"
    first = _get(server, LOGS + "?$filter=concep_activitytype ne 100000004", "odata.maxpagesize=2").json()
    read = [row[KEY] for row in first["value"]]
    rows = server.rows(table)
    ahead = [key for key in sorted(rows) if key > read[-1] and rows[key]["concep_activitytype"] != 100000004]
    server.delete_row(table, ahead[0])  # one fewer row
    pages = _all_pages(server, first["@odata.nextLink"], "odata.maxpagesize=2")
    rest = [row[KEY] for page in pages for row in page.json()["value"]]
    assert ahead[0] not in rest and ahead[1] in rest

    server.delete_row(table, ahead[1])  # as many rows as before, one of them new
    server.add_row(table, "ffffffff-0000-4000-8000-000000000000", concep_activitytype=100000003)
    server.add_row(table, ahead[2], concep_name="changed", concep_activitytype=100000004)  # no longer matches
    pages = _all_pages(server, first["@odata.nextLink"], "odata.maxpagesize=2")
    again = [row[KEY] for page in pages for row in page.json()["value"]]

    assert ahead[1] not in again and ahead[2] not in again and again[-1] == "ffffffff-0000-4000-8000-000000000000"
    assert again == sorted(again) and not set(read) & set(again)


def test_a_page_draws_only_its_rows_and_one_more_from_the_matching_rows(server) -> None:
    drawn: list[str] = []

    def matching() -> Iterator[tuple[str, int]]:
        for n in range(100):
            drawn.append(f"{n:03d}")
            yield f"{n:03d}", n

    headers = Message()
    headers["Prefer"] = "odata.maxpagesize=10"
    table = server.tables["concep_emailcampaignlog"]
    page = paginate(matching(), Position(3, "004"), {"$select": ["concep_name"]}, headers, server.url + LOGS, table)

    assert [key for key, _ in page.rows] == [f"{n:03d}" for n in range(5, 15)]
    assert drawn == [f"{n:03d}" for n in range(16)] and page.next_link is not None
    assert '<cookie pagenumber="4"' in unquote(page.next_link)


def test_a_skiptoken_the_service_did_not_issue_is_a_400(server) -> None:
    assert _get(server, f"{LOGS}?$skiptoken=page2").status_code == 400


def test_filters_compare_dates_and_group_alternatives(server) -> None:
    where = (
        "createdon ge 2025-11-03T12:00:00Z and createdon lt 2025-11-09 and "
        "(concep_activitytype eq 100000003 or concep_activitytype eq 100000005)"
    )
    pages = _all_pages(server, f"{LOGS}?$select=concep_name,createdon&$filter={where}", "odata.maxpagesize=2")

    days = sorted(row["createdon"][8:10] for p in pages for row in p.json()["value"])
    assert days == ["03", "04", "06", "07"]  # 3rd..8th, not the 5th and 8th (100000004)
    assert all(where in requests.utils.unquote(p.url) for p in pages)  # each next link keeps the filter


@pytest.mark.parametrize(
    "where",
    ["createdon ge '2025-11-03'", "concep_name ge 2025-11-03", "concep_activitytype eq 1 or concep_name eq 'x'"],
)
def test_a_date_compared_with_text_or_an_or_outside_parentheses_is_refused(server, where) -> None:
    assert _get(server, f"{LOGS}?$filter={where}").status_code in (400, 501)


def test_a_group_of_primary_keys_answers_the_named_rows_that_exist_and_match_in_key_order(server) -> None:
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"paging/{n}")) for n in range(12)]
    absent = str(uuid.uuid5(uuid.NAMESPACE_URL, "paging/absent"))
    named = [ids[7], absent, ids[2], ids[4], ids[7].upper()]  # a key the table lacks; one named twice
    where = "(" + " or ".join(f"{KEY} eq {row_id}" for row_id in named) + ")"

    answer = _get(server, f"{LOGS}?$select=concep_name&$filter={where}")
    narrowed = _get(server, f"{LOGS}?$select=concep_name&$filter={where} and concep_activitytype eq 100000004")
    paged = _all_pages(server, f"{LOGS}?$select=concep_name&$filter={where}", "odata.maxpagesize=2")

    assert [row[KEY] for row in answer.json()["value"]] == sorted([ids[2], ids[4], ids[7]])
    assert sorted(row["concep_name"] for row in narrowed.json()["value"]) == ["log 4", "log 7"]  # the other terms hold
    assert [row[KEY] for p in paged for row in p.json()["value"]] == sorted([ids[2], ids[4], ids[7]])


def test_the_in_function_matches_a_property_against_values_given_as_strings(server) -> None:
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"paging/{n}")) for n in range(12)]
    absent = str(uuid.uuid5(uuid.NAMESPACE_URL, "paging/absent"))

    def where(name: str, values: list[str]) -> str:
        return f"Microsoft.Dynamics.CRM.In(PropertyName='{name}',PropertyValues=[{','.join(repr(v) for v in values)}])"

    keyed = _get(server, f"{LOGS}?$select=concep_name&$filter={where(KEY, [ids[9], absent, ids[3].upper()])}")
    by_code = _get(server, f"{LOGS}?$filter={where('concep_activitytype', ['100000005'])} and createdon lt 2025-11-07")
    by_name = _get(server, f"{LOGS}?$filter={where('concep_name', ['LOG 1', 'log 10'])}")

    assert [row[KEY] for row in keyed.json()["value"]] == sorted([ids[3], ids[9]])
    assert sorted(row["concep_name"] for row in by_code.json()["value"]) == ["log 2", "log 5"]
    assert sorted(row["concep_name"] for row in by_name.json()["value"]) == ["log 1", "log 10"]  # text ignores case
    assert _get(server, f"{LOGS}?$filter={where(KEY, ['not a guid'])}").status_code == 400
    assert _get(server, f"{LOGS}?$filter={where('concep_activitytype', ['x'])}").status_code == 400
    assert _get(server, f"{LOGS}?$filter={where('nosuchcolumn', ['x'])}").status_code == 400


@pytest.mark.parametrize(
    "stored", [100000003, 100000004, True, 1, 100000003.0, "100000003", None, [100000003], Decimal(1)]
)
@pytest.mark.parametrize("codes", [(100000003,), (100000003, 100000005), (1, 100000005)])
def test_a_group_of_codes_answers_as_its_clauses_one_at_a_time(server, stored, codes) -> None:
    column = server.tables["concep_emailcampaignlog"].column("concep_activitytype")
    assert column is not None
    group = AnyOf(tuple(Condition(column, "eq", code) for code in codes))
    row = {"concep_activitytype": stored}

    assert group._numbers is not None
    assert group.holds(row) == any(condition.holds(row) for condition in group.conditions)
