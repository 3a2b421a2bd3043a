"""The stand-in's users table (optout_dev/standin/users.py) as the User (SystemUser) table reference describes it: the
application user of a client id is the systemuser whose applicationid it is; a person is the application user of no
client id; queries it does not model answer 501."""

from typing import Any

import pytest

from optout_core.dataverse.auth import StaticTokenCredential
from optout_core.dataverse.client import DataverseClient
from optout_core.dataverse.errors import DataverseError
from optout_dev.standin.users import APPLICATION_ID
from tests.support.dataverse import TOKEN


def _users(standin: Any, where: str, select: tuple[str, ...] = ("systemuserid",)) -> list[dict[str, Any]]:
    client = DataverseClient(standin.url, StaticTokenCredential(TOKEN))
    try:
        return client.query("systemusers", select=select, where=where)
    finally:
        client.close()


def test_the_application_user_of_a_client_id_is_found_by_its_applicationid(standin) -> None:
    [user] = _users(standin, f"applicationid eq {APPLICATION_ID.upper()}", ("systemuserid", "applicationid"))
    assert user == {"systemuserid": standin.user_id, "applicationid": APPLICATION_ID}


def test_another_client_id_or_a_person_has_no_application_user(standin) -> None:
    assert _users(standin, "applicationid eq 0f0e0d0c-0000-4000-8000-0000000000aa") == []
    standin.application_id = None
    assert _users(standin, f"applicationid eq {APPLICATION_ID}") == []


@pytest.mark.parametrize(
    ("where", "select"),
    [("fullname eq 'x'", ("systemuserid",)), (f"applicationid eq {APPLICATION_ID}", ("fullname",))],
)
def test_a_query_it_does_not_model_answers_501(standin, where, select) -> None:
    with pytest.raises(DataverseError) as refused:
        _users(standin, where, select)
    assert refused.value.status == 501
