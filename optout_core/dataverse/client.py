"""A thin Dataverse Web API client: update rows (never create one by accident), read rows, WhoAmI, and the
plain reads, queries, creates and deletes the administrator's commands and the consent write need.

Follows the Azure SDK shape: it takes the environment URL and a ``TokenCredential``. It uses the Web API as it
really behaves: ``If-Match: *`` turns PATCH into update-only (404 instead of a silent upsert-create), many
updates go through ``$batch`` with ``continue-on-error``, and a row is read with its annotations. How requests
are sent, retried and judged lives in :mod:`optout_core.dataverse.transport`.

The functions' calls (``update``, ``update_many``, ``read_rows``, ``query_many``, ``write_rows``) end as values:
an :class:`~optout_core.dataverse.result.Attempt` per operation (a :class:`~optout_core.dataverse.result.Batch`
of them), holding the value or the error. The administrator's calls (``get``, ``query``, ``create``, ``patch``,
``delete``, ``whoami``, ``read_row``) raise the error: a
:class:`~optout_core.dataverse.errors.DataverseRejected` (permanent) or
:class:`~optout_core.dataverse.errors.DataverseUnavailable` (transient).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from optout_core.dataverse.auth import TokenCredentialLike
from optout_core.dataverse.errors import DataverseRejected
from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.result import Attempt, Batch
from optout_core.dataverse.sender import HttpSender
from optout_core.dataverse.throttle import ThrottleGate
from optout_core.dataverse.transport import API, Operation, ReadBack, Transport
from optout_core.domain.model import ENTITY_SETS
from optout_core.domain.policy import FailurePolicy
from optout_core.domain.retry import RetryPolicy

_DEFAULT_RETRY = RetryPolicy()
_SAFE = "'()=,$@/:%"  # readable quotes, parentheses, paths; string values come escaped (domain/odata.py)
_ANNOTATIONS = 'odata.include-annotations="*"'  # formatted values (labels) and lookup tables with each row


@dataclass(frozen=True, slots=True)
class Write:
    """One row update of a batch."""

    table: str
    row_id: str
    changes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Written:
    """What an update came to: ``found`` False when the row does not exist (404; nothing was written or created).
    ``row``: the row as written, when the update asked for columns back (``returning``); None when Dataverse sent
    none (the row already held the write, found by a read-back, or nothing was asked for)."""

    found: bool = True
    row: dict[str, Any] | None = None


class DataverseClient:
    """Updates contact, lead and account rows through the Dataverse Web API (v9.2)."""

    def __init__(
        self,
        url: str,
        credential: TokenCredentialLike,
        *,
        retry: RetryPolicy = _DEFAULT_RETRY,
        retry_after_cap: float = 300.0,
        timeout: float = 30.0,
        max_concurrency: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        gate: ThrottleGate | None = None,
        sender: HttpSender | None = None,  # the wire; None: the requests sender (tests pass a scripted one)
    ) -> None:
        self._transport = Transport(
            url,
            credential,
            policy=FailurePolicy(retry=retry, retry_after_cap=retry_after_cap),
            timeout=timeout,
            gate=gate or ThrottleGate(max_concurrency, sleep=sleep),
            sleep=sleep,
            sender=sender,
        )
        self.url = self._transport.url

    def update(
        self,
        table: str,
        row_id: str,
        changes: Mapping[str, Any],
        *,
        verify_first: bool = False,
        deadline: float | None = None,
    ) -> Attempt[Written]:
        """PATCH ``changes`` onto an existing row; a missing row is reported, never created.

        ``verify_first``: an earlier delivery may have written it already (Service Bus delivers again), so the
        row is read back first and not written twice. ``deadline`` (``time.monotonic()``): no retry starts, and
        no wait at the throttle gate lasts, past it.
        """
        operations = [_patch(Write(table, row_id, changes))]
        done = self._transport.perform(operations, batch=False, verify_first=verify_first, deadline=deadline)
        return done.items[0].map(_written)

    def update_many(
        self,
        writes: Sequence[Write],
        *,
        verify_first: bool = False,
        deadline: float | None = None,
        returning: Sequence[str] = (),
    ) -> Batch[Written]:
        """Apply many updates through ``$batch``, each with its own outcome; parts that succeeded are never
        sent again. No retry starts after ``deadline`` (``time.monotonic()``): what is left gets its error.
        ``returning``: columns each update answers with (``Prefer: return=representation``), so the write and the
        read of the row as written are one request."""
        operations = [_patch(w, returning) for w in writes]
        return self._transport.perform(operations, batch=True, verify_first=verify_first, deadline=deadline).map(
            _written
        )

    def query_many(
        self, entity_set: str, filters: Sequence[str], select: Sequence[str], *, deadline: float | None = None
    ) -> Batch[list[dict[str, Any]]]:
        """Many queries of one table through ``$batch`` (a ``$filter`` each), each with the rows it matched: the
        first page only (5,000 rows), plenty for the few rows a key-like filter matches."""
        operations = [Operation(Request("GET", _query_path(entity_set, select, where), {})) for where in filters]
        return self._transport.perform(operations, batch=True, deadline=deadline).map(_matched)

    def write_rows(
        self,
        entity_set: str,
        creates: Sequence[Mapping[str, Any]],
        updates: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        deadline: float | None = None,
    ) -> Batch[str | Written]:
        """New rows (POST) and updates of existing ones (``If-Match: *``: (row id, changes)) of any table, together
        in ``$batch``: first each new row's id, then each update's :class:`Written`. An unanswered create is never
        sent again: it ends :class:`~optout_core.dataverse.errors.Undetermined`, for the caller to look before
        creating again."""
        operations = [_post(entity_set, row) for row in creates]
        operations += [_patch_at(f"{API}/{entity_set}({row_id})", values) for row_id, values in updates]
        done = self._transport.perform(operations, batch=True, deadline=deadline)
        items: list[Attempt[str | Written]] = []
        for n, item in enumerate(done.items):
            convert: Callable[[Response], str | Written] = _created if n < len(creates) else _written
            items.append(item.map(convert))
        return Batch[str | Written](tuple(items), done.requests)

    def read_row(
        self, entity_set: str, row_id: str, select: Sequence[str] = (), *, deadline: float | None = None
    ) -> dict[str, Any] | None:
        """GET one row with its annotations (formatted values, lookup tables); None when it does not exist."""
        query = f"?$select={','.join(select)}" if select else ""
        request = Request("GET", f"{API}/{entity_set}({row_id}){query}", {"Prefer": _ANNOTATIONS})
        return _row(self._one(Operation(request, missing_ok=True), deadline))

    def read_rows(
        self, entity_set: str, row_ids: Sequence[str], select: Sequence[str] = (), *, deadline: float | None = None
    ) -> Batch[dict[str, Any] | None]:
        """GET many rows with their annotations in ``$batch`` (one request per 1,000): each a row, None when it
        does not exist, or the error that ended its read."""
        query = f"?$select={','.join(select)}" if select else ""
        operations = [
            Operation(Request("GET", f"{API}/{entity_set}({row_id}){query}", {"Prefer": _ANNOTATIONS}), missing_ok=True)
            for row_id in row_ids
        ]
        return self._transport.perform(operations, batch=True, deadline=deadline).map(_row)

    # -- any table, for the administrator's commands and the consent write ---------------------------

    def get(self, path: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
        """GET a JSON resource under the API root (``EntityDefinitions(...)``, a bound function); None for a 404
        when ``missing_ok``."""
        response = self._one(Operation(Request("GET", f"{API}/{path}"), missing_ok=missing_ok))
        if response.status == 404:
            return None
        found: dict[str, Any] = json.loads(response.body)
        return found

    def query(
        self, entity_set: str, *, select: Sequence[str], where: str | None = None, top: int | None = None
    ) -> list[dict[str, Any]]:
        """The rows of ``entity_set`` matching the OData ``where`` ($filter), following ``@odata.nextLink``."""
        path: str | None = _query_path(entity_set, select, where, top)
        rows: list[dict[str, Any]] = []
        while path is not None:
            page = json.loads(self._one(Operation(Request("GET", path, {"Prefer": _ANNOTATIONS}))).body)
            rows.extend(page.get("value", []))
            link = page.get("@odata.nextLink")
            path = link[len(self.url) :] if isinstance(link, str) and link.startswith(self.url) else None
        return rows

    def pages(
        self, entity_set: str, *, select: Sequence[str], where: str | None, page_size: int = 5000
    ) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """The rows matching ``where`` one page at a time (``Prefer: odata.maxpagesize``), each with the requests it
        took: ``@odata.nextLink`` is followed exactly as given, and a retried page (a 429) asks the same link again.
        """
        prefer = {"Prefer": f"odata.maxpagesize={page_size},{_ANNOTATIONS}"}
        options = [f"$select={','.join(select)}"] if select else []  # no $select: every column
        options += [f"$filter={quote(where, safe=_SAFE)}"] if where else []
        path: str | None = f"{API}/{entity_set}" + (f"?{'&'.join(options)}" if options else "")
        while path is not None:
            done = self._transport.perform([Operation(Request("GET", path, prefer))], batch=False)
            response = done.items[0].get()
            assert response is not None
            page = json.loads(response.body)
            yield list(page.get("value", [])), done.requests
            link = page.get("@odata.nextLink")
            if link is None:
                return
            if not (isinstance(link, str) and link.startswith(self.url + "/")):
                raise DataverseRejected(f"Dataverse's @odata.nextLink is not under {self.url}: {str(link)[:200]!r}")
            path = link[len(self.url) :]

    def create(self, entity_set: str, values: Mapping[str, Any]) -> str:
        """POST a new row; its id (from ``OData-EntityId``). An unanswered create is never sent again (it could
        make two rows): it raises :class:`~optout_core.dataverse.errors.Undetermined`, for the caller to look."""
        response = self._one(_post(entity_set, values))
        return entity_id(response.headers.get("OData-EntityId", ""))

    def patch(
        self, entity_set: str, row_id: str, changes: Mapping[str, Any], *, unreadable: Collection[str] = ()
    ) -> bool:
        """Update an existing row of any table (``If-Match: *``: never creates one); False when it is missing.
        ``unreadable``: columns Dataverse never returns (a SAS key), left out of a read-back's ``$select``."""
        operation = _patch_at(f"{API}/{entity_set}({row_id})", changes, unreadable=unreadable)
        return self._one(operation).status != 404

    def delete(self, entity_set: str, row_id: str) -> bool:
        """Delete a row; False when it was already gone."""
        response = self._one(Operation(Request("DELETE", f"{API}/{entity_set}({row_id})"), missing_ok=True))
        return response.status != 404

    def whoami(self) -> dict[str, Any]:
        """The ``WhoAmI`` function: proves the URL, the token and the application user in one call."""
        who: dict[str, Any] = json.loads(self._one(Operation(Request("GET", f"{API}/WhoAmI"))).body)
        return who

    def close(self) -> None:
        self._transport.close()

    def _one(self, operation: Operation, deadline: float | None = None) -> Response:
        response = self._transport.perform([operation], batch=False, deadline=deadline).items[0].get()
        assert response is not None
        return response


def entity_id(header: str) -> str:
    """The row id at the end of an ``OData-EntityId`` URL (``…/accounts(<id>)``)."""
    match = re.search(r"\(([0-9a-fA-F-]{36})\)\s*$", header)
    if match is None:
        raise DataverseRejected(f"Dataverse's answer named no created row (OData-EntityId {header!r})")
    return match.group(1).lower()


def _patch(write: Write, returning: Sequence[str] = ()) -> Operation:
    return _patch_at(f"{API}/{ENTITY_SETS[write.table]}({write.row_id})", write.changes, returning)


def _patch_at(
    path: str, changes: Mapping[str, Any], returning: Sequence[str] = (), unreadable: Collection[str] = ()
) -> Operation:
    body = json.dumps(dict(changes), separators=(",", ":")).encode("utf-8")
    headers = {"If-Match": "*", "Content-Type": "application/json"}
    target = path
    if returning:  # the row as written comes back with the answer: 200 and the columns instead of 204
        headers["Prefer"] = "return=representation"
        target = f"{path}?$select={','.join(returning)}"
    request = Request("PATCH", target, headers, body)
    # Lookup bindings (``x@odata.bind``) cannot be checked by reading the column back: such writes are resent.
    checkable = all("@" not in column for column in changes)
    readable = {column: value for column, value in changes.items() if column not in unreadable}
    read_back = ReadBack(path, readable) if checkable and readable else None
    return Operation(request, missing_ok=True, read_back=read_back)


def _post(entity_set: str, values: Mapping[str, Any]) -> Operation:
    body = json.dumps(dict(values), separators=(",", ":")).encode("utf-8")
    request = Request("POST", f"{API}/{entity_set}", {"Content-Type": "application/json"}, body)
    return Operation(request, resend_when_lost=False)


def _query_path(entity_set: str, select: Sequence[str], where: str | None, top: int | None = None) -> str:
    options = [f"$select={','.join(select)}"]
    if where:
        options.append(f"$filter={quote(where, safe=_SAFE)}")
    if top is not None:
        options.append(f"$top={top}")
    return f"{API}/{entity_set}?{'&'.join(options)}"


def _written(response: Response) -> Written:
    row = json.loads(response.body) if response.status == 200 and response.body else None
    return Written(found=response.status != 404, row=row)


def _row(response: Response) -> dict[str, Any] | None:
    if response.status == 404:
        return None
    row: dict[str, Any] = json.loads(response.body)
    return row


def _matched(response: Response) -> list[dict[str, Any]]:
    return list(json.loads(response.body).get("value", []))


def _created(response: Response) -> str:
    # a $batch part's header names are lower case
    return entity_id(response.headers.get("odata-entityid") or response.headers.get("OData-EntityId", ""))
