"""The rows the stand-in serves: typed tables (:mod:`.schema`), row versions (etags), the writes committed, and the
working copies of a ``$batch`` changeset, committed all or nothing."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optout_dev.standin.responses import Response, error
from optout_dev.standin.schema import Table
from optout_dev.standin.tables import etag, normalise_id

Key = tuple[str, str]  # (table, row id)
Write = tuple[str, str, dict[str, Any]]  # (table, row id, changes applied)


def _stale() -> Response:
    return error(
        412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."
    )


def duplicate() -> Response:
    return error(412, "0x80040237", "A record with matching key values already exists.")


@dataclass
class Changeset:
    """The writes of one changeset, applied to copies of the rows until the changeset commits."""

    rows: dict[Key, dict[str, Any] | None] = field(default_factory=dict)  # working copies (None: deleted)
    base: dict[Key, int] = field(default_factory=dict)  # committed version when first touched
    created: set[Key] = field(default_factory=set)  # rows this changeset creates
    etags: dict[Key, str] = field(default_factory=dict)  # etag as this changeset sees the row
    conditional: set[Key] = field(default_factory=set)  # rows written under a specific etag
    operations: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)  # (kind, table, id, values)


class RowStore:
    """Rows per typed table, each with a version from one counter for all rows (like Dataverse's versionnumber);
    safe to use from any thread. Rows handed out are copies. Lookups are stored under their read name
    (``_x_value``, with the ``@Microsoft.Dynamics.CRM.lookuplogicalname`` annotation)."""

    def __init__(self, tables: Mapping[str, Table], not_found_code: str) -> None:
        self.tables: dict[str, Table] = dict(tables)
        # table -> the names its rows are stored and read under (the primary key included)
        self.columns: dict[str, frozenset[str]] = {
            name: frozenset(column.read_name for column in table.columns) for name, table in tables.items()
        }
        self.set_to_table = {table.entity_set: name for name, table in tables.items()}
        self.entity_sets = {name: table.entity_set for name, table in tables.items()}  # table -> entity set
        self._not_found_code = not_found_code
        self._lock = threading.Lock()  # guards every piece of state below
        self._rows: dict[str, dict[str, dict[str, Any]]] = {table: {} for table in self.tables}
        self._versions: dict[Key, int] = {}
        self._rowversion = 1000
        self._writes: list[Write] = []
        # table -> its row ids in order, remembered while no row is created or deleted: (row count, last version, ids)
        self._keys: dict[str, tuple[int, int, list[str]]] = {}

    # ----- for tests -------------------------------------------------------------------------------------

    def table(self, table: str) -> str:
        if table not in self.tables:
            raise ValueError(f"unknown table {table!r}; known: {sorted(self.tables)}")
        return table

    def add_row(self, table: str, row_id: str, values: Mapping[str, Any]) -> None:
        table = self.table(table)
        row_id = normalise_id(row_id)
        typed = self.tables[table]
        pk = typed.primary_key
        stored: dict[str, Any] = {}
        for key, value in values.items():
            # "column@annotation" keys (FormattedValue, lookuplogicalname) seed the annotations a GET returns.
            name, at, annotation = key.partition("@")
            column = typed.column(name)
            if column is not None and column.is_lookup:  # a lookup may be seeded by its logical name
                name = column.read_name
            elif column is None:
                column = next((c for c in typed.columns if c.read_name == name), None)
            if column is None:
                raise ValueError(f"unknown column(s) for {table}: [{name!r}]")
            stored[name + at + annotation] = copy.deepcopy(value)
        if pk in stored and str(stored[pk]).lower() != row_id:
            raise ValueError(f"{pk}={stored[pk]!r} differs from row_id {row_id!r}")
        with self._lock:
            self._rows[table][row_id] = self._computed(table, {**stored, pk: row_id})
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

    def read(self, table: str, row_id: str, changeset: Changeset | None = None) -> tuple[dict[str, Any], str] | None:
        """The row and its etag (as ``changeset`` sees it, if given); None when it does not exist."""
        key = (table, row_id)
        with self._lock:
            if changeset is not None and key in changeset.rows:
                working = changeset.rows[key]
                return (dict(working), changeset.etags[key]) if working is not None else None
            row = self._rows[table].get(row_id)
            if row is None:
                return None
            return dict(row), etag(self._versions[key])

    def keys(self, table: str) -> list[str]:
        """The row ids of ``table`` in order (a list never changed afterwards). Sorted once, then reused until a row
        is created or deleted: a create bumps the version counter, a delete alone lowers the count."""
        with self._lock:
            rows = self._rows[table]
            known = self._keys.get(table)
            if known is not None and known[:2] == (len(rows), self._rowversion):
                return known[2]
            ordered = sorted(rows)
            self._keys[table] = (len(rows), self._rowversion, ordered)
            return ordered

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
                self._computed(table, row)
                written = self._bump(table, row_id)
                self._writes.append((table, row_id, copy.deepcopy(changes)))
                return dict(row), written
            # Apply to a copy; commit() writes it through once the whole changeset succeeded.
            working = self._working(changeset, key, row)
            working.update(copy.deepcopy(changes))
            self._computed(table, working)
            if "*" not in wanted:
                changeset.conditional.add(key)
            changeset.operations.append(("write", table, row_id, copy.deepcopy(changes)))
            return dict(working), self._provisional(changeset, key)

    def create(
        self, table: str, row_id: str, values: dict[str, Any], changeset: Changeset | None
    ) -> tuple[dict[str, Any], str] | Response:
        """Insert a new row (412 if the id is taken): at once or within a changeset."""
        key = (table, row_id)
        row = self._computed(table, {**copy.deepcopy(values), self.tables[table].primary_key: row_id})
        with self._lock:
            taken = row_id in self._rows[table]
            if changeset is not None and key in changeset.rows:
                taken = changeset.rows[key] is not None
            if taken:
                return duplicate()
            if changeset is None:
                self._rows[table][row_id] = row
                self._writes.append((table, row_id, copy.deepcopy(values)))
                return dict(row), self._bump(table, row_id)
            changeset.rows[key] = row
            changeset.created.add(key)
            changeset.operations.append(("create", table, row_id, copy.deepcopy(values)))
            return dict(row), self._provisional(changeset, key)

    def delete(self, table: str, row_id: str, changeset: Changeset | None) -> Response | None:
        """Remove a row; its 404 when it does not exist."""
        key = (table, row_id)
        with self._lock:
            current = changeset.rows[key] if changeset is not None and key in changeset.rows else None
            if current is None and (changeset is None or key not in changeset.rows):
                current = self._rows[table].get(row_id)
            if current is None:
                return self.not_found(table, row_id)
            if changeset is None:
                del self._rows[table][row_id]
                self._versions.pop(key, None)
                return None
            self._working(changeset, key, current)
            changeset.rows[key] = None
            changeset.operations.append(("delete", table, row_id, {}))
            return None

    def commit(self, changeset: Changeset) -> Response | None:
        """Write a changeset's operations through, all or nothing; the error that prevents it otherwise (a row
        deleted meanwhile, created meanwhile, or changed meanwhile under a write that named its etag)."""
        with self._lock:
            for (table, row_id), base in changeset.base.items():
                if row_id not in self._rows[table]:
                    return self.not_found(table, row_id)
                if (table, row_id) in changeset.conditional and self._versions[(table, row_id)] != base:
                    return _stale()
            for table, row_id in changeset.created:
                if row_id in self._rows[table]:
                    return duplicate()
            for kind, table, row_id, values in changeset.operations:
                if kind == "delete":
                    self._rows[table].pop(row_id, None)
                    self._versions.pop((table, row_id), None)
                    continue
                # Merge the columns written (as a direct PATCH does), not the whole copied row: a concurrent
                # write to other columns of the same row is kept.
                if kind == "create":
                    self._rows[table][row_id] = {self.tables[table].primary_key: row_id}
                self._rows[table][row_id].update(copy.deepcopy(values))
                self._computed(table, self._rows[table][row_id])
                self._bump(table, row_id)
                self._writes.append((table, row_id, copy.deepcopy(values)))
        return None

    def _working(self, changeset: Changeset, key: Key, row: dict[str, Any]) -> dict[str, Any]:
        # caller holds the lock; the changeset's copy of a row, made when first touched
        working = changeset.rows.get(key)
        if working is None:
            if key not in changeset.created:
                changeset.base.setdefault(key, self._versions[key])
            working = changeset.rows[key] = copy.deepcopy(row)
        return working

    @staticmethod
    def _provisional(changeset: Changeset, key: Key) -> str:
        written = f'W/"{changeset.base.get(key, 0)}.{len(changeset.operations)}"'
        changeset.etags[key] = written
        return written

    def _computed(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        # computed columns (issaskeyset...): whether their source column holds a value
        for column in self.tables[table].columns:
            if column.flag_of is not None:
                row[column.name] = row.get(column.flag_of) not in (None, "")
        return row

    def _bump(self, table: str, row_id: str) -> str:
        # caller holds the lock
        self._rowversion += 1
        self._versions[(table, row_id)] = self._rowversion
        return etag(self._rowversion)
