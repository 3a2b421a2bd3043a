"""``EntityDefinitions``: the table metadata the official Python SDK reads before it writes
(docs/dataverse-webapi.md §10): the collection with ``$select`` and a simple ``$filter``, one table by
``LogicalName='x'`` or MetadataId, and its picklist attributes, of which the stand-in's tables have none."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from optout_dev.standin.responses import Response, error, json_response, unsupported
from optout_dev.standin.store import RowStore
from optout_dev.standin.tables import API_PREFIX, GUID

# What the stand-in knows of its tables. Object type codes of the default tables are Dataverse's; MetadataIds
# are stable per logical name but not Dataverse's own (they differ per table).
_KNOWN_ENTITIES: dict[str, dict[str, Any]] = {
    "contact": {
        "SchemaName": "Contact",
        "PrimaryNameAttribute": "fullname",
        "ObjectTypeCode": 2,
        "IsCustomEntity": False,
    },
    "account": {"SchemaName": "Account", "PrimaryNameAttribute": "name", "ObjectTypeCode": 1, "IsCustomEntity": False},
    "lead": {"SchemaName": "Lead", "PrimaryNameAttribute": "fullname", "ObjectTypeCode": 4, "IsCustomEntity": False},
}
_ENTITY_PROPERTIES = (
    "MetadataId",
    "LogicalName",
    "SchemaName",
    "EntitySetName",
    "LogicalCollectionName",
    "PrimaryIdAttribute",
    "PrimaryNameAttribute",
    "ObjectTypeCode",
    "IsCustomEntity",
    "IsActivity",
    "IsPrivate",
    "OwnershipType",
)
_PICKLISTS = (
    "Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
    "Attributes/Microsoft.Dynamics.CRM.MultiSelectPicklistAttributeMetadata",
)
_FILTER_CLAUSE = re.compile(r"\s*(\w+)\s+eq\s+('(?:[^']|'')*'|true|false|null|-?\d+)\s*", re.IGNORECASE)


def _no_property(name: str) -> Response:
    return error(
        400, "0x0", f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.EntityMetadata'."
    )


def entity_metadata(store: RowStore, table: str) -> dict[str, Any]:
    """A table's ``EntityMetadata`` (the properties the stand-in models)."""
    known = _KNOWN_ENTITIES.get(table, {})
    custom = sorted(set(store.columns) - set(_KNOWN_ENTITIES))
    custom_codes = {name: 10000 + index for index, name in enumerate(custom)}
    columns = store.columns[table]
    return {
        "MetadataId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:dataverse-standin:entity:{table}")),
        "LogicalName": table,
        "SchemaName": known.get("SchemaName", table),
        "EntitySetName": store.entity_sets[table],
        "LogicalCollectionName": store.entity_sets[table],
        "PrimaryIdAttribute": f"{table}id",
        "PrimaryNameAttribute": known.get("PrimaryNameAttribute", "name" if "name" in columns else None),
        "ObjectTypeCode": known.get("ObjectTypeCode", custom_codes.get(table)),
        "IsCustomEntity": known.get("IsCustomEntity", True),
        "IsActivity": False,
        "IsPrivate": False,
        "OwnershipType": "UserOwned",
    }


def entity_definitions(
    store: RowStore, base_url: str | None, method: str, key: str | None, rest: str, query: Mapping[str, list[str]]
) -> Response:
    """Answer ``EntityDefinitions[(key)][/rest]`` (``base_url``: the stand-in's, for ``@odata.context``)."""
    if method != "GET":
        return unsupported(f"{method} on EntityDefinitions")
    context = f"{base_url}{API_PREFIX}$metadata#EntityDefinitions"
    tables = sorted(store.columns)
    if key is not None:
        found = _by_key(store, key)
        if isinstance(found, Response):
            return found
        tables = [found]
    if rest:
        if key is None or rest not in _PICKLISTS:
            return unsupported(f"The path segment '{rest}' after 'EntityDefinitions'")
        for option in query:
            if option.startswith("$") and option not in ("$select", "$expand"):
                return unsupported(f"The query option '{option}' on {rest}")
        # The stand-in's columns are Boolean and text: no (multi-select) picklists to list.
        cast = rest.rsplit("/", 1)[-1]
        return json_response(200, {"@odata.context": f"{context}('{tables[0]}')/Attributes/{cast}", "value": []})
    for option in query:
        if option.startswith("$") and option not in ("$select", "$filter"):
            return unsupported(f"The query option '{option}' on EntityDefinitions")
    selected: list[str] = []
    if "$select" in query:
        selected = [name.strip() for name in ",".join(query["$select"]).split(",") if name.strip()]
        for name in selected:
            if name not in _ENTITY_PROPERTIES:
                return _no_property(name)
    items = [entity_metadata(store, table) for table in tables]
    if "$filter" in query:
        if key is not None:
            return unsupported("$filter on a single EntityDefinitions entry")
        conditions = _filter(" and ".join(query["$filter"]))
        if isinstance(conditions, Response):
            return conditions
        items = [item for item in items if all(item.get(name) == value for name, value in conditions)]
    if selected:
        # Dataverse returns the selected properties and always the key, MetadataId.
        items = [{**{name: item[name] for name in selected}, "MetadataId": item["MetadataId"]} for item in items]
        context += f"({','.join(selected)})"
    if key is not None:
        return json_response(200, {"@odata.context": f"{context}/$entity", **items[0]})
    return json_response(200, {"@odata.context": context, "value": items})


def _by_key(store: RowStore, key: str) -> str | Response:
    match = re.fullmatch(r"\s*LogicalName\s*=\s*'((?:[^']|'')*)'\s*", key)
    if match is not None:
        logical_name = match.group(1).replace("''", "'")
        if logical_name in store.columns:
            return logical_name
        return error(404, "0x80040217", f"Could not find entity with logical name '{logical_name}'.")
    if GUID.fullmatch(key.strip()):
        for table in store.columns:
            if entity_metadata(store, table)["MetadataId"] == key.strip().lower():
                return table
        return error(404, "0x80040217", f"Could not find entity with MetadataId '{key.strip()}'.")
    return unsupported(f"The EntityDefinitions key '{key}'")


def _filter(text: str) -> list[tuple[str, Any]] | Response:
    """``Property eq value`` clauses joined by ``and``; anything richer is not modelled (501)."""
    conditions: list[tuple[str, Any]] = []
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _FILTER_CLAUSE.fullmatch(clause)
        if match is None:
            return unsupported(
                f"The $filter '{text}' on EntityDefinitions (only 'Property eq value' clauses joined by 'and' are "
                "modelled)"
            )
        name, literal = match.groups()
        if name not in _ENTITY_PROPERTIES:
            return _no_property(name)
        value: Any
        if literal.startswith("'"):
            value = literal[1:-1].replace("''", "'")
        elif literal.lower() in ("true", "false"):
            value = literal.lower() == "true"
        elif literal.lower() == "null":
            value = None
        else:
            value = int(literal)
        conditions.append((name, value))
    return conditions
