"""The stand-in user's security privileges (docs/dataverse-admin.md §2): which ``prv<Type><SchemaName>`` it holds,
``RetrieveUserPrivileges``, and the 403 PrivilegeDenied a request lacking one gets (docs/dataverse-webapi.md §2)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from optout_dev.standin.responses import Response, error, json_response
from optout_dev.standin.schema import Table, stable_id

PRIVILEGE_DENIED = "0x80040220"
# What each method needs on the table it addresses.
NEEDED: Mapping[str, str] = {"GET": "Read", "HEAD": "Read", "POST": "Create", "PATCH": "Write", "DELETE": "Delete"}


def privilege_id(name: str) -> str:
    return stable_id("privilege", name)


def privilege_metadata(table: Table) -> list[dict[str, Any]]:
    """``EntityMetadata.Privileges``: one ``SecurityPrivilegeMetadata`` per privilege type of the table."""
    return [
        {
            "CanBeBasic": table.ownership == "UserOwned",
            "CanBeDeep": table.ownership == "UserOwned",
            "CanBeGlobal": True,
            "CanBeLocal": table.ownership == "UserOwned",
            "CanBeEntityReference": False,
            "CanBeParentEntityReference": False,
            "Name": name,
            "PrivilegeId": privilege_id(name),
            "PrivilegeType": name[3:].removesuffix(table.schema_name),
        }
        for name in table.privileges
    ]


class UserPrivileges:
    """The privileges the stand-in's one user holds: every privilege of every table served (None), or the names
    given. Depth is Global for each (an application user's role usually grants organization-wide access)."""

    def __init__(self, tables: Mapping[str, Table], held: Collection[str] | None) -> None:
        self._tables = tables
        self.held: frozenset[str] = frozenset()
        self.grant(held)

    def grant(self, held: Collection[str] | None) -> None:
        """Hold exactly ``held`` from now on (None: every privilege of every table)."""
        if isinstance(held, str):
            raise TypeError("privileges must be a collection of names, not one string")
        every = {name for table in self._tables.values() for name in table.privileges}
        self.held = frozenset(every if held is None else held)  # one assignment: safe to read from any thread

    def check(self, table: str, kind: str, user_id: str) -> Response | None:
        """None when the user holds ``kind`` (Read, Write...) on ``table``; otherwise 403 PrivilegeDenied, with a
        message shaped like the platform's runtime text (exact wording unconfirmed)."""
        typed = self._tables[table]
        name = f"prv{kind}{typed.schema_name}"
        if name in self.held:
            return None
        return error(
            403,
            PRIVILEGE_DENIED,
            f"Principal user (Id={user_id}, type=8, roleCount=1, privilegeCount={len(self.held)}, accessMode=0), is "
            f"missing {name} privilege (Id={privilege_id(name)}) on OTC={typed.object_type_code} for entity "
            f"'{table}'. context.Caller={user_id}",
        )

    def retrieve(self, base_url: str | None, prefix: str, business_unit_id: str) -> Response:
        """``RetrieveUserPrivilegesResponse``: one ``RolePrivilege`` per privilege held."""
        return json_response(
            200,
            {
                "@odata.context": f"{base_url}{prefix}$metadata#Microsoft.Dynamics.CRM.RetrieveUserPrivilegesResponse",
                "RolePrivileges": [
                    {
                        "BusinessUnitId": business_unit_id,
                        "Depth": "Global",
                        "PrivilegeId": privilege_id(name),
                        "PrivilegeName": name,
                        "RecordFilterId": None,
                        "RecordFilterUniqueName": None,
                    }
                    for name in sorted(self.held)
                ],
            },
        )
