"""The stand-in's users table, as far as ``check --connect`` asks it: which user is the application user of a client id.

An application user is a ``systemuser`` bound to an app registration's (or managed identity's) client id, created in
the Power Platform admin center (Environments > Settings > Users + permissions > Application users) [APPUSER]. Its
``applicationid`` column (Uniqueidentifier, "The identifier for the application. This is used to access data in
another application.") holds that client id; ``systemuserid`` is the table's primary key and ``systemusers`` its
entity set (User (SystemUser) table reference, MicrosoftDocs/powerapps-docs
powerapps-docs/developer/data-platform/reference/entities/systemuser.md). ``GET systemusers`` is its RetrieveMultiple
[Query data: https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query-data-web-api].

The stand-in has one user, the caller of every request (``WhoAmI``'s ``UserId``). It is the application user of
``application_id`` (None: a person, who is no application user, as when an administrator signs in with ``az login``
and the app's client id has no application user). Only ``$filter=applicationid eq <guid>`` with a ``$select`` of
these two columns is served; any other query of the table answers 501, never a guess. The Read privilege on
``systemuser`` is not modelled (the stand-in's privileges cover the tables it serves): the query is always allowed.

[APPUSER] https://learn.microsoft.com/power-platform/admin/create-dataverseapplicationuser
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from optout_dev.standin.responses import Response, json_response, method_not_allowed, unsupported

ENTITY_SET = "systemusers"
# The client id whose application user the stand-in's user is by default (an app registration of the tests).
APPLICATION_ID = "7e1a0c55-2b9d-4f3e-8a61-0d4c2b9e7f10"
COLUMNS = ("systemuserid", "applicationid")
# The OData guid literal is unquoted (docs/dataverse-webapi.md: $filter values).
_BY_APPLICATION = re.compile(r"\s*applicationid\s+eq\s+([0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})\s*")


def query_users(
    method: str, query: Mapping[str, list[str]], user_id: str, application_id: str | None, context: str
) -> Response:
    """``GET systemusers?$select=...&$filter=applicationid eq <guid>``: the application user of that client id (the
    stand-in's one user when ``application_id`` is it), or no row."""
    if method != "GET":
        return method_not_allowed(method, "GET")
    if set(query) - {"$select", "$filter"}:
        return unsupported(f"systemusers queried with {', '.join(sorted(set(query) - {'$select', '$filter'}))}")
    selected = [c.strip() for c in ",".join(query.get("$select", [])).split(",") if c.strip()] or list(COLUMNS)
    if set(selected) - set(COLUMNS):
        return unsupported(f"systemusers columns other than {', '.join(COLUMNS)}")
    match = _BY_APPLICATION.fullmatch(" and ".join(query.get("$filter", [])))
    if match is None:
        return unsupported("a systemusers $filter other than applicationid eq <guid>")
    wanted = match.group(1).lower()
    row = {"systemuserid": user_id, "applicationid": application_id}
    rows = (
        [{c: row[c] for c in ("systemuserid", *selected)}]
        if application_id and application_id.lower() == wanted
        else []
    )
    return json_response(
        200, {"@odata.context": f"{context}$metadata#{ENTITY_SET}({','.join(selected)})", "value": rows}
    )
