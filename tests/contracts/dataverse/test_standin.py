"""The Dataverse stand-in held to Microsoft's table references (tests/contracts/facts/dataverse): its tables have the
referenced columns with the same type, validity for read, create and update, options and navigation properties, and
over HTTP it refuses what the references rule out, with the Web API's error shape (``{"error": {"code", "message"}}``
and 400), so that a test against it cannot pass a request Dataverse would refuse.

The answer for a property the entity type lacks (in ``$select`` or ``$filter``) is Microsoft's: 400, code ``0x0``,
"Could not find a property named '<name>' on type 'Microsoft.Dynamics.CRM.<table>'." (learn.microsoft.com,
troubleshoot/power-platform/power-apps/dataverse/web-api-client-errors). The codes of the platform's validation
answers (an option out of range, a column not valid for the verb) are unconfirmed: only the status is held."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from optout_dev.standin import DataverseStandIn
from optout_dev.standin.presets import PRESETS, STANDARD_TABLES
from optout_dev.standin.schema import Table
from tests.contracts.dataverse.facts import CHOICE_TYPES, LOOKUP_TYPES, ColumnFact, TableFact, tables
from tests.support.dataverse import TOKEN, running_standin

SERVED: dict[str, Table] = {t.name: t for t in (*STANDARD_TABLES.values(), *(t for ts in PRESETS.values() for t in ts))}
ROW = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


def _columns() -> Iterator[tuple[TableFact, ColumnFact]]:
    for fact in tables().values():
        for column in fact.columns.values():
            yield fact, column


def _ids(pairs: list[tuple[TableFact, ColumnFact]]) -> list[str]:
    return [f"{t.name}.{c.name}" for t, c in pairs]


COLUMNS = list(_columns())
UNREADABLE = [(t, c) for t, c in COLUMNS if not c.read]
CHOICES = [(t, c) for t, c in COLUMNS if c.type in CHOICE_TYPES - {"Boolean"} and c.options and (c.create or c.update)]
READ_ONLY = [(t, c) for t, c in COLUMNS if not c.update and c.name != f"{t.name}id" and c.read]
NAVIGATIONS = [(t, c, n) for t, c in COLUMNS for n in c.navigation if c.navigation[n] in SERVED]


# -- the schema --------------------------------------------------------------------------------------


def test_the_stand_in_serves_every_table_the_references_cover() -> None:
    assert set(tables()) <= set(SERVED)
    assert {name: SERVED[name].entity_set for name in tables()} == {n: f.entity_set for n, f in tables().items()}


@pytest.mark.parametrize(("fact", "column"), COLUMNS, ids=_ids(COLUMNS))
def test_each_referenced_column_is_served_as_the_reference_describes_it(fact: TableFact, column: ColumnFact) -> None:
    served = SERVED[fact.name].column(column.name)
    assert served is not None, f"{fact.name}.{column.name} is not served"
    assert served.type == column.type
    assert (served.readable, served.creatable, served.updatable) == (column.read, column.create, column.update)
    if column.options is not None:
        assert sorted(o.value for o in served.options) == sorted(column.options)
    if column.type in LOOKUP_TYPES:
        assert sorted(served.targets) == sorted(column.targets)
        # the stand-in writes "" for a navigation property that binds the lookup's one target
        navigation = {name: bound or served.targets[0] for name, bound in served.navigation.items()}
        assert navigation == dict(column.navigation)


# Required by the reference but not by the stand-in, each for a reason: the server derives solutionnamespace from the
# namespace address (docs/dataverse-admin.md §3.1); primaryobjecttypecode is not valid for create at all.
NOT_ENFORCED = {("serviceendpoint", "solutionnamespace"), ("sdkmessagefilter", "primaryobjecttypecode")}
SYSTEM_REQUIRED = [
    (t, c) for t, c in COLUMNS if c.required == "SystemRequired" and (t.name, c.name) not in NOT_ENFORCED
]


@pytest.mark.parametrize(("fact", "column"), SYSTEM_REQUIRED, ids=_ids(SYSTEM_REQUIRED))
def test_a_column_the_platform_requires_is_required_or_filled_in(fact: TableFact, column: ColumnFact) -> None:
    """The platform refuses a create without a SystemRequired column unless it fills the column itself (the
    primary key, a default such as statecode's)."""
    served = SERVED[fact.name].column(column.name)
    assert served is not None
    filled = column.name == f"{fact.name}id" or served.default is not None
    assert served.required == "SystemRequired" or filled


# -- over HTTP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standin() -> Iterator[DataverseStandIn]:
    with running_standin(recipients={}, presets=("registration", "journeys")) as server:
        yield server


def _call(standin: DataverseStandIn, method: str, path: str, body: Any = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}", "If-Match": "*"}
    return requests.request(method, f"{standin.url}/api/data/v9.2/{path}", headers=headers, json=body, timeout=10)


def _row(standin: DataverseStandIn, fact: TableFact) -> str:
    if standin.row(fact.name, ROW) is None:
        standin.add_row(fact.name, ROW)
    return f"{fact.entity_set}({ROW})"


def _refused(answer: requests.Response) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) >= {"code", "message"}
    return dict(error)


def _no_property(table: str, name: str) -> dict[str, str]:
    return {
        "code": "0x0",
        "message": f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table}'.",
    }


@pytest.mark.parametrize(("fact", "column"), UNREADABLE, ids=_ids(UNREADABLE))
def test_a_column_not_valid_for_read_cannot_be_selected(standin, fact: TableFact, column: ColumnFact) -> None:
    # What Dataverse answers for it is unconfirmed; the stand-in answers as for a property the type lacks, so a
    # client cannot come to rely on reading it.
    assert _refused(_call(standin, "GET", f"{fact.entity_set}?$select={column.name}")) == _no_property(
        fact.name, column.name
    )


@pytest.mark.parametrize("fact", list(tables().values()), ids=list(tables()))
def test_a_property_the_table_lacks_is_refused_in_select_and_filter(standin, fact: TableFact) -> None:
    missing = f"{fact.name}_nosuchcolumn"
    assert _refused(_call(standin, "GET", f"{fact.entity_set}?$select={missing}")) == _no_property(fact.name, missing)
    assert _refused(_call(standin, "GET", f"{fact.entity_set}?$filter={missing} eq 1")) == _no_property(
        fact.name, missing
    )


@pytest.mark.parametrize("fact", list(tables().values()), ids=list(tables()))
def test_every_readable_referenced_column_can_be_selected(standin, fact: TableFact) -> None:
    readable = [c.read_name for c in fact.columns.values() if c.read]
    answer = _call(standin, "GET", f"{fact.entity_set}?$select={','.join(readable)}")
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("fact", list(tables().values()), ids=list(tables()))
def test_a_column_the_table_lacks_is_refused_in_a_body(standin, fact: TableFact) -> None:
    error = _refused(_call(standin, "PATCH", _row(standin, fact), {"nosuchcolumn": 1}))
    assert "nosuchcolumn" in error["message"]


@pytest.mark.parametrize(("fact", "column"), CHOICES, ids=_ids(CHOICES))
def test_a_choice_takes_the_referenced_options_and_refuses_any_other(
    standin, fact: TableFact, column: ColumnFact
) -> None:
    assert column.options is not None
    outside = max(column.options) + 1
    verb, path = ("PATCH", _row(standin, fact)) if column.update else ("POST", fact.entity_set)
    error = _refused(_call(standin, verb, path, {column.name: outside}))
    assert f"The value {outside} of '{column.name}'" in error["message"]
    if column.type == "Picklist" and column.update:
        for value in column.options:
            answer = _call(standin, "PATCH", path, {column.name: value})
            assert answer.status_code == 204, (value, answer.text)


@pytest.mark.parametrize(("fact", "column"), READ_ONLY, ids=_ids(READ_ONLY))
def test_a_column_not_valid_for_update_is_refused(standin, fact: TableFact, column: ColumnFact) -> None:
    value: Any = True if column.type == "Boolean" else "x"
    error = _refused(_call(standin, "PATCH", _row(standin, fact), {column.name: value}))
    assert error["message"].endswith("is not valid for update.")


@pytest.mark.parametrize(
    ("fact", "column", "navigation"), NAVIGATIONS, ids=[f"{t.name}.{n}" for t, _, n in NAVIGATIONS]
)
def test_a_lookup_is_set_by_its_referenced_navigation_property_only(
    standin, fact: TableFact, column: ColumnFact, navigation: str
) -> None:
    target = tables().get(column.navigation[navigation])
    target_set = target.entity_set if target else SERVED[column.navigation[navigation]].entity_set
    bind = f"/{target_set}({ROW})"
    if standin.row(column.navigation[navigation], ROW) is None:
        standin.add_row(column.navigation[navigation], ROW)
    assert _call(standin, "PATCH", _row(standin, fact), {f"{navigation}@odata.bind": bind}).status_code == 204
    for wrong in {column.name, navigation.lower(), navigation.upper()} - {navigation}:
        error = _refused(_call(standin, "PATCH", _row(standin, fact), {f"{wrong}@odata.bind": bind}))
        assert f"An undeclared property '{wrong}'" in error["message"], json.dumps(error)
