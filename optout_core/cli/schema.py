"""The Dataverse schema as the administrator's commands see it: tables, columns, choice options, lookup targets and
privileges, read through the Web API's metadata (docs/dataverse-admin.md §1, §2) into plain frozen data.

Only :class:`SchemaReader` talks to Dataverse; everything else here is pure parsing of the documented shapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from optout_core.dataverse.errors import DataverseRejected
from optout_core.dataverse.webapi import WebApi
from optout_core.domain.errors import SettingsError
from optout_core.domain.odata import logical_name

# Columns that can name a recipient, and the column kinds the router can read an activity type from.
RECIPIENT_TABLES = ("contact", "lead", "account")
LOOKUP_KINDS = frozenset({"Lookup", "Customer", "Owner"})
CHOICE_KINDS = {"Picklist": "PicklistAttributeMetadata", "Status": "StatusAttributeMetadata"}
_ENGLISH = 1033
# PrivilegeDepth (learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/privilegedepth): Basic 0
# (rows the user owns or that are shared with it), Local 1 (its business unit), Deep 2 (and the units below), Global
# 3 (the whole organisation); RecordFilter 4 depends on a record filter and is no depth in this order. The Web API
# writes the member's name; a number is read as the same member.
DEPTHS = ("Basic", "Local", "Deep", "Global")
GLOBAL = "Global"


@dataclass(frozen=True)
class Option:
    value: int
    label: str
    language: int | None = field(default=None, compare=False)  # LanguageCode of the label read


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
    return localized_label(label)[0]


def localized_label(label: Any) -> tuple[str, int | None]:
    """The text of a ``Label`` and its language code: ``UserLocalizedLabel`` (the caller's language), else English,
    else the first of ``LocalizedLabels``. An organisation without a language pack has labels in its base language
    only, which need not be English (learn.microsoft.com/dotnet/api/microsoft.xrm.sdk.metadata.query.
    labelqueryexpression, Remarks), so no language is required."""
    if not isinstance(label, Mapping):
        return "", None
    user = label.get("UserLocalizedLabel")
    if isinstance(user, Mapping) and user.get("Label"):
        return str(user["Label"]), _language(user)
    localized = [item for item in label.get("LocalizedLabels") or () if isinstance(item, Mapping)]
    for item in sorted(localized, key=lambda item: item.get("LanguageCode") != _ENGLISH):
        if item.get("Label"):
            return str(item["Label"]), _language(item)
    return "", None


def _language(item: Mapping[str, Any]) -> int | None:
    code = item.get("LanguageCode")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def entity_path(name: str) -> str:
    """``EntityDefinitions(LogicalName='name')`` for a well-formed logical name; anything else is refused before it
    reaches a URL."""
    if logical_name(name) is None:
        raise SettingsError(
            f"{name!r} is not a table's logical name (lower-case letters, digits and underscores, e.g. "
            "cdi_emailcampaignlog): `discover` lists them"
        )
    return f"EntityDefinitions(LogicalName='{name}')"


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
                Option(int(option["Value"]), *localized_label(option.get("Label")))
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
    """Reads metadata through a :class:`~optout_core.dataverse.webapi.WebApi` (its retries, throttling, errors)."""

    def __init__(self, client: WebApi) -> None:
        self._client = client

    def custom_tables(self) -> list[TableSummary]:
        answer = self._client.get(
            "EntityDefinitions?$select=LogicalName,EntitySetName,DisplayName&$filter=IsCustomEntity eq true"
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
            f"{entity_path(name)}/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
            "?$select=LogicalName&$expand=OptionSet($select=Options),GlobalOptionSet($select=Options)",
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
        path = entity_path(name)
        try:
            answer = self._client.get(
                f"{path}?$select=LogicalName,EntitySetName,IsCustomEntity,DisplayName"
                "&$expand=Attributes($select=LogicalName,AttributeType,AttributeTypeName,IsValidForUpdate,IsValidForRead)",
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
        self._fill_details(path, columns)
        return Table(
            name=str(entity.get("LogicalName") or name),
            entity_set=str(entity.get("EntitySetName") or ""),
            display=label_text(entity.get("DisplayName")),
            custom=entity.get("IsCustomEntity") is True,
            columns=columns,
            privileges=self.table_privileges(name),
        )

    def _fill_details(self, path: str, columns: dict[str, Column]) -> None:
        """Choice columns' options and lookups' target tables: one read per choice kind, one for the lookups."""
        for cast in sorted({CHOICE_KINDS[c.kind] for c in columns.values() if c.kind in CHOICE_KINDS}):
            for item in _values(
                self._client.get(
                    f"{path}/Attributes/Microsoft.Dynamics.CRM.{cast}?$select=LogicalName"
                    "&$expand=OptionSet($select=Options),GlobalOptionSet($select=Options)"
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

    def table_privileges(self, name: str) -> dict[str, tuple[str, str]]:
        """PrivilegeType -> (PrivilegeId, Name) of a table, read from its metadata rather than guessed."""
        answer = self._client.get(f"{entity_path(name)}?$select=Privileges", missing_ok=True)
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

    def privilege_depths(self, user_id: str, names: Sequence[str]) -> dict[str, str]:
        """The deepest depth at which a user holds each of ``names`` (absent: not held), counting the roles of its
        teams at their real depth. RetrieveUserPrivileges would report a team's privileges at Basic whatever the
        team's role grants (its reference page, Remarks), so this asks RetrieveUserSetOfPrivilegesByNames
        (learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/retrieveusersetofprivilegesbynames:
        bound to systemuser, ``PrivilegeNames`` a string collection, passed as a parameter alias as "Use Web API
        functions" recommends), whose ``RolePrivileges`` hold one ``RolePrivilege`` per grant."""
        if not names:
            return {}
        alias = quote(json.dumps(sorted(set(names)), separators=(",", ":")), safe="")
        answer = (
            self._client.get(
                f"systemusers({user_id})/Microsoft.Dynamics.CRM.RetrieveUserSetOfPrivilegesByNames(PrivilegeNames=@p)"
                f"?@p={alias}"
            )
            or {}
        )
        return deepest(answer.get("RolePrivileges") or ())


def deepest(grants: Iterable[Any]) -> dict[str, str]:
    """Privilege name -> the deepest ``Depth`` among ``RolePrivilege`` grants (one per role that grants it)."""
    held: dict[str, str] = {}
    for grant in grants:
        if not isinstance(grant, Mapping) or not grant.get("PrivilegeName"):
            continue
        depth = depth_name(grant.get("Depth"))
        name = str(grant["PrivilegeName"])
        if depth is not None and (name not in held or DEPTHS.index(depth) > DEPTHS.index(held[name])):
            held[name] = depth
    return held


def depth_name(value: Any) -> str | None:
    """A ``PrivilegeDepth`` as its member name, from the name or the number; None for RecordFilter or unknown."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(DEPTHS):
        return DEPTHS[value]
    return str(value) if value in DEPTHS else None


def _fill(columns: dict[str, Column], item: Mapping[str, Any], **changes: Any) -> None:
    name = item.get("LogicalName")
    if isinstance(name, str) and name in columns:
        columns[name] = replace(columns[name], **changes)


@dataclass(frozen=True)
class Shortfall:
    """A privilege held too shallow, or not at all (``held`` None)."""

    table: str
    kind: str  # PrivilegeType: Read, Write, Create, Append, AppendTo
    name: str  # prvReadContact
    held: str | None
    needed: str

    def describe(self) -> str:
        held = f"holds it at {self.held} depth" if self.held else "does not hold it"
        return f"{self.kind} on {self.table} ({self.name}): {held}, needs {self.needed}"


def privilege_name(table: Table, kind: str) -> str:
    """The name of a table's privilege, from its metadata; the documented prv<Type><SchemaName> pattern with the
    logical name when the metadata lacks it (a name Dataverse then does not know is reported as not held)."""
    return table.privileges.get(kind, ("", f"prv{kind}{table.name}"))[1] or f"prv{kind}{table.name}"


def needed_names(needs: Iterable[tuple[Table | None, str, str]]) -> list[str]:
    return sorted({privilege_name(table, kind) for table, kind, _ in needs if table is not None})


def shortfalls(held: Mapping[str, str], needs: Iterable[tuple[Table | None, str, str]]) -> list[Shortfall]:
    """The ``(table, PrivilegeType, depth needed)`` of ``needs`` that ``held`` (name -> deepest depth) does not
    cover; a table that could not be read is reported by its own finding, not here."""
    found = []
    for table, kind, needed in needs:
        if table is None:
            continue
        name = privilege_name(table, kind)
        depth = held.get(name)
        if depth is None or DEPTHS.index(depth) < DEPTHS.index(needed):
            found.append(Shortfall(table.name, kind, name, depth, needed))
    return found
