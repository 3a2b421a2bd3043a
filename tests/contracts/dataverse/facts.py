"""Microsoft's published table references as facts (tests/contracts/facts/dataverse/*.json), and the check of one
Web API request against them: the columns a body sets exist and are valid for that verb, option values exist, each
``<navigation>@odata.bind`` names a navigation property of the table and points at its target, and every column a
``$select`` or ``$filter`` names is valid for read.

Each fact file names its source (repository, path and commit of the table's reference page); tools/dataverse_facts.py
regenerates the files from a mirror of those repositories."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

FACTS = Path(__file__).resolve().parents[1] / "facts" / "dataverse"
API_PREFIX = "/api/data/v9.2/"
LOOKUP_TYPES = frozenset({"Lookup", "Customer", "Owner"})
CHOICE_TYPES = frozenset({"Picklist", "State", "Status", "Boolean"})
# Resources that are not rows of a table (messages and metadata): outside the table references.
NOT_TABLES = frozenset({"WhoAmI", "WhoAmI()", "EntityDefinitions", "$batch"})
_SEGMENT = re.compile(r"(?P<name>[^()/]+)(?:\((?P<key>[^()]*)\))?")
_COMPARISON = re.compile(r"([A-Za-z_]\w*)\s+(?:eq|ne|gt|ge|lt|le)\s+('(?:[^']|'')*'|[^\s)]+)")
_BIND = re.compile(r"/?([A-Za-z_]\w*)\(([^()]*)\)")


@dataclass(frozen=True)
class ColumnFact:
    name: str
    type: str
    read: bool
    create: bool
    update: bool
    required: str
    options: tuple[int, ...] | None = None
    targets: tuple[str, ...] = ()
    navigation: Mapping[str, str] = field(default_factory=dict)

    @property
    def read_name(self) -> str:
        """The Web API property the column is read with (``_x_value`` for a lookup)."""
        return f"_{self.name}_value" if self.type in LOOKUP_TYPES else self.name


@dataclass(frozen=True)
class TableFact:
    name: str
    entity_set: str
    source: Mapping[str, str]
    columns: Mapping[str, ColumnFact]

    def by_read_name(self, name: str) -> ColumnFact | None:
        return next((c for c in self.columns.values() if c.read_name == name), None)

    def by_navigation(self, navigation: str) -> ColumnFact | None:
        return next((c for c in self.columns.values() if navigation in c.navigation), None)


def _column(raw: Mapping[str, Any]) -> ColumnFact:
    options = raw.get("options")
    return ColumnFact(
        name=raw["name"],
        type=raw["type"],
        read=raw["IsValidForRead"],
        create=raw["IsValidForCreate"],
        update=raw["IsValidForUpdate"],
        required=raw["RequiredLevel"],
        options=tuple(options) if options is not None else None,
        targets=tuple(raw.get("targets", ())),
        navigation=dict(raw.get("navigation", {})),
    )


@cache
def tables() -> dict[str, TableFact]:
    """Every table fact, by logical name."""
    found: dict[str, TableFact] = {}
    for path in sorted(FACTS.glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        columns = {c["name"]: _column(c) for c in raw["columns"]}
        found[raw["table"]] = TableFact(raw["table"], raw["entity_set"], raw["source"], columns)
    return found


def by_entity_set() -> dict[str, TableFact]:
    return {fact.entity_set: fact for fact in tables().values()}


@dataclass(frozen=True)
class Checked:
    """What one request was checked against: the table (None: not a table row, or no reference held for it) and
    what breaks the reference."""

    request: str
    table: str | None
    violations: tuple[str, ...] = ()
    unchecked: str | None = None  # an entity set no fact file covers


def check_request(method: str, raw_path: str, body: bytes) -> Checked:
    """``raw_path`` as the stand-in recorded it (a ``$batch`` operation resolved to ``/api/data/v9.2/...``)."""
    split = urlsplit(raw_path)
    label = f"{method} {unquote(raw_path)}"
    path = unquote(split.path)
    if not path.startswith(API_PREFIX):
        return Checked(label, None, (f"outside {API_PREFIX}",))
    first = path[len(API_PREFIX) :].split("/", 1)[0]
    match = _SEGMENT.fullmatch(first)
    name = match.group("name") if match else first
    if name in NOT_TABLES or name == "systemusers" and "/" in path[len(API_PREFIX) :]:
        return Checked(label, None)
    fact = by_entity_set().get(name)
    if fact is None:
        return Checked(label, None, unchecked=name)
    query = parse_qs(split.query, keep_blank_values=True)
    problems = [*_selected(fact, query), *_filtered(fact, query)]
    if method in ("POST", "PATCH") and body:
        problems += _body(fact, json.loads(body), creating=method == "POST")
    return Checked(label, fact.name, tuple(problems))


def _selected(fact: TableFact, query: Mapping[str, list[str]]) -> Iterable[str]:
    for name in (n.strip() for n in ",".join(query.get("$select", [])).split(",") if n.strip()):
        column = fact.by_read_name(name)
        if column is None:
            yield f"$select names {name!r}, not a column of {fact.name}"
        elif not column.read:
            yield f"$select names {name!r}, which {fact.name} says is not valid for read"


def _filtered(fact: TableFact, query: Mapping[str, list[str]]) -> Iterable[str]:
    for text in query.get("$filter", []):
        for name, literal in _COMPARISON.findall(text):
            column = fact.by_read_name(name)
            if column is None:
                yield f"$filter names {name!r}, not a column of {fact.name}"
            elif not column.read:
                yield f"$filter names {name!r}, which is not valid for read"
            elif _outside(column, literal):
                yield f"$filter compares {name} with {literal}, not one of its options {list(column.options or ())}"


def _outside(column: ColumnFact, literal: str) -> bool:
    """Whether ``literal`` is a number that is not one of a choice column's options."""
    if column.type not in CHOICE_TYPES - {"Boolean"} or column.options is None:
        return False
    return literal.lstrip("-").isdigit() and int(literal) not in column.options


def _body(fact: TableFact, document: Mapping[str, Any], creating: bool) -> Iterable[str]:
    verb = "create" if creating else "update"
    for key, value in document.items():
        if key.startswith("@odata."):
            continue
        if key.endswith("@odata.bind"):
            yield from _bind(fact, key.removesuffix("@odata.bind"), value)
            continue
        column = fact.columns.get(key)
        if column is None:
            yield f"{key!r} is not a column of {fact.name}"
        elif column.type in LOOKUP_TYPES:
            yield f"{key!r} is a lookup: set it with a navigation property's @odata.bind"
        elif not (column.create if creating else column.update):
            yield f"{key!r} is not valid for {verb} on {fact.name}"
        elif value is not None:
            yield from _value(fact, column, value)


def _value(fact: TableFact, column: ColumnFact, value: Any) -> Iterable[str]:
    if column.type == "Boolean":
        if not isinstance(value, bool):
            yield f"{column.name} is a Boolean; {value!r} is not"
    elif column.type in CHOICE_TYPES and column.options is not None and value not in column.options:
        yield f"{value!r} is not an option of {fact.name}.{column.name} ({list(column.options)})"


def _bind(fact: TableFact, navigation: str, value: Any) -> Iterable[str]:
    column = fact.by_navigation(navigation)
    if column is None:
        yield f"{navigation!r} is not a navigation property of {fact.name}"
        return
    match = _BIND.fullmatch(str(value))
    target = column.navigation[navigation]
    sets = {t.name: t.entity_set for t in tables().values()}
    wanted = sets.get(target, f"{target}s")
    if match is None or match.group(1) != wanted:
        yield f"{navigation}@odata.bind must point at /{wanted}(<id>), got {value!r}"
