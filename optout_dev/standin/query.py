"""Reading rows (docs/dataverse-webapi.md §8, docs/dataverse-admin.md): ``$select`` of readable properties (lookups
as ``_x_value``), a ``$filter`` of ``property eq|ne|gt|ge|lt|le literal`` clauses joined by ``and``, each clause or a
parenthesised group of clauses joined by ``or`` (Microsoft Learn, "Filter rows using OData": comparison, logical and
grouping operators), ``$top``, and the JSON a row is answered with. Anything richer answers 501."""

from __future__ import annotations

import copy
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from optout_dev.standin.responses import Response, error, unsupported
from optout_dev.standin.schema import LOOKUP_TYPES, Column, Table
from optout_dev.standin.tables import GUID

LOOKUP_TABLE = "@Microsoft.Dynamics.CRM.lookuplogicalname"
_DATE_TIME = r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2}))?"
_LITERAL = (
    r"'(?:[^']|'')*'|true|false|null|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    rf"|{_DATE_TIME}|-?\d+"
)
_CLAUSE = re.compile(rf"\s*([A-Za-z_]\w*)\s+(eq|ne|gt|ge|lt|le)\s+({_LITERAL})\s*")
_ORDER = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
_KIND = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual", "lt": "LessThan"}
# Valid OData the stand-in does not model (other operators, functions, nested grouping): 501, not a guess.
_RICHER = re.compile(r"\b(?:or|not|has|in|any|all)\b|[()/]", re.IGNORECASE)
# The In query function with its arguments inline; quotes inside a value are doubled, as in any OData string.
_IN = re.compile(r"Microsoft\.Dynamics\.CRM\.In\(PropertyName='(\w+)',PropertyValues=\[((?:'(?:[^']|'')*',?)*)\]\)")
# A malformed $filter: ODataLib's ExpressionLexer_SyntaxError text, "Syntax error at position {0} in '{1}'."
# (OData/odata.net, Microsoft.OData.Core resources), under the code Dataverse also uses for query syntax
# (docs/dataverse-webapi.md §8; its name is unconfirmed). The position is where the first malformed clause starts.
QUERY_SYNTAX = "0x80060888"
_EDM = {"Boolean": "Edm.Boolean", "Integer": "Edm.Int32", "DateTime": "Edm.DateTimeOffset"}


def no_property(table: str, name: str) -> Response:
    # Microsoft's answer for a property the entity type lacks, code "0x0" included (learn.microsoft.com,
    # troubleshoot/power-platform/power-apps/dataverse/web-api-client-errors, "Could not find a property named").
    return error(400, "0x0", f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{table}'.")


@dataclass(frozen=True)
class Condition:
    column: Column
    op: str  # eq, ne, gt, ge, lt, le
    value: Any

    def holds(self, row: Mapping[str, Any]) -> bool:
        stored: Any = row.get(self.column.read_name)
        value: Any
        if isinstance(stored, str) and isinstance(self.value, str):  # Dataverse compares text case-insensitively
            stored, value = stored.casefold(), self.value.casefold()
        elif isinstance(self.value, datetime) and isinstance(stored, str):
            stored, value = _moment(stored), self.value
        else:
            value = self.value
        if self.op in _ORDER:  # SQL: an ordering comparison with null is never true
            return stored is not None and value is not None and bool(_ORDER[self.op](stored, value))
        if self.op == "ne" and stored is None and value is not None:
            return False  # SQL's <>: a null column matches no 'ne' of a value
        return bool(stored == value) == (self.op == "eq")


@dataclass(frozen=True)
class AnyOf:
    """A parenthesised group of conditions joined by ``or``."""

    conditions: tuple[Condition, ...]

    def holds(self, row: Mapping[str, Any]) -> bool:
        if self._texts is not None:  # one set lookup, not a clause at a time: ids named by the hundred
            column, texts = self._texts
            stored = row.get(column)
            return isinstance(stored, str) and stored.casefold() in texts
        if self._numbers is not None:  # likewise for codes (a choice column's opt-out types, on every log read)
            column, numbers = self._numbers
            stored = row.get(column)
            if isinstance(stored, int | float):
                return stored in numbers
            if stored is None or isinstance(stored, str):
                return False
        return any(condition.holds(row) for condition in self.conditions)

    @cached_property
    def _texts(self) -> tuple[str, frozenset[str]] | None:
        """When every clause is ``column eq 'text'`` (or a GUID) of one column: that column and the values,
        casefolded as :meth:`Condition.holds` compares them; else None."""
        columns = {c.column.read_name for c in self.conditions}
        if len(columns) != 1 or not all(c.op == "eq" and isinstance(c.value, str) for c in self.conditions):
            return None
        return columns.pop(), frozenset(c.value.casefold() for c in self.conditions)

    @cached_property
    def _numbers(self) -> tuple[str, frozenset[int]] | None:
        """When every clause is ``column eq number`` of one column: that column and the numbers, which a stored
        number equals exactly when :meth:`Condition.holds` finds it equal (anything else equals none of them)."""
        columns = {c.column.read_name for c in self.conditions}
        if len(columns) != 1 or not all(c.op == "eq" and type(c.value) is int for c in self.conditions):
            return None
        return columns.pop(), frozenset(c.value for c in self.conditions)


def keyed(table: Table, conditions: list[Condition | AnyOf]) -> list[str] | None:
    """The primary keys a term pins the rows to (``key eq id``, or a group of them joined by ``or``), in key order,
    else None. Only rows with those keys can match: the caller reads them by key instead of scanning the table
    (the conditions still decide), as Dataverse seeks a clustered primary key index."""
    for term in conditions:
        clauses = term.conditions if isinstance(term, AnyOf) else (term,)
        if all(c.op == "eq" and c.column.read_name == table.primary_key and c.value is not None for c in clauses):
            return sorted({str(c.value) for c in clauses})
    return None


def selection(table: Table, query: Mapping[str, list[str]], allowed: frozenset[str]) -> list[str] | Response:
    """The properties ``$select`` names (each readable), or all readable ones; 501 for an option not ``allowed``."""
    for option in query:
        if option.startswith("$") and option not in allowed | {"$select"}:
            return unsupported(f"The query option '{option}'")
    if "$select" not in query:
        return table.readable
    selected = [name.strip() for name in ",".join(query["$select"]).split(",")]
    for name in selected:
        # A column the table reference marks IsValidForRead False (serviceendpoint.saskey: MicrosoftDocs/powerapps-docs
        # .../reference/entities/serviceendpoint.md) is never returned; Dataverse's exact answer to selecting it is
        # unconfirmed, so it gets the unknown-property 400 and no client can come to rely on reading it.
        if table.by_read_name(name) is None:
            return no_property(table.name, name)
    return selected


def parse_filter(table: Table, text: str) -> list[Condition | AnyOf] | Response:
    """Clauses joined by ``and``, each ``property op literal`` or ``(clause or clause ...)``; a literal of the wrong
    kind is a 400 as in OData."""
    terms: list[Condition | AnyOf] = []
    for term in re.split(r"\s+and\s+", text.strip()):
        term = term.strip()
        if (call := _IN.fullmatch(term)) is not None:
            among = _in(table, text, call)
            if isinstance(among, Response):
                return among
            terms.append(among)
            continue
        group = term.startswith("(") and term.endswith(")")
        conditions: list[Condition] = []
        for clause in re.split(r"\s+or\s+", term[1:-1]) if group else [term]:
            condition = _condition(table, text, clause)
            if isinstance(condition, Response):
                return condition
            conditions.append(condition)
        terms.append(AnyOf(tuple(conditions)) if group else conditions[0])
    return terms


def _in(table: Table, text: str, call: re.Match[str]) -> AnyOf | Response:
    """``Microsoft.Dynamics.CRM.In(PropertyName='p',PropertyValues=['v',...])``: the property equals one of the
    values, given as strings (Microsoft Learn, "In Function", Web API query function reference:
    learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/in; ``MicrosoftDocs/powerapps-docs``
    ``powerapps-docs/developer/data-platform/webapi/reference/in.md``). Modelled for text, GUID (lookup, key)
    and whole-number columns; a value that is not of the column's kind is a 400, as a comparison's would be."""
    name, listed = call.group(1), call.group(2)
    column = table.by_read_name(name)
    if column is None:
        return no_property(table.name, name)
    values = [v[1:-1].replace("''", "'") for v in re.findall(r"'(?:[^']|'')*'", listed)]
    if not values or ",".join(f"'{v.replace("'", "''")}'" for v in values) != listed:
        return error(400, QUERY_SYNTAX, f"Syntax error at position {text.find(call.group(0))} in '{text}'.")
    conditions: list[Condition] = []
    for value in values:
        if column.type in LOOKUP_TYPES or column.type == "Uniqueidentifier":
            if not GUID.fullmatch(value):
                return error(400, QUERY_SYNTAX, f"'{value}' is not a valid value for '{name}' (Edm.Guid).")
            conditions.append(Condition(column, "eq", value.lower()))
        elif column.type in ("Picklist", "State", "Status", "Integer"):
            if not re.fullmatch(r"-?\d+", value):
                return error(400, QUERY_SYNTAX, f"'{value}' is not a valid value for '{name}' (Edm.Int32).")
            conditions.append(Condition(column, "eq", int(value)))
        elif column.type in ("String", "Memo", "EntityName"):
            conditions.append(Condition(column, "eq", value))
        else:
            return unsupported(f"The In function over the {column.type} column '{name}'")
    return AnyOf(tuple(conditions))


def _condition(table: Table, text: str, clause: str) -> Condition | Response:
    match = _CLAUSE.fullmatch(clause)
    if match is None:
        if _RICHER.search(re.sub(r"'(?:[^']|'')*'", "''", clause)) is None:
            position = max(text.find(clause.strip()), 0)
            return error(400, QUERY_SYNTAX, f"Syntax error at position {position} in '{text}'.")
        return unsupported(
            f"The $filter '{text}' (only 'property eq|ne|gt|ge|lt|le literal' clauses joined by 'and', or by 'or' "
            "inside one pair of parentheses, are modelled)"
        )
    name, op, literal = match.groups()
    column = table.by_read_name(name)
    if column is None:
        return no_property(table.name, name)
    value = _literal(literal)
    if not _fits(column, value, literal):
        found = "Edm.String" if literal.startswith("'") else _kind(value)
        return error(
            400,
            "0x80060888",
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{_edm(column)}' and '{found}' for operator kind '{_KIND.get(op, 'LessThanOrEqual')}'.",
        )
    return Condition(column, op, value)


def _moment(text: str) -> datetime:
    """An ISO 8601 date or date-time as UTC (a date alone is its midnight)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _literal(literal: str) -> Any:
    if literal.startswith("'"):
        return literal[1:-1].replace("''", "'")
    if literal in ("true", "false"):
        return literal == "true"
    if literal == "null":
        return None
    if GUID.fullmatch(literal):
        return literal.lower()
    if re.fullmatch(_DATE_TIME, literal):
        return _moment(literal)
    return int(literal)


def _fits(column: Column, value: Any, literal: str) -> bool:
    if value is None:
        return True
    if isinstance(value, datetime) or column.type == "DateTime":  # Edm.DateTimeOffset takes an unquoted literal
        return isinstance(value, datetime) and column.type == "DateTime"
    guid = column.type in LOOKUP_TYPES or column.type == "Uniqueidentifier"
    if guid:
        return isinstance(value, str) and not literal.startswith("'") and bool(GUID.fullmatch(value))
    if column.type == "Boolean":
        return isinstance(value, bool)
    if column.type in ("Picklist", "State", "Status", "Integer"):
        return isinstance(value, int) and not isinstance(value, bool)
    return literal.startswith("'")


def _edm(column: Column) -> str:
    if column.type in LOOKUP_TYPES or column.type == "Uniqueidentifier":
        return "Edm.Guid"
    if column.type in ("Picklist", "State", "Status"):
        return "Edm.Int32"
    return _EDM.get(column.type, "Edm.String")


def _kind(value: Any) -> str:
    if isinstance(value, datetime):
        return "Edm.DateTimeOffset"
    if isinstance(value, bool):
        return "Edm.Boolean"
    return "Edm.Int32" if isinstance(value, int) else "Edm.Guid"


def top(query: Mapping[str, list[str]]) -> int | None | Response:
    if "$top" not in query:
        return None
    text = query["$top"][-1].strip()
    if not text.isdigit():
        return error(400, "0x80060888", f"Invalid value '{text}' for $top query option found.")
    return int(text)


def representation(
    table: Table, row_id: str, row: Mapping[str, Any], etag: str, columns: list[str], annotations: bool
) -> dict[str, Any]:
    """A row as the Web API answers it: the selected properties, their annotations when asked for, the key."""
    payload: dict[str, Any] = {"@odata.etag": etag}
    payload.update({column: copy.deepcopy(row.get(column)) for column in columns})
    if annotations:  # only with Prefer: odata.include-annotations, as Dataverse does
        payload.update({key: value for key, value in row.items() if "@" in key and key.split("@", 1)[0] in columns})
        for column in table.columns:
            read = column.read_name
            known = f"{read}{LOOKUP_TABLE}" in payload
            # a polymorphic lookup's table is stored when it is set; a single target's is implied
            if column.is_lookup and read in columns and row.get(read) and not known and len(column.targets) == 1:
                payload[f"{read}{LOOKUP_TABLE}"] = column.targets[0]
    payload[table.primary_key] = row_id  # Dataverse always returns the primary key
    return payload
