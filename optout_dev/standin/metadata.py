"""``EntityDefinitions`` (docs/dataverse-admin.md §1, docs/dataverse-webapi.md §10): the collection with
``$select`` (``DisplayName`` and ``Privileges`` included) and a simple ``$filter``; one table by
``LogicalName='x'`` or MetadataId, with ``$expand=Attributes($select=...)``; and its attributes and their casts
(:mod:`.attributes`). Every label is in the organisation's base language (:func:`localise`), and ``LabelLanguages``
keeps only the labels of the languages it names."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from optout_dev.standin.attributes import attributes, expanded_attributes, split_expand
from optout_dev.standin.privileges import privilege_metadata
from optout_dev.standin.responses import Response, error, json_response, unsupported
from optout_dev.standin.schema import label, stable_id
from optout_dev.standin.store import RowStore
from optout_dev.standin.tables import API_PREFIX, GUID

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
    "DisplayName",
    "Privileges",
)
_NOT_FILTERABLE = frozenset({"DisplayName", "Privileges"})  # a Label and a collection (§1.5)
_FILTER_CLAUSE = re.compile(r"\s*(\w+)\s+eq\s+('(?:[^']|'')*'|true|false|null|-?\d+)\s*", re.IGNORECASE)


def _no_property(name: str) -> Response:
    return error(
        400, "0x0", f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.EntityMetadata'."
    )


def entity_metadata(store: RowStore, table: str) -> dict[str, Any]:
    """A table's ``EntityMetadata`` (the properties the stand-in models). MetadataIds are stable per logical name
    but not Dataverse's own; custom tables without a known object type code get 10000 and up."""
    typed = store.tables[table]
    unnumbered = sorted(name for name, other in store.tables.items() if other.object_type_code is None)
    code = typed.object_type_code
    if code is None:
        code = 10000 + unnumbered.index(table)
    return {
        "MetadataId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:dataverse-standin:entity:{table}")),
        "LogicalName": table,
        "SchemaName": typed.schema_name,
        "EntitySetName": typed.entity_set,
        "LogicalCollectionName": typed.entity_set,
        "PrimaryIdAttribute": typed.primary_key,
        "PrimaryNameAttribute": typed.primary_name,
        "ObjectTypeCode": code,
        "IsCustomEntity": typed.custom,
        "IsActivity": False,
        "IsPrivate": False,
        "OwnershipType": typed.ownership,
        "DisplayName": label(typed.label, stable_id("label", table)),
        "Privileges": privilege_metadata(typed),
    }


def entity_definitions(
    store: RowStore, base_url: str | None, method: str, key: str | None, rest: str, query: Mapping[str, list[str]]
) -> Response:
    """Answer ``EntityDefinitions[(key)][/rest]`` (``base_url``: the stand-in's, for ``@odata.context``)."""
    if method != "GET":
        return unsupported(f"{method} on EntityDefinitions")
    context = f"{base_url}{API_PREFIX}$metadata#EntityDefinitions"
    tables = sorted(store.tables)
    if key is not None:
        found = _by_key(store, key)
        if isinstance(found, Response):
            return found
        tables = [found]
    if rest:
        if key is None or not rest.startswith("Attributes"):
            return unsupported(f"The path segment '{rest}' after 'EntityDefinitions'")
        return attributes(f"{context}('{tables[0]}')", store.tables[tables[0]], rest, query)
    allowed = ("$select", "$expand") if key is not None else ("$select", "$filter")
    for option in query:
        if option.startswith("$") and option not in allowed:
            return unsupported(f"The query option '{option}' on EntityDefinitions")
    selected: list[str] = []
    if "$select" in query:
        selected = [name.strip() for name in ",".join(query["$select"]).split(",") if name.strip()]
        for name in selected:
            if name not in _ENTITY_PROPERTIES:
                return _no_property(name)
    items = [entity_metadata(store, table) for table in tables]
    if "$filter" in query:
        conditions = _filter(" and ".join(query["$filter"]))
        if isinstance(conditions, Response):
            return conditions
        items = [item for item in items if all(item.get(name) == value for name, value in conditions)]
    if selected:
        # Dataverse returns the selected properties and always the key, MetadataId.
        items = [{**{name: item[name] for name in selected}, "MetadataId": item["MetadataId"]} for item in items]
    expanded = ""
    for name, nested in split_expand(",".join(query.get("$expand", []))):
        if name != "Attributes":
            return _no_property(name)
        found_attributes = expanded_attributes(store.tables[tables[0]], nested)
        if isinstance(found_attributes, Response):
            return found_attributes
        items[0]["Attributes"] = found_attributes
        expanded = f"Attributes({nested.split('=', 1)[-1].replace(';', ',')})" if nested else "Attributes()"
    if selected or expanded:
        context += f"({','.join([*selected, expanded] if expanded else selected)})"
    if key is not None:
        return json_response(200, {"@odata.context": f"{context}/$entity", **items[0]})
    return json_response(200, {"@odata.context": context, "value": items})


def _by_key(store: RowStore, key: str) -> str | Response:
    match = re.fullmatch(r"\s*LogicalName\s*=\s*'((?:[^']|'')*)'\s*", key)
    if match is not None:
        logical_name = match.group(1).replace("''", "'")
        if logical_name in store.tables:
            return logical_name
        # Exact code and text unconfirmed (docs/dataverse-admin.md §1.2): clients must branch on the 404 only.
        return error(
            404,
            "0x80041102",
            f"The entity with a name = '{logical_name}' with namemapping = 'Logical' was not found in the "
            "MetadataCache.",
        )
    if GUID.fullmatch(key.strip()):
        for table in store.tables:
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
        if name in _NOT_FILTERABLE:
            return unsupported(f"A $filter on '{name}' (not a primitive property)")
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


def localise(answer: Response, base_language: int, query: Mapping[str, list[str]]) -> Response:
    """An ``EntityDefinitions`` answer as an organisation with ``base_language`` and no language pack gives it: its
    labels exist in the base language only ("If no additional language packs are installed, there will only be
    labels for the organization base language": learn.microsoft.com/dotnet/api/microsoft.xrm.sdk.metadata.query.
    labelqueryexpression, Remarks), the user's label (``UserLocalizedLabel``) in it too. ``LabelLanguages=1033,...``
    ("Query table definitions using the Web API", Limit languages returned) keeps only ``LocalizedLabels`` in those
    languages; whether it also empties ``UserLocalizedLabel`` is not documented, so that one is kept."""
    if answer.status != 200 or not answer.body:
        return answer
    wanted: set[int] | None = None
    if "LabelLanguages" in query:
        codes = [c.strip() for c in ",".join(query["LabelLanguages"]).split(",") if c.strip()]
        if not all(c.isdigit() for c in codes):
            return error(400, "0x0", f"LabelLanguages must be language codes (LCIDs): {','.join(codes)}")
        wanted = {int(c) for c in codes}
    if base_language == 1033 and wanted is None:
        return answer  # as built: English labels, nothing filtered
    document = _relabel(json.loads(answer.body), base_language, wanted)
    return Response(answer.status, json.dumps(document, separators=(",", ":")).encode(), answer.headers)


def _relabel(node: Any, language: int, wanted: set[int] | None) -> Any:
    if isinstance(node, list):
        return [_relabel(item, language, wanted) for item in node]
    if not isinstance(node, dict):
        return node
    if "LocalizedLabels" in node and "UserLocalizedLabel" in node:
        localized = [{**item, "LanguageCode": language} for item in node["LocalizedLabels"]]
        user = node["UserLocalizedLabel"]
        return {
            "LocalizedLabels": [i for i in localized if wanted is None or i["LanguageCode"] in wanted],
            "UserLocalizedLabel": {**user, "LanguageCode": language} if isinstance(user, dict) else user,
        }
    return {key: _relabel(value, language, wanted) for key, value in node.items()}
