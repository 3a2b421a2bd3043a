"""The functions' Dataverse calls: update contact, lead and account rows (never create one by accident), read
rows, and the batched queries and writes the consent records need.

It uses the Web API as it really behaves: ``If-Match: *`` turns PATCH into update-only (404 instead of a silent
upsert-create), many updates go through ``$batch`` with ``continue-on-error``, and a row is read with its
annotations. Every call ends as a value: an :class:`~optout_core.dataverse.result.Attempt` per operation (a
:class:`~optout_core.dataverse.result.Batch` of them), holding the value or the error. The generic surface the
administrator's commands use (get, query, create, patch, delete, WhoAmI) is
:class:`~optout_core.dataverse.webapi.WebApi`, which this client extends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.result import Attempt, Batch
from optout_core.dataverse.transport import API, Operation
from optout_core.dataverse.webapi import (
    ANNOTATIONS,
    WebApi,
    entity_id,
    patch_operation,
    post_operation,
    query_path,
)
from optout_core.domain.model import ENTITY_SETS


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


class DataverseClient(WebApi):
    """Updates and reads contact, lead and account rows (and the consent records) for the functions."""

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
        operations = [Operation(Request("GET", query_path(entity_set, select, where), {})) for where in filters]
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
        operations = [post_operation(entity_set, row) for row in creates]
        operations += [patch_operation(f"{API}/{entity_set}({row_id})", values) for row_id, values in updates]
        done = self._transport.perform(operations, batch=True, deadline=deadline)
        items: list[Attempt[str | Written]] = []
        for n, item in enumerate(done.items):
            convert: Callable[[Response], str | Written] = _created if n < len(creates) else _written
            items.append(item.map(convert))
        return Batch[str | Written](tuple(items), done.requests)

    def read_row(
        self, entity_set: str, row_id: str, select: Sequence[str] = (), *, deadline: float | None = None
    ) -> Attempt[dict[str, Any] | None]:
        """GET one row with its annotations (formatted values, lookup tables): the row, None when it does not
        exist, or the error that ended the read, with the requests and tries it took."""
        return self._reads(entity_set, [row_id], select, deadline, batch=False).items[0]

    def read_rows(
        self, entity_set: str, row_ids: Sequence[str], select: Sequence[str] = (), *, deadline: float | None = None
    ) -> Batch[dict[str, Any] | None]:
        """GET many rows with their annotations in ``$batch`` (one request per 1,000): each a row, None when it
        does not exist, or the error that ended its read."""
        return self._reads(entity_set, row_ids, select, deadline, batch=True)

    def _reads(
        self, entity_set: str, row_ids: Sequence[str], select: Sequence[str], deadline: float | None, *, batch: bool
    ) -> Batch[dict[str, Any] | None]:
        query = f"?$select={','.join(select)}" if select else ""
        operations = [
            Operation(Request("GET", f"{API}/{entity_set}({row_id}){query}", {"Prefer": ANNOTATIONS}), missing_ok=True)
            for row_id in row_ids
        ]
        return self._transport.perform(operations, batch=batch, deadline=deadline).map(_row)


def _patch(write: Write, returning: Sequence[str] = ()) -> Operation:
    return patch_operation(f"{API}/{ENTITY_SETS[write.table]}({write.row_id})", write.changes, returning)


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
