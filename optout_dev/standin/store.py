"""The rows the stand-in serves: tables and their columns, row versions (etags), the writes committed, and the
working copies of a ``$batch`` changeset, committed all or nothing."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from optout_dev.standin.responses import Response, error
from optout_dev.standin.tables import etag, normalise_id

Key = tuple[str, str]  # (table, row id)
Write = tuple[str, str, dict[str, Any]]  # (table, row id, changes applied)


def _stale() -> Response:
    return error(
        412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."
    )


class Changeset:
    """The writes of one changeset, applied to copies of the rows until the changeset commits."""

    def __init__(self) -> None:
        self.rows: dict[Key, dict[str, Any]] = {}  # working copies
        self.base: dict[Key, int] = {}  # committed version when first touched
        self.etags: dict[Key, str] = {}  # etag as this changeset sees the row
        self.conditional: set[Key] = set()  # rows written under a specific etag
        self.writes: list[Write] = []


class RowStore:
    """Rows per table, each with a version from one counter for all rows (like Dataverse's versionnumber);
    safe to use from any thread. Rows handed out are copies."""

    def __init__(
        self, tables: Mapping[str, Iterable[str]], entity_sets: Mapping[str, str], not_found_code: str
    ) -> None:
        self.columns: dict[str, frozenset[str]] = {}  # table -> its columns, the primary key included
        self.set_to_table: dict[str, str] = {}
        for table, columns in tables.items():
            if table not in entity_sets:
                raise ValueError(f"no entity set known for table {table!r}; pass entity_sets={{{table!r}: ...}}")
            self.columns[table] = frozenset(columns) | {f"{table}id"}
            self.set_to_table[entity_sets[table]] = table
        self.entity_sets = {table: entity_sets[table] for table in self.columns}  # table -> entity set
        self._not_found_code = not_found_code
        self._lock = threading.Lock()  # guards every piece of state below
        self._rows: dict[str, dict[str, dict[str, Any]]] = {table: {} for table in self.columns}
        self._versions: dict[Key, int] = {}
        self._rowversion = 1000
        self._writes: list[Write] = []

    # ----- for tests -------------------------------------------------------------------------------------

    def table(self, table: str) -> str:
        if table not in self.columns:
            raise ValueError(f"unknown table {table!r}; known: {sorted(self.columns)}")
        return table

    def add_row(self, table: str, row_id: str, values: Mapping[str, Any]) -> None:
        table = self.table(table)
        row_id = normalise_id(row_id)
        pk = f"{table}id"
        # "column@annotation" keys (FormattedValue, lookuplogicalname) seed the annotations a GET returns.
        unknown = {key.split("@", 1)[0] for key in values} - self.columns[table]
        if unknown:
            raise ValueError(f"unknown column(s) for {table}: {sorted(unknown)}")
        if pk in values and str(values[pk]).lower() != row_id:
            raise ValueError(f"{pk}={values[pk]!r} differs from row_id {row_id!r}")
        with self._lock:
            self._rows[table][row_id] = {**copy.deepcopy(dict(values)), pk: row_id}
            self._bump(table, row_id)

    def delete_row(self, table: str, row_id: str) -> None:
        table = self.table(table)
        row_id = normalise_id(row_id)
        with self._lock:
            del self._rows[table][row_id]
            self._versions.pop((table, row_id), None)

    def row(self, table: str, row_id: str) -> dict[str, Any] | None:
        table = self.table(table)
        row_id = normalise_id(row_id)
        with self._lock:
            found = self._rows[table].get(row_id)
            return copy.deepcopy(found) if found is not None else None

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        table = self.table(table)
        with self._lock:
            return copy.deepcopy(self._rows[table])

    @property
    def writes(self) -> list[Write]:
        with self._lock:
            return copy.deepcopy(self._writes)

    # ----- for the Web API -------------------------------------------------------------------------------
    # Stored values are never changed in place (a write replaces them), so a shallow copy of a row taken
    # under the lock is a consistent snapshot.

    def not_found(self, table: str, row_id: str) -> Response:
        return error(404, self._not_found_code, f"{table} With Id = {row_id} Does Not Exist")

    def read(self, table: str, row_id: str) -> tuple[dict[str, Any], str] | None:
        """The row and its etag; None when it does not exist."""
        with self._lock:
            row = self._rows[table].get(row_id)
            if row is None:
                return None
            return dict(row), etag(self._versions[(table, row_id)])

    def write(
        self, table: str, row_id: str, changes: dict[str, Any], wanted: list[str], changeset: Changeset | None
    ) -> tuple[dict[str, Any], str] | Response:
        """Merge ``changes`` into the row if its etag is one of ``wanted`` (or ``wanted`` holds ``*``): at once,
        or, within a changeset, into its working copy. The row as written and its (provisional) etag, or the
        404/412 answer."""
        key = (table, row_id)
        with self._lock:
            row: dict[str, Any] | None
            if changeset is not None and key in changeset.rows:  # written earlier in this changeset
                row, current = changeset.rows[key], changeset.etags[key]
            else:
                row = self._rows[table].get(row_id)
                current = etag(self._versions[key]) if row is not None else ""
            if row is None:
                return self.not_found(table, row_id)
            if "*" not in wanted and current not in wanted:
                return _stale()
            if changeset is None:
                row.update(copy.deepcopy(changes))
                written = self._bump(table, row_id)
                self._writes.append((table, row_id, copy.deepcopy(changes)))
            else:
                # Apply to a copy; commit() writes it through once the whole changeset succeeded.
                if key not in changeset.rows:
                    changeset.base[key] = self._versions[key]
                    changeset.rows[key] = row = copy.deepcopy(row)
                row.update(copy.deepcopy(changes))
                if "*" not in wanted:
                    changeset.conditional.add(key)
                changeset.writes.append((table, row_id, copy.deepcopy(changes)))
                written = f'W/"{changeset.base[key]}.{len(changeset.writes)}"'  # provisional
                changeset.etags[key] = written
            return dict(row), written

    def commit(self, changeset: Changeset) -> Response | None:
        """Write a changeset's rows through, all or nothing; the error that prevents it otherwise (a row
        deleted meanwhile, or changed meanwhile under a write that named its etag)."""
        with self._lock:
            for (table, row_id), base in changeset.base.items():
                if row_id not in self._rows[table]:
                    return self.not_found(table, row_id)
                if (table, row_id) in changeset.conditional and self._versions[(table, row_id)] != base:
                    return _stale()
            for table, row_id, applied in changeset.writes:
                # Merge the columns written (as a direct PATCH does), not the whole copied row: a concurrent
                # write to other columns of the same row is kept.
                self._rows[table][row_id].update(copy.deepcopy(applied))
                self._bump(table, row_id)
                self._writes.append((table, row_id, copy.deepcopy(applied)))
        return None

    def _bump(self, table: str, row_id: str) -> str:
        # caller holds the lock
        self._rowversion += 1
        self._versions[(table, row_id)] = self._rowversion
        return etag(self._rowversion)
