"""The Dataverse schema as the administrator's commands see it: tables, columns, choice options, lookup targets and
privileges, read through the Web API's metadata (docs/dataverse-admin.md §1, §2) into plain frozen data.

Only :class:`SchemaReader` talks to Dataverse; everything else here is pure parsing of the documented shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from optout_core.dataverse.client import DataverseClient
from optout_core.dataverse.errors import DataverseRejected

# Columns that can name a recipient, and the column kinds the router can read an activity type from.
RECIPIENT_TABLES = ("contact", "lead", "account")
LOOKUP_KINDS = frozenset({"Lookup", "Customer", "Owner"})
CHOICE_KINDS = {"Picklist": "PicklistAttributeMetadata", "Status": "StatusAttributeMetadata"}
_LABEL_LANGUAGE = 1033


@dataclass(frozen=True)
class Option:
    value: int
    label: str


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # AttributeTypeName without "Type": "Picklist", "Lookup", "Customer", "String", "Boolean", ...
    updatable: bool = True
    readable: bool = True
    options: tuple[Option, ...] = ()  # choice columns
    targets: tuple[str, ...] = ()  # lookup columns


@dataclass(frozen=True)
class Table:
    name: str
    entity_set: str
    display: str
    custom: bool
    columns: Mapping[str, Column] = field(default_factory=dict)
    privileges: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # "Read" -> (PrivilegeId, Name)


@dataclass(frozen=True)
class TableSummary:
    name: str
    entity_set: str
    display: str


def label_text(label: Any) -> str:
    """The text of a ``Label``: the caller's language, else English, else the first one there is."""
    if not isinstance(label, Mapping):
        return ""
    user = label.get("UserLocalizedLabel")
    if isinstance(user, Mapping) and user.get("Label"):
        return str(user["Label"])
    localized = [item for item in label.get("LocalizedLabels") or () if isinstance(item, Mapping)]
    for item in sorted(localized, key=lambda item: item.get("LanguageCode") != _LABEL_LANGUAGE):
        if item.get("Label"):
            return str(item["Label"])
    return ""


def kind_of(attribute: Mapping[str, Any]) -> str:
    """A column's kind from ``AttributeTypeName`` (multi-select, file and image columns say ``Virtual`` in
    ``AttributeType``, so the type name is the one to trust), else ``AttributeType``."""
    type_name = attribute.get("AttributeTypeName")
    if isinstance(type_name, Mapping) and isinstance(type_name.get("Value"), str):
        return str(type_name["Value"]).removesuffix("Type")
    return str(attribute.get("AttributeType") or "")


def options_of(attribute: Mapping[str, Any]) -> tuple[Option, ...]:
    """The options of a choice column's metadata: its local option set, else its global one."""
    for key in ("OptionSet", "GlobalOptionSet"):
        option_set = attribute.get(key)
        if isinstance(option_set, Mapping) and option_set.get("Options"):
            return tuple(
                Option(int(option["Value"]), label_text(option.get("Label")))
                for option in option_set["Options"]
                if isinstance(option, Mapping) and isinstance(option.get("Value"), int)
            )
    return ()


def _values(answer: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """A collection answer's items; a key-addressed answer may come as the object itself or wrapped in
    ``value`` (Microsoft's own examples show both), so both are accepted."""
    if answer is None:
        return []
    items = answer.get("value", [answer])
    return [item for item in items if isinstance(item, Mapping)]


class SchemaReader:
    """Reads metadata through a :class:`DataverseClient` (its retries, throttling and error translation)."""

    def __init__(self, client: DataverseClient) -> None:
        self._client = client

    def custom_tables(self) -> list[TableSummary]:
        answer = self._client.get(
            "EntityDefinitions?$select=LogicalName,EntitySetName,DisplayName&$filter=IsCustomEntity eq true"
            f"&LabelLanguages={_LABEL_LANGUAGE}"
        )
        return [
            TableSummary(
                str(item["LogicalName"]), str(item.get("EntitySetName") or ""), label_text(item.get("DisplayName"))
            )
            for item in _values(answer)
            if item.get("LogicalName")
        ]

    def choices(self, name: str) -> list[Column]:
        """The choice columns of a table with their options (one request: how ``discover`` ranks tables)."""
        answer = self._client.get(
            f"EntityDefinitions(LogicalName='{name}')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
            f"?$select=LogicalName&$expand=OptionSet($select=Options),GlobalOptionSet($select=Options)"
            f"&LabelLanguages={_LABEL_LANGUAGE}",
            missing_ok=True,
        )
        return [
            Column(str(item["LogicalName"]), "Picklist", options=options_of(item))
            for item in _values(answer)
            if item.get("LogicalName")
        ]

    def table(self, name: str) -> Table | None:
        """A table with its columns (choice options and lookup targets filled in) and privileges; None when the
        table does not exist (a 404, or a 400 that names the metadata cache)."""
        path = f"EntityDefinitions(LogicalName='{name}')"
        try:
            answer = self._client.get(
                f"{path}?$select=LogicalName,EntitySetName,IsCustomEntity,DisplayName"
                "&$expand=Attributes($select=LogicalName,AttributeType,AttributeTypeName,IsValidForUpdate,IsValidForRead)"
                f"&LabelLanguages={_LABEL_LANGUAGE}",
                missing_ok=True,
            )
        except DataverseRejected as exc:
            if "metadatacache" in str(exc).lower():
                return None
            raise
        entities = _values(answer)
        if not entities:
            return None
        entity = entities[0]
        columns = {
            str(item["LogicalName"]): Column(
                str(item["LogicalName"]),
                kind_of(item),
                updatable=item.get("IsValidForUpdate") is not False,
                readable=item.get("IsValidForRead") is not False,
            )
            for item in entity.get("Attributes") or ()
            if isinstance(item, Mapping) and item.get("LogicalName")
        }
        for cast in sorted({CHOICE_KINDS[c.kind] for c in columns.values() if c.kind in CHOICE_KINDS}):
            for item in _values(
                self._client.get(
                    f"{path}/Attributes/Microsoft.Dynamics.CRM.{cast}?$select=LogicalName"
                    f"&$expand=OptionSet($select=Options),GlobalOptionSet($select=Options)&LabelLanguages={_LABEL_LANGUAGE}"
                )
            ):
                _fill(columns, item, options=options_of(item))
        if any(c.kind in LOOKUP_KINDS for c in columns.values()):
            for item in _values(
                self._client.get(
                    f"{path}/Attributes/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=LogicalName,Targets"
                )
            ):
                _fill(columns, item, targets=tuple(str(t) for t in item.get("Targets") or ()))
        return Table(
            name=str(entity.get("LogicalName") or name),
            entity_set=str(entity.get("EntitySetName") or ""),
            display=label_text(entity.get("DisplayName")),
            custom=entity.get("IsCustomEntity") is True,
            columns=columns,
            privileges=self.table_privileges(name),
        )

    def table_privileges(self, name: str) -> dict[str, tuple[str, str]]:
        """PrivilegeType -> (PrivilegeId, Name) of a table, read from its metadata rather than guessed."""
        answer = self._client.get(f"EntityDefinitions(LogicalName='{name}')?$select=Privileges", missing_ok=True)
        held: dict[str, tuple[str, str]] = {}
        for entity in _values(answer):
            for privilege in entity.get("Privileges") or ():
                if isinstance(privilege, Mapping) and privilege.get("PrivilegeType"):
                    held[str(privilege["PrivilegeType"])] = (
                        str(privilege.get("PrivilegeId", "")).lower(),
                        str(privilege.get("Name", "")),
                    )
        return held

    def privileges_only(self, name: str) -> Table:
        """A table known by its privileges alone: what :func:`missing_privileges` needs, in one request."""
        return Table(name, "", "", False, privileges=self.table_privileges(name))

    def privileges_of(self, user_id: str) -> tuple[frozenset[str], frozenset[str]]:
        """The ids and names of the privileges a user holds through its roles and teams."""
        answer = self._client.get(f"systemusers({user_id})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges") or {}
        held = [p for p in answer.get("RolePrivileges") or () if isinstance(p, Mapping)]
        return (
            frozenset(str(p.get("PrivilegeId", "")).lower() for p in held),
            frozenset(str(p["PrivilegeName"]) for p in held if p.get("PrivilegeName")),
        )


def _fill(columns: dict[str, Column], item: Mapping[str, Any], **changes: Any) -> None:
    name = item.get("LogicalName")
    if isinstance(name, str) and name in columns:
        columns[name] = replace(columns[name], **changes)


def missing_privileges(
    held: tuple[frozenset[str], frozenset[str]], needs: Iterable[tuple[Table | None, str]]
) -> list[str]:
    """The privileges of ``needs`` ((table, PrivilegeType) pairs) not in ``held``, by name; matched by id, or by
    name where an answer leaves the id out."""
    ids, names = held
    missing = []
    for table, kind in needs:
        if table is None:
            continue
        privilege_id, name = table.privileges.get(kind, ("", f"prv{kind}{table.name}"))
        if privilege_id not in ids and name not in names:
            missing.append(name)
    return missing
