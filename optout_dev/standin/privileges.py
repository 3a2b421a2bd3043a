"""The stand-in user's security privileges (docs/dataverse-admin.md §2): which ``prv<Type><SchemaName>`` it holds
and at which depth, through its own role or a team's; ``RetrieveUserPrivileges``,
``RetrieveUserSetOfPrivilegesByNames`` and ``RetrieveUserPrivilegeByPrivilegeName``; and the 403 PrivilegeDenied a
request lacking one gets (docs/dataverse-webapi.md §2)."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from optout_dev.standin.responses import Response, error, json_response
from optout_dev.standin.schema import Table, stable_id

PRIVILEGE_DENIED = "0x80040220"
# PrivilegeDepth members by name (learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/
# privilegedepth); the Web API writes an enum member by its name.
DEPTHS = ("Basic", "Local", "Deep", "Global")
FUNCTIONS = (
    "Microsoft.Dynamics.CRM.RetrieveUserPrivileges",
    "Microsoft.Dynamics.CRM.RetrieveUserSetOfPrivilegesByNames",
    "Microsoft.Dynamics.CRM.RetrieveUserPrivilegeByPrivilegeName",
)
_CALL = re.compile(r"(?P<function>Microsoft\.Dynamics\.CRM\.\w+)(?:\((?P<parameters>[^)]*)\))?")
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
    """The privileges the stand-in's one user holds: through its own role (every privilege of every table served,
    or the names given; Global depth unless set otherwise) and through the role of a team it belongs to (none
    unless set)."""

    def __init__(self, tables: Mapping[str, Table], held: Collection[str] | None) -> None:
        self._tables = tables
        self._own: Mapping[str, str] = {}
        self._team: Mapping[str, str] = {}
        self.grant(held)

    @property
    def held(self) -> frozenset[str]:
        """Every privilege name held at some depth, through the user's role or a team's."""
        return frozenset(self._own) | frozenset(self._team)

    def grant(self, held: Collection[str] | None) -> None:
        """Hold exactly ``held`` from now on (None: every privilege of every table), at Global depth, with no team."""
        if isinstance(held, str):
            raise TypeError("privileges must be a collection of names, not one string")
        every = {name for table in self._tables.values() for name in table.privileges}
        self.set_depths(dict.fromkeys(every if held is None else held, "Global"), {})

    def set_depths(self, own: Mapping[str, str], team: Mapping[str, str]) -> None:
        """Hold ``own`` (name -> depth) through the user's role and ``team`` through a team's role."""
        for depth in [*own.values(), *team.values()]:
            if depth not in DEPTHS:
                raise ValueError(f"{depth!r} is no PrivilegeDepth: {', '.join(DEPTHS)}")
        self._own, self._team = dict(own), dict(team)  # replaced whole: safe to read from any thread

    def check(self, table: str, kind: str, user_id: str) -> Response | None:
        """None when the user holds ``kind`` (Read, Write...) on ``table`` at any depth (rows are not owned in the
        stand-in); otherwise 403 PrivilegeDenied, with a message shaped like the platform's runtime text (exact
        wording unconfirmed)."""
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

    def function(
        self, rest: str, query: Mapping[str, list[str]], base_url: str | None, prefix: str, business_unit_id: str
    ) -> Response:
        """One of :data:`FUNCTIONS` bound to the user, its parameters inline or as ``@alias`` query options ("Use
        Web API functions"), answered as ``<Function>Response`` with ``RolePrivileges``."""
        call = _CALL.fullmatch(rest)
        if call is None or call.group("function") not in FUNCTIONS:
            return error(400, "0x80060888", f"Resource not found for the segment '{rest}'.")
        function = call.group("function")
        parameters = _parameters(call.group("parameters") or "", query)
        if isinstance(parameters, Response):
            return parameters
        grants = self._grants(function)
        if function.endswith("RetrieveUserPrivileges"):
            names = None
        elif function.endswith("ByNames"):
            names = parameters.get("PrivilegeNames")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                return error(400, "0x80040203", "PrivilegeNames must be a collection of strings.")
        else:
            name = parameters.get("PrivilegeName")
            if not isinstance(name, str):
                return error(400, "0x80040203", "PrivilegeName must be a string.")
            names = [name]
        if parameters.get("ExcludeTeamBasic") is True:
            grants = [g for g in grants if not (g[2] and g[1] == "Basic")]
        chosen = [(n, d) for n, d, _ in grants if names is None or n in names]
        return json_response(
            200,
            {
                "@odata.context": f"{base_url}{prefix}$metadata#Microsoft.Dynamics.CRM.{function.rsplit('.', 1)[1]}"
                "Response",
                "RolePrivileges": [
                    {
                        "BusinessUnitId": business_unit_id,
                        "Depth": depth,
                        "PrivilegeId": privilege_id(name),
                        "PrivilegeName": name,
                        "RecordFilterId": None,
                        "RecordFilterUniqueName": None,
                    }
                    for name, depth in sorted(chosen)
                ],
            },
        )

    def _grants(self, function: str) -> list[tuple[str, str, bool]]:
        """(name, depth, through a team) per grant. RetrieveUserPrivileges reports what a team's role grants at
        Basic depth whatever the role says; the others report it at its real depth
        (learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/retrieveuserprivileges, Remarks)."""
        own = [(name, depth, False) for name, depth in self._own.items()]
        basic = function.endswith("RetrieveUserPrivileges")
        team = [(name, "Basic" if basic else depth, True) for name, depth in self._team.items()]
        return own + team


def _parameters(text: str, query: Mapping[str, list[str]]) -> dict[str, Any] | Response:
    """``Name=value`` pairs, each value an OData literal or JSON collection, or ``@alias`` resolved from the query."""
    found: dict[str, Any] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))) if "[" not in text else [text]:
        name, _, value = pair.partition("=")
        value = value.strip()
        if value.startswith("@"):
            if value not in query:
                return error(400, "0x80060888", f"The parameter alias '{value}' has no value.")
            value = query[value][0]
        literal = _literal(value)
        if isinstance(literal, Response):
            return literal
        found[name.strip()] = literal
    return found


def _literal(text: str) -> Any:
    text = text.strip()
    if text.startswith("'") and text.endswith("'") and len(text) > 1:
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    try:
        return json.loads(text)  # a collection: a JSON array (OData URL conventions)
    except ValueError:
        return error(400, "0x80060888", f"Bad Request - Error in query syntax: {text}")
