"""``AttributeMetadata`` of a table's columns (docs/dataverse-admin.md §1): the common properties every attribute
has, each with its ``@odata.type``; the cast types with their options (``OptionSet``/``GlobalOptionSet``) and
lookup ``Targets``; and the ``Attributes`` paths under ``EntityDefinitions(...)``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from optout_dev.standin.responses import Response, error, json_response, unsupported
from optout_dev.standin.schema import CHOICE_TYPES, TYPE_NAMES, Column, Option, Table, label, stable_id

NAMESPACE = "Microsoft.Dynamics.CRM."
CASTS: Mapping[str, str] = {
    "Boolean": "BooleanAttributeMetadata",
    "Customer": "LookupAttributeMetadata",  # Customer and Owner cast to Lookup (unconfirmed, §1.4)
    "DateTime": "DateTimeAttributeMetadata",
    "EntityName": "EntityNameAttributeMetadata",
    "Integer": "IntegerAttributeMetadata",
    "Lookup": "LookupAttributeMetadata",
    "Memo": "MemoAttributeMetadata",
    "MultiSelectPicklist": "MultiSelectPicklistAttributeMetadata",
    "Owner": "LookupAttributeMetadata",
    "Picklist": "PicklistAttributeMetadata",
    "State": "StateAttributeMetadata",
    "Status": "StatusAttributeMetadata",
    "String": "StringAttributeMetadata",
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata",
}
COMMON = (
    "MetadataId",
    "LogicalName",
    "SchemaName",
    "EntityLogicalName",
    "AttributeType",
    "AttributeTypeName",
    "AttributeOf",
    "DisplayName",
    "IsCustomAttribute",
    "IsPrimaryId",
    "IsPrimaryName",
    "IsValidForCreate",
    "IsValidForRead",
    "IsValidForUpdate",
    "RequiredLevel",
)
_OPTION_SETS = ("OptionSet", "GlobalOptionSet")
_STATE_TYPES = {"Picklist": "Picklist", "MultiSelectPicklist": "Picklist", "State": "State", "Status": "Status"}
_ENUM_CASTS = frozenset(CASTS[kind] for kind in CHOICE_TYPES)
_SYSTEM = frozenset({"createdon", "modifiedon", "statecode", "statuscode", "ownerid"})
_ATTRIBUTE_KEY = re.compile(r"Attributes\((?:\s*LogicalName\s*=\s*'((?:[^']|'')*)'\s*|\s*([0-9a-fA-F-]{36})\s*)\)")


def _type(column: Column) -> str:
    return f"#{NAMESPACE}{CASTS[column.type]}"


def common(table: Table, column: Column) -> dict[str, Any]:
    """The common ``AttributeMetadata`` properties of a column, with its ``@odata.type``."""
    metadata_id = stable_id("attribute", table.name, column.name)
    return {
        "@odata.type": _type(column),
        "MetadataId": metadata_id,
        "LogicalName": column.name,
        "SchemaName": column.name,
        "EntityLogicalName": table.name,
        "AttributeType": column.attribute_type,
        "AttributeTypeName": {"Value": TYPE_NAMES[column.type]},
        "AttributeOf": None,
        "DisplayName": label(column.label, stable_id("label", table.name, column.name)),
        "IsCustomAttribute": table.custom and column.name not in _SYSTEM and column.name != table.primary_key,
        "IsPrimaryId": column.name == table.primary_key,
        "IsPrimaryName": column.name == table.primary_name,
        "IsValidForCreate": column.creatable and column.flag_of is None,
        "IsValidForRead": column.readable,
        "IsValidForUpdate": column.updatable and column.flag_of is None,
        "RequiredLevel": {
            "Value": column.required,
            "CanBeChanged": column.required != "SystemRequired",
            "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
        },
    }


def _option(table: Table, column: Column, option: Option) -> dict[str, Any]:
    item: dict[str, Any] = {
        "Value": option.value,
        "Label": label(option.label, stable_id("option", table.name, column.name, str(option.value))),
        "Description": label("", ""),
        "Color": None,
        "IsManaged": True,
        "MetadataId": None,
        "HasChanged": None,
    }
    if column.type == "State":
        item.update({"DefaultStatus": option.default_status, "InvariantName": option.label.upper()})
    if column.type == "Status":
        item["State"] = option.state
    return item


def option_set(table: Table, column: Column) -> dict[str, Any]:
    name = column.global_option_set or f"{table.name}_{column.name}"
    found: dict[str, Any] = {"MetadataId": stable_id("optionset", name), "Name": name}
    found["IsGlobal"] = column.global_option_set is not None
    if column.type == "Boolean":
        false, true = (column.option(0), column.option(1))
        assert false is not None and true is not None, f"{column.name}: a Boolean needs options 0 and 1"
        found.update(
            OptionSetType="Boolean", TrueOption=_option(table, column, true), FalseOption=_option(table, column, false)
        )
    else:
        found.update(
            OptionSetType=_STATE_TYPES[column.type], Options=[_option(table, column, o) for o in column.options]
        )
    return found


def _no_property(cast: str, name: str) -> Response:
    return error(400, "0x0", f"Could not find a property named '{name}' on type '{NAMESPACE}{cast}'.")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def split_expand(text: str) -> list[tuple[str, str]]:
    """``A($select=x),B`` -> [("A", "$select=x"), ("B", "")]: top-level items with their nested options."""
    items: list[tuple[str, str]] = []
    depth, start = 0, 0
    for index, char in enumerate(text + ","):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            item = text[start:index].strip()
            start = index + 1
            if item:
                name, _, nested = item.partition("(")
                items.append((name.strip(), nested.removesuffix(")")))
    return items


def attribute_item(
    table: Table, column: Column, cast: str | None, select: list[str], expand: list[str]
) -> dict[str, Any]:
    """One attribute as a cast (or the plain ``Attributes`` collection) answers it."""
    item = common(table, column)
    if cast is not None and column.is_lookup:
        item["Targets"] = list(column.targets)
    if select:
        item = {key: value for key, value in item.items() if key in select or key in ("@odata.type", "MetadataId")}
    for name in expand:  # the non-applicable one of OptionSet/GlobalOptionSet is null (expand both, §1.3)
        is_global = column.global_option_set is not None
        item[name] = option_set(table, column) if (name == "GlobalOptionSet") == is_global else None
    return item


def attributes(base: str, table: Table, rest: str, query: Mapping[str, list[str]]) -> Response:
    """``EntityDefinitions(...)/Attributes[(key)][/Microsoft.Dynamics.CRM.<Cast>]`` (``base``: the context URL up
    to the table)."""
    path, _, cast_segment = rest.partition("/")
    cast: str | None = None
    if cast_segment:
        if not cast_segment.startswith(NAMESPACE) or "/" in cast_segment:
            return unsupported(f"The path segment '{rest}' after 'EntityDefinitions'")
        cast = cast_segment.removeprefix(NAMESPACE)
        if cast not in CASTS.values():
            return error(404, "0x8006088a", f"Resource not found for the segment '{cast_segment}'.")
    for option in query:
        if option.startswith("$") and option not in ("$select", "$expand"):
            return unsupported(f"The query option '{option}' on {rest}")
    columns = list(table.columns)
    single = path != "Attributes"
    if single:
        match = _ATTRIBUTE_KEY.fullmatch(path)
        if match is None:
            return unsupported(f"The path segment '{path}' after 'EntityDefinitions'")
        wanted = (match.group(1) or "").replace("''", "'")
        found = [
            column
            for column in columns
            if column.name == wanted
            or (match.group(2) and stable_id("attribute", table.name, column.name) == match.group(2).lower())
        ]
        if not found:
            key = wanted or match.group(2)
            return error(404, "0x80040217", f"Could not find attribute '{key}' on entity '{table.name}'.")
        columns = found
        if cast is not None and CASTS[columns[0].type] != cast:  # the attribute is not of that type
            return error(404, "0x8006088a", f"Resource not found for the segment '{cast_segment}'.")
    elif cast is not None:
        columns = [column for column in columns if CASTS[column.type] == cast]
    type_name = cast or "AttributeMetadata"
    select = _names(",".join(query.get("$select", [])))
    allowed = set(COMMON) | ({"Targets"} if cast == "LookupAttributeMetadata" else set())
    for name in select:
        if name not in allowed:
            return _no_property(type_name, name)
    expand: list[str] = []
    for name, _nested in split_expand(",".join(query.get("$expand", []))):
        if name not in _OPTION_SETS or cast not in _ENUM_CASTS:
            return _no_property(type_name, name)
        expand.append(name)
    items = [attribute_item(table, column, cast, select, expand) for column in columns]
    context = f"{base}/Attributes" + (f"/{NAMESPACE}{cast}" if cast else "")
    if select:
        context += f"({','.join(select)})"
    if single:
        return json_response(200, {"@odata.context": f"{context}/$entity", **items[0]})
    return json_response(200, {"@odata.context": context, "value": items})


def expanded_attributes(table: Table, nested: str) -> list[dict[str, Any]] | Response:
    """``$expand=Attributes($select=...)`` on one table: the common properties only (§1.1)."""
    select: list[str] = []
    for option in (part.strip() for part in nested.split(";") if part.strip()):
        name, _, value = option.partition("=")
        if name.strip() != "$select":
            return unsupported(f"The option '{option}' inside $expand=Attributes(...)")
        select = _names(value)
    for name in select:
        if name not in COMMON:
            return _no_property("AttributeMetadata", name)
    return [attribute_item(table, column, None, select, []) for column in table.columns]
