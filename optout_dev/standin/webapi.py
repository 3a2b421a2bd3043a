"""The Web API's resources behind authentication and service protection (docs/dataverse-webapi.md §1, §2, §7,
§8): rows read and updated by key, WhoAmI, and the way to ``$batch`` and ``EntityDefinitions``; what the stand-in
does not model answers 501."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from email.message import Message
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from optout_dev.standin.batch import Batches, OperationHooks
from optout_dev.standin.metadata import entity_definitions
from optout_dev.standin.recording import Traffic
from optout_dev.standin.responses import Response, error, json_response, method_not_allowed, unsupported
from optout_dev.standin.store import Changeset, RowStore
from optout_dev.standin.tables import API_PREFIX, BOOLEAN_COLUMNS, GUID

_SEGMENT = re.compile(r"(?P<name>[^()/]+)(?:\((?P<key>[^()]*)\))?")
# Real resources the stand-in does not model: answer 501 rather than a misleading 404.
_UNSUPPORTED_SEGMENTS = frozenset({"$metadata", "RetrieveTotalRecordCount"})
_PAYLOAD_CODE = "0x80048d19"


class Identity(Protocol):
    """Whom WhoAmI names (the stand-in's attributes, read at each call)."""

    user_id: str
    business_unit_id: str
    organization_id: str


def not_served(path: str) -> Response:
    return error(404, "", f"The resource '{path}' was not found (the stand-in serves {API_PREFIX} only).")


class WebApi:
    """Answers an authenticated, admitted request, or one operation inside a ``$batch``. ``base_url`` (the
    stand-in's URL, for ``@odata.context`` and ``OData-EntityId``) is set when the stand-in starts."""

    def __init__(self, store: RowStore, traffic: Traffic, identity: Identity, hooks: OperationHooks) -> None:
        self.base_url: str | None = None
        self._store = store
        self._traffic = traffic
        self._identity = identity
        self._batches = Batches(self.dispatch, store, traffic, hooks)

    def dispatch(
        self,
        method: str,
        raw_path: str,
        headers: Message,
        body: bytes,
        changeset: Changeset | None = None,
        inner: bool = False,
    ) -> Response:
        split = urlsplit(raw_path)
        path = unquote(split.path)
        if not path.startswith(API_PREFIX):
            return not_served(path)
        resource = path[len(API_PREFIX) :]
        query = parse_qs(split.query, keep_blank_values=True)
        first, _, rest = resource.partition("/")
        if first == "$batch" and not rest:
            if inner:
                return error(400, _PAYLOAD_CODE, "Batch requests can't contain other batch requests.")
            return self._batches.serve(method, headers, body)
        if first in ("WhoAmI", "WhoAmI()") and not rest:
            return self._whoami(method)
        match = _SEGMENT.fullmatch(first)
        if match is None:
            return error(400, "0x80060888", "Bad Request - Error in query syntax.")
        name, key = match.group("name"), match.group("key")
        if name == "EntityDefinitions":
            return entity_definitions(self._store, self.base_url, method, key, rest, query)
        if name in _UNSUPPORTED_SEGMENTS or name == "$batch":
            return unsupported(f"'{name}'")
        table = self._store.set_to_table.get(name)
        if table is None:
            return error(404, "0x8006088a", f"Resource not found for the segment '{name}'.")
        if rest:
            return unsupported(f"The path segment '{rest}' after '{first}'")
        if key is None:  # the collection: query (GET) or create (POST)
            if method in ("GET", "POST"):
                return unsupported(f"{method} on the '{name}' collection")
            return method_not_allowed(method, "GET, POST")
        if not GUID.fullmatch(key):
            if "=" in key:
                return unsupported(f"The alternate key '{key}'")
            return error(400, "0x80060888", f"Bad Request - Error in query syntax: '{key}' is not a GUID.")
        row_id = key.lower()
        if method in ("GET", "HEAD"):
            return self._get(table, name, row_id, query, headers)
        if method == "PATCH":
            return self._patch(table, name, row_id, query, headers, body, changeset)
        if method in ("DELETE", "PUT"):
            return unsupported(f"{method} on a row")
        return method_not_allowed(method, "GET, PATCH, DELETE")

    def _whoami(self, method: str) -> Response:
        if method != "GET":
            return method_not_allowed(method, "GET")
        return json_response(
            200,
            {
                "@odata.context": f"{self.base_url}{API_PREFIX}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": self._identity.business_unit_id,
                "UserId": self._identity.user_id,
                "OrganizationId": self._identity.organization_id,
            },
        )

    def _selection(self, table: str, query: Mapping[str, list[str]]) -> list[str] | Response:
        columns = self._store.columns[table]
        for option in query:
            if option.startswith("$") and option != "$select":
                return unsupported(f"The query option '{option}'")
        if "$select" not in query:
            return sorted(columns)
        selected = [column.strip() for column in ",".join(query["$select"]).split(",")]
        for column in selected:
            if column not in columns:
                return error(
                    400, "0x0", f"Could not find a property named '{column}' on type 'Microsoft.Dynamics.CRM.{table}'."
                )
        return selected

    def _representation(
        self,
        table: str,
        entity_set: str,
        row_id: str,
        row: Mapping[str, Any],
        etag: str,
        columns: list[str],
        annotations: bool = False,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "@odata.context": f"{self.base_url}{API_PREFIX}$metadata#{entity_set}({','.join(columns)})/$entity",
            "@odata.etag": etag,
        }
        payload.update({column: copy.deepcopy(row.get(column)) for column in columns})
        if annotations:  # only with Prefer: odata.include-annotations, as Dataverse does
            payload.update({key: value for key, value in row.items() if "@" in key and key.split("@", 1)[0] in columns})
        payload[f"{table}id"] = row_id  # Dataverse always returns the primary key
        return payload

    def _get(
        self, table: str, entity_set: str, row_id: str, query: Mapping[str, list[str]], headers: Message
    ) -> Response:
        columns = self._selection(table, query)
        if isinstance(columns, Response):
            return columns
        found = self._store.read(table, row_id)
        if found is None:
            return self._store.not_found(table, row_id)
        row, etag = found
        annotations = "odata.include-annotations" in (headers.get("Prefer") or "")
        payload = self._representation(table, entity_set, row_id, row, etag, columns, annotations)
        if_none_match = headers.get("If-None-Match")
        if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
            return Response(304, headers=(("ETag", etag),))
        return json_response(200, payload)

    def _patch(
        self,
        table: str,
        entity_set: str,
        row_id: str,
        query: Mapping[str, list[str]],
        headers: Message,
        body: bytes,
        changeset: Changeset | None = None,
    ) -> Response:
        target = f"PATCH {API_PREFIX}{entity_set}({row_id})"
        if_match = headers.get("If-Match")
        if_none_match = (headers.get("If-None-Match") or "").strip()
        # Flag misuse up front, whatever else is wrong with the request.
        if if_none_match == "*":
            self._traffic.bug(
                f"{target} sent If-None-Match: * (create-only): the real service answers 412 for an existing row "
                "and creates a missing one; send If-Match: * instead"
            )
        if if_match is None:
            self._traffic.bug(
                f"{target} without If-Match: the real service would upsert (create the row if it is missing); "
                "send If-Match: *"
            )
        changes = self._changes(table, entity_set, row_id, headers, body)
        if isinstance(changes, Response):
            return changes
        columns = self._selection(table, query)
        if isinstance(columns, Response):
            return columns
        if if_none_match == "*":
            return error(412, "0x80040237", "A record with matching key values already exists.")
        if if_match is None:
            return error(
                400,
                "STANDIN_UPSERT",
                "PATCH without If-Match would upsert (create a missing row) on the real service; the stand-in "
                "refuses. Send If-Match: *.",
            )
        wanted = [tag.strip() for tag in if_match.split(",")]
        written = self._store.write(table, row_id, changes, wanted, changeset)
        if isinstance(written, Response):
            return written
        row, etag = written
        entity_id = f"{self.base_url}{API_PREFIX}{entity_set}({row_id})"
        if "return=representation" in (headers.get("Prefer") or "").replace(" ", ""):
            return json_response(
                200,
                self._representation(table, entity_set, row_id, row, etag, columns),
                (("OData-EntityId", entity_id), ("ETag", etag)),
            )
        return Response(204, headers=(("OData-EntityId", entity_id),))

    def _changes(
        self, table: str, entity_set: str, row_id: str, headers: Message, body: bytes
    ) -> dict[str, Any] | Response:
        """The columns a PATCH body sets (the primary key and instance annotations left out), or its 400."""
        media_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return error(
                400,
                _PAYLOAD_CODE,
                f"Content-Type '{headers.get('Content-Type')}' is not supported for a JSON body; "
                "send Content-Type: application/json.",
            )
        try:
            changes = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            changes = None
        if not isinstance(changes, dict):
            return error(
                400,
                _PAYLOAD_CODE,
                f"Error identified in Payload provided by the user for Entity :'{entity_set}': the body must be a "
                "JSON object.",
            )
        pk = f"{table}id"
        applied: dict[str, Any] = {}
        for column, value in changes.items():
            if column.startswith("@odata."):
                continue  # instance annotations such as @odata.type are legal and carry no data
            if column not in self._store.columns[table]:
                return error(
                    400, "0x0", f"Invalid property '{column}' was found in entity 'Microsoft.Dynamics.CRM.{table}'."
                )
            if column in BOOLEAN_COLUMNS and value is not None and not isinstance(value, bool):
                return error(
                    400,
                    _PAYLOAD_CODE,
                    f"Cannot convert the literal '{json.dumps(value)}' to the expected type 'Edm.Boolean'.",
                )
            if column == pk:
                if not isinstance(value, str) or value.lower() != row_id:
                    return error(
                        400, _PAYLOAD_CODE, f"The value of '{pk}' in the body differs from the key in the URL."
                    )
                continue
            applied[column] = value
        return applied
