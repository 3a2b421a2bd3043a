"""The Web API's resources behind authentication and service protection (docs/dataverse-webapi.md §1, §2, §7,
§8; docs/dataverse-admin.md): rows queried, created, read, updated and deleted, each checked against the user's
privileges; WhoAmI and RetrieveUserPrivileges; and the way to ``$batch`` and ``EntityDefinitions``. What the
stand-in does not model answers 501."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from email.message import Message
from itertools import islice
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from optout_dev.standin import users
from optout_dev.standin.batch import Batches, OperationHooks
from optout_dev.standin.metadata import entity_definitions, localise
from optout_dev.standin.paging import Position, following, page_size, paginate, position
from optout_dev.standin.privileges import NEEDED, UserPrivileges
from optout_dev.standin.query import AnyOf, Condition, keyed, parse_filter, representation, selection, top
from optout_dev.standin.recording import Traffic
from optout_dev.standin.responses import Response, error, json_response, method_not_allowed, unsupported
from optout_dev.standin.schema import Table
from optout_dev.standin.store import Changeset, RowStore
from optout_dev.standin.tables import API_PREFIX, GUID
from optout_dev.standin.writes import PAYLOAD_CODE, Body, parse_body, settle_state

_SEGMENT = re.compile(r"(?P<name>[^()/]+)(?:\((?P<key>[^()]*)\))?")
# Real resources the stand-in does not model: answer 501 rather than a misleading 404.
_UNSUPPORTED_SEGMENTS = frozenset({"$metadata", "RetrieveTotalRecordCount"})


class Identity(Protocol):
    """Whom WhoAmI names (the stand-in's attributes, read at each call)."""

    user_id: str
    business_unit_id: str
    organization_id: str
    base_language: int
    application_id: str | None  # the client id whose application user it is (None: a person)


def not_served(path: str) -> Response:
    return error(404, "", f"The resource '{path}' was not found (the stand-in serves {API_PREFIX} only).")


class WebApi:
    """Answers an authenticated, admitted request, or one operation inside a ``$batch``. ``base_url`` (the
    stand-in's URL, for ``@odata.context`` and ``OData-EntityId``) is set when the stand-in starts."""

    def __init__(
        self,
        store: RowStore,
        traffic: Traffic,
        identity: Identity,
        hooks: OperationHooks,
        privileges: UserPrivileges,
    ) -> None:
        self.base_url: str | None = None
        self._store = store
        self._traffic = traffic
        self._identity = identity
        self._privileges = privileges
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
                return error(400, PAYLOAD_CODE, "Batch requests can't contain other batch requests.")
            return self._batches.serve(method, headers, body)
        if first in ("WhoAmI", "WhoAmI()") and not rest:
            return self._whoami(method)
        match = _SEGMENT.fullmatch(first)
        if match is None:
            return error(400, "0x80060888", "Bad Request - Error in query syntax.")
        name, key = match.group("name"), match.group("key")
        if name == "EntityDefinitions":
            answer = entity_definitions(self._store, self.base_url, method, key, rest, query)
            return localise(answer, self._identity.base_language, query)
        if name == "systemusers" and key is not None and rest.startswith("Microsoft.Dynamics.CRM.RetrieveUser"):
            return self._user_privileges(method, key, rest.removesuffix("()"), query)
        if name == users.ENTITY_SET and key is None and not rest:
            identity = self._identity
            context = f"{self.base_url}{API_PREFIX}"
            return users.query_users(method, query, identity.user_id, identity.application_id, context)
        if name in _UNSUPPORTED_SEGMENTS or name == "$batch":
            return unsupported(f"'{name}'")
        table = self._store.set_to_table.get(name)
        if table is None:
            return error(404, "0x8006088a", f"Resource not found for the segment '{name}'.")
        if rest:
            return unsupported(f"The path segment '{rest}' after '{first}'")
        if key is None:  # the collection: query (GET) or create (POST)
            if method not in ("GET", "POST"):
                return method_not_allowed(method, "GET, POST")
            denied = self._privileges.check(table, NEEDED[method], self._identity.user_id)
            if denied is not None:
                return denied
            if method == "GET":
                return self._query(self._store.tables[table], query, headers)
            return self._create(self._store.tables[table], query, headers, body, changeset)
        if not GUID.fullmatch(key):
            if "=" in key:
                return unsupported(f"The alternate key '{key}'")
            return error(400, "0x80060888", f"Bad Request - Error in query syntax: '{key}' is not a GUID.")
        row_id = key.lower()
        if method not in ("GET", "HEAD", "PATCH", "DELETE"):
            if method == "PUT":
                return unsupported("PUT on a row")
            return method_not_allowed(method, "GET, PATCH, DELETE")
        denied = self._privileges.check(table, NEEDED[method], self._identity.user_id)
        if denied is not None:
            return denied
        typed = self._store.tables[table]
        if method == "PATCH":
            return self._patch(typed, row_id, query, headers, body, changeset)
        if method == "DELETE":
            gone = self._store.delete(table, row_id, changeset)
            return gone if gone is not None else Response(204)
        return self._get(typed, row_id, query, headers)

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

    def _user_privileges(self, method: str, key: str, rest: str, query: Mapping[str, list[str]]) -> Response:
        if method != "GET":
            return method_not_allowed(method, "GET")
        if key.strip().lower() != self._identity.user_id.lower():
            return error(404, "0x80040217", f"systemuser With Id = {key} Does Not Exist")
        return self._privileges.function(rest, query, self.base_url, API_PREFIX, self._identity.business_unit_id)

    def _context(self, table: Table, columns: list[str]) -> str:
        return f"{self.base_url}{API_PREFIX}$metadata#{table.entity_set}({','.join(columns)})"

    def _query(self, table: Table, query: Mapping[str, list[str]], headers: Message) -> Response:
        columns = selection(table, query, frozenset({"$filter", "$top", "$skiptoken"}))
        if isinstance(columns, Response):
            return columns
        conditions = parse_filter(table, " and ".join(query["$filter"])) if "$filter" in query else []
        if isinstance(conditions, Response):
            return conditions
        limit = top(query)
        if isinstance(limit, Response):
            return limit
        at = position(query)
        if isinstance(at, Response):
            return at
        annotations = _wants_annotations(headers)
        matching: Iterator[tuple[str, tuple[dict[str, Any], str]]]
        if limit is not None and page_size(headers) is None:  # $top applies: the first rows that match, then paged
            matching = islice(self._matching(table, conditions, Position(1, None)), limit)
        else:
            matching = self._matching(table, conditions, at)
        url = f"{self.base_url}{API_PREFIX}{table.entity_set}"
        page = paginate(matching, at, query, headers, url, table)
        items = [representation(table, row_id, row, etag, columns, annotations) for row_id, (row, etag) in page.rows]
        payload = {"@odata.context": self._context(table, columns), "value": items}
        if page.next_link is not None:
            payload["@odata.nextLink"] = page.next_link
        return json_response(200, payload, page.headers)

    def _matching(
        self, table: Table, conditions: list[Condition | AnyOf], at: Position
    ) -> Iterator[tuple[str, tuple[dict[str, Any], str]]]:
        """The rows after ``at`` that match, in key order, each read and matched only when it is drawn."""
        keys = keyed(table, conditions)
        for key in following(self._store.keys(table.name) if keys is None else keys, at):
            found = self._store.read(table.name, key)
            if found is not None and all(condition.holds(found[0]) for condition in conditions):
                yield key, found

    def _get(self, table: Table, row_id: str, query: Mapping[str, list[str]], headers: Message) -> Response:
        columns = selection(table, query, frozenset())
        if isinstance(columns, Response):
            return columns
        found = self._store.read(table.name, row_id)
        if found is None:
            return self._store.not_found(table.name, row_id)
        row, etag = found
        payload = self._entity(table, row_id, row, etag, columns, _wants_annotations(headers))
        if_none_match = headers.get("If-None-Match")
        if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
            return Response(304, headers=(("ETag", etag),))
        return json_response(200, payload)

    def _entity(
        self, table: Table, row_id: str, row: Mapping[str, Any], etag: str, columns: list[str], annotations: bool
    ) -> dict[str, Any]:
        context = {"@odata.context": f"{self._context(table, columns)}/$entity"}
        return {**context, **representation(table, row_id, row, etag, columns, annotations)}

    def _written(
        self,
        table: Table,
        row_id: str,
        written: tuple[dict[str, Any], str],
        columns: list[str],
        headers: Message,
        created: bool,
    ) -> Response:
        row, etag = written
        entity_id = f"{self.base_url}{API_PREFIX}{table.entity_set}({row_id})"
        if "return=representation" in (headers.get("Prefer") or "").replace(" ", ""):
            return json_response(
                201 if created else 200,
                self._entity(table, row_id, row, etag, columns, False),
                (("OData-EntityId", entity_id), ("ETag", etag)),
            )
        return Response(204, headers=(("OData-EntityId", entity_id),))

    def _bound(self, table: Table, body: Body, values: dict[str, Any], changeset: Changeset | None) -> Response | None:
        """Set the lookups a body binds, once each target row is found and the user may append to it."""
        for bind in body.binds:
            for denied in (
                self._privileges.check(table.name, "Append", self._identity.user_id),
                self._privileges.check(bind.table, "AppendTo", self._identity.user_id),
            ):
                if denied is not None:
                    return denied
            if self._store.read(bind.table, bind.row_id, changeset) is None:
                return self._store.not_found(bind.table, bind.row_id)
            values[bind.column.read_name] = bind.row_id
            values[f"{bind.column.read_name}@Microsoft.Dynamics.CRM.lookuplogicalname"] = bind.table
        return None

    def _create(
        self,
        table: Table,
        query: Mapping[str, list[str]],
        headers: Message,
        body: bytes,
        changeset: Changeset | None,
    ) -> Response:
        parsed = parse_body(table, table.entity_set, headers, body, True, self._store.set_to_table)
        if isinstance(parsed, Response):
            return parsed
        columns = selection(table, query, frozenset())
        if isinstance(columns, Response):
            return columns
        row_id = parsed.row_id or str(uuid.uuid4())
        values = dict(parsed.values)
        state = table.column("statecode")
        wrong = settle_state(table, values, state.default if state is not None else None, row_id)
        if wrong is None:
            wrong = self._bound(table, parsed, values, changeset)
        if wrong is not None:
            return wrong
        bound = {bind.column.name for bind in parsed.binds}
        missing = [
            column.name
            for column in table.columns
            if column.required in ("SystemRequired", "ApplicationRequired")
            and column.default is None
            and column.name not in values
            and column.name not in bound
            and column.name != table.primary_key
        ]
        for column in table.columns:  # defaults, as the platform fills them
            if column.default is not None and column.read_name not in values:
                values[column.read_name] = column.default
            if column.type == "Owner":
                values[column.read_name] = self._identity.user_id
                values[f"{column.read_name}@Microsoft.Dynamics.CRM.lookuplogicalname"] = "systemuser"
        system = [name for name in missing if table.column(name).required == "SystemRequired"]  # type: ignore[union-attr]
        if system:
            return error(
                400,
                "0x80040203",
                f"Required field(s) {', '.join(repr(name) for name in system)} of entity '{table.name}' missing.",
            )
        if missing:  # accepted by the platform (only forms enforce ApplicationRequired): flagged, not refused
            self._traffic.bug(
                f"POST {API_PREFIX}{table.entity_set} without the business-required column(s) {', '.join(missing)}: "
                "the real service accepts it, but the record is incomplete"
            )
        written = self._store.create(table.name, row_id, values, changeset)
        if isinstance(written, Response):
            return written
        return self._written(table, row_id, written, columns, headers, True)

    def _patch(
        self,
        table: Table,
        row_id: str,
        query: Mapping[str, list[str]],
        headers: Message,
        body: bytes,
        changeset: Changeset | None = None,
    ) -> Response:
        target = f"PATCH {API_PREFIX}{table.entity_set}({row_id})"
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
        parsed = parse_body(table, table.entity_set, headers, body, False, self._store.set_to_table)
        if isinstance(parsed, Response):
            return parsed
        if parsed.row_id is not None and parsed.row_id != row_id:
            return error(
                400, PAYLOAD_CODE, f"The value of '{table.primary_key}' in the body differs from the key in the URL."
            )
        columns = selection(table, query, frozenset())
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
        changes = dict(parsed.values)
        current = self._store.read(table.name, row_id, changeset)
        if current is not None:
            wrong = settle_state(table, changes, current[0].get("statecode"), row_id)
            if wrong is None:
                wrong = self._bound(table, parsed, changes, changeset)
            if wrong is not None:
                return wrong
        wanted = [tag.strip() for tag in if_match.split(",")]
        written = self._store.write(table.name, row_id, changes, wanted, changeset)
        if isinstance(written, Response):
            return written
        return self._written(table, row_id, written, columns, headers, False)


def _wants_annotations(headers: Message) -> bool:
    return "odata.include-annotations" in (headers.get("Prefer") or "")
