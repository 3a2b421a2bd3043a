"""Reading rows (docs/dataverse-webapi.md §8, docs/dataverse-admin.md): ``$select`` of readable properties (lookups
as ``_x_value``), a ``$filter`` of ``property eq|ne literal`` clauses joined by ``and``, ``$top``, and the JSON a
row is answered with. Anything richer answers 501."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optout_dev.standin.responses import Response, error, unsupported
from optout_dev.standin.schema import LOOKUP_TYPES, Column, Table
from optout_dev.standin.tables import GUID

LOOKUP_TABLE = "@Microsoft.Dynamics.CRM.lookuplogicalname"
_LITERAL = (
    r"'(?:[^']|'')*'|true|false|null|-?\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_CLAUSE = re.compile(rf"\s*([A-Za-z_]\w*)\s+(eq|ne)\s+({_LITERAL})\s*")
# Valid OData the stand-in does not model (other operators, functions, grouping): 501, not a guess.
_RICHER = re.compile(r"\b(?:or|not|gt|ge|lt|le|has|in|any|all)\b|[()/]", re.IGNORECASE)
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
    equal: bool  # eq (True) or ne
    value: Any

    def holds(self, row: Mapping[str, Any]) -> bool:
        stored = row.get(self.column.read_name)
        if isinstance(stored, str) and isinstance(self.value, str):  # Dataverse compares text case-insensitively
            same = stored.casefold() == self.value.casefold()
        else:
            same = stored == self.value
        if not self.equal and stored is None and self.value is not None:
            return False  # SQL's <>: a null column matches no 'ne' of a value
        return same == self.equal


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


def parse_filter(table: Table, text: str) -> list[Condition] | Response:
    """``property eq|ne literal`` clauses joined by ``and``; a literal of the wrong kind is a 400 as in OData."""
    conditions: list[Condition] = []
    for clause in re.split(r"\s+and\s+", text.strip()):
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            if _RICHER.search(re.sub(r"'(?:[^']|'')*'", "''", clause)) is None:
                position = max(text.find(clause.strip()), 0)
                return error(400, QUERY_SYNTAX, f"Syntax error at position {position} in '{text}'.")
            return unsupported(
                f"The $filter '{text}' (only 'property eq|ne literal' clauses joined by 'and' are modelled)"
            )
        name, operator, literal = match.groups()
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
                f"'{_edm(column)}' and '{found}' for operator kind '{'Equal' if operator == 'eq' else 'NotEqual'}'.",
            )
        conditions.append(Condition(column, operator == "eq", value))
    return conditions


def _literal(literal: str) -> Any:
    if literal.startswith("'"):
        return literal[1:-1].replace("''", "'")
    if literal in ("true", "false"):
        return literal == "true"
    if literal == "null":
        return None
    if GUID.fullmatch(literal):
        return literal.lower()
    return int(literal)


def _fits(column: Column, value: Any, literal: str) -> bool:
    if value is None:
        return True
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
