"""The stand-in's privilege functions, as their reference pages describe them: RetrieveUserPrivileges reports what
a team's role grants at Basic depth; RetrieveUserSetOfPrivilegesByNames and RetrieveUserPrivilegeByPrivilegeName
report it at its real depth."""

import json
from typing import Any
from urllib.parse import quote

from optout_core.dataverse.auth import StaticTokenCredential
from optout_core.dataverse.client import DataverseClient
from tests.support.dataverse import TOKEN


def _get(standin: Any, path: str) -> Any:
    client = DataverseClient(standin.url, StaticTokenCredential(TOKEN))
    try:
        return client.get(f"systemusers({standin.user_id})/Microsoft.Dynamics.CRM.{path}")
    finally:
        client.close()


def _depths(answer: Any) -> list[tuple[str, str]]:
    return sorted((p["PrivilegeName"], p["Depth"]) for p in answer["RolePrivileges"])


def test_a_team_role_s_grant_is_basic_in_retrieve_user_privileges_and_real_in_the_by_name_functions(standin) -> None:
    standin.set_privilege_depths({"prvReadContact": "Local"}, team={"prvWriteContact": "Global"})

    assert _depths(_get(standin, "RetrieveUserPrivileges")) == [
        ("prvReadContact", "Local"),
        ("prvWriteContact", "Basic"),
    ]
    names = quote(json.dumps(["prvWriteContact", "prvReadContact", "prvReadLead"]), safe="")
    answer = _get(standin, f"RetrieveUserSetOfPrivilegesByNames(PrivilegeNames=@p)?@p={names}")
    assert answer["@odata.context"].endswith("#Microsoft.Dynamics.CRM.RetrieveUserSetOfPrivilegesByNamesResponse")
    assert _depths(answer) == [("prvReadContact", "Local"), ("prvWriteContact", "Global")]
    one = _get(standin, "RetrieveUserPrivilegeByPrivilegeName(PrivilegeName=@p)?@p='prvWriteContact'")
    assert _depths(one) == [("prvWriteContact", "Global")]


def test_exclude_team_basic_leaves_out_a_team_s_basic_grants(standin) -> None:
    standin.set_privilege_depths({"prvReadContact": "Global"}, team={"prvWriteContact": "Basic"})
    names = quote(json.dumps(["prvWriteContact", "prvReadContact"]), safe="")
    answer = _get(
        standin, f"RetrieveUserSetOfPrivilegesByNames(PrivilegeNames=@p,ExcludeTeamBasic=@x)?@p={names}&@x=true"
    )
    assert _depths(answer) == [("prvReadContact", "Global")]
