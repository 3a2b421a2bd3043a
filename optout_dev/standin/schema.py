"""The typed schema the stand-in serves (docs/dataverse-admin.md §1): tables with their columns, each column's
type, validity for read/create/update, choice options and lookup targets, and how a plain column set (the
original ``tables=`` argument) becomes a typed table."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# AttributeType -> AttributeTypeName.Value (docs/dataverse-admin.md §1.6). MultiSelectPicklist reports AttributeType
# "Virtual" (the common observation), so it is keyed by its own name here and mapped in attribute_type().
TYPE_NAMES: Mapping[str, str] = {
    "Boolean": "BooleanType",
    "Customer": "CustomerType",
    "DateTime": "DateTimeType",
    "Integer": "IntegerType",
    "Lookup": "LookupType",
    "Memo": "MemoType",
    "Owner": "OwnerType",
    "Picklist": "PicklistType",
    "MultiSelectPicklist": "MultiSelectPicklistType",
    "State": "StateType",
    "Status": "StatusType",
    "String": "StringType",
    "Uniqueidentifier": "UniqueidentifierType",
    "EntityName": "EntityNameType",
}
CHOICE_TYPES = frozenset({"Picklist", "MultiSelectPicklist", "State", "Status", "Boolean"})
LOOKUP_TYPES = frozenset({"Lookup", "Customer", "Owner"})
PRIVILEGE_TYPES = ("Create", "Read", "Write", "Delete", "Append", "AppendTo", "Assign", "Share")
_NAMESPACE = uuid.UUID("6b0f6c1e-3d2a-4e5f-9a8b-7c6d5e4f3a2b")  # stable ids of metadata the stand-in makes up


def stable_id(*parts: str) -> str:
    """A GUID that is the same for the same name at every run (MetadataIds, PrivilegeIds)."""
    return str(uuid.uuid5(_NAMESPACE, ":".join(parts)))


@dataclass(frozen=True)
class Option:
    """One option of a choice column. ``state``: the statecode a Status option belongs to; ``default_status``:
    the statuscode a State option defaults to."""

    value: int
    label: str
    state: int | None = None
    default_status: int | None = None


@dataclass(frozen=True)
class Column:
    """A column as metadata describes it. Lookups (Lookup/Customer/Owner) read as ``_<name>_value`` and are set
    with ``<navigation>@odata.bind``; ``navigation`` maps each navigation property name to the table it binds
    (default: the column's name, to each target)."""

    name: str
    type: str = "String"
    options: tuple[Option, ...] = ()
    targets: tuple[str, ...] = ()
    navigation: Mapping[str, str] = field(default_factory=dict)
    readable: bool = True
    creatable: bool = True
    updatable: bool = True
    required: str = "None"  # RequiredLevel: None, Recommended, ApplicationRequired, SystemRequired
    default: Any = None  # the value a create without it stores
    label: str = ""
    global_option_set: str | None = None  # the name of a global choice this column uses (OptionSet then null)
    flag_of: str | None = None  # a computed Boolean: whether that column holds a value (issaskeyset)

    def __post_init__(self) -> None:
        if self.type not in TYPE_NAMES:
            raise ValueError(f"unknown column type {self.type!r} for {self.name}")
        if self.type in LOOKUP_TYPES and not self.navigation:
            object.__setattr__(self, "navigation", dict.fromkeys((self.name,), ""))

    @property
    def is_lookup(self) -> bool:
        return self.type in LOOKUP_TYPES

    @property
    def read_name(self) -> str:
        """The Web API property a row is read with."""
        return f"_{self.name}_value" if self.is_lookup else self.name

    @property
    def attribute_type(self) -> str:
        return "Virtual" if self.type == "MultiSelectPicklist" else self.type

    def option(self, value: object) -> Option | None:
        return next((option for option in self.options if option.value == value), None)

    def bind_target(self, navigation: str, table: str) -> bool:
        """Whether ``navigation@odata.bind`` may point at a row of ``table``."""
        bound = self.navigation.get(navigation)
        return table in self.targets if not bound else bound == table


@dataclass(frozen=True)
class Table:
    """A table as the stand-in serves it; the primary key column ``<name>id`` is always there."""

    name: str
    entity_set: str
    columns: tuple[Column, ...]
    schema_name: str = ""
    label: str = ""
    primary_name: str | None = None
    object_type_code: int | None = None
    custom: bool = True
    ownership: str = "UserOwned"  # or OrganizationOwned (no Assign/Share privileges)

    def __post_init__(self) -> None:
        if not self.schema_name:
            object.__setattr__(self, "schema_name", self.name)
        pk = f"{self.name}id"
        if pk not in {column.name for column in self.columns}:
            key = Column(pk, "Uniqueidentifier", updatable=False, label=f"{self.label or self.name}")
            object.__setattr__(self, "columns", (key, *self.columns))
        names = [column.name for column in self.columns]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate columns in {self.name}")

    @property
    def primary_key(self) -> str:
        return f"{self.name}id"

    def column(self, name: str) -> Column | None:
        return next((column for column in self.columns if column.name == name), None)

    def by_read_name(self, name: str) -> Column | None:
        """The readable column a ``$select``/``$filter`` property names (``_x_value`` for a lookup)."""
        return next((c for c in self.columns if c.read_name == name and c.readable), None)

    def by_navigation(self, navigation: str) -> Column | None:
        return next((c for c in self.columns if c.is_lookup and navigation in c.navigation), None)

    @property
    def readable(self) -> list[str]:
        return sorted(column.read_name for column in self.columns if column.readable)

    @property
    def privileges(self) -> tuple[str, ...]:
        kinds = PRIVILEGE_TYPES if self.ownership == "UserOwned" else PRIVILEGE_TYPES[:6]
        return tuple(f"prv{kind}{self.schema_name}" for kind in kinds)


# Two-option (Edm.Boolean) columns: the real service rejects "true"/1 for them, so the stand-in does too.
CONSENT_COLUMNS = (
    "donotbulkemail",
    "donotemail",
    "donotbulkpostalmail",
    "donotpostalmail",
    "donotphone",
    "donotfax",
    "donotsendmm",
    "followemail",
)
ACTIVE_STATES = (Option(0, "Active", default_status=1), Option(1, "Inactive", default_status=2))
ACTIVE_STATUSES = (Option(1, "Active", state=0), Option(2, "Inactive", state=1))


def state_columns(
    states: tuple[Option, ...] = ACTIVE_STATES, statuses: tuple[Option, ...] = ACTIVE_STATUSES
) -> tuple[Column, Column]:
    return (
        Column("statecode", "State", states, default=states[0].value, label="Status"),
        Column("statuscode", "Status", statuses, default=states[0].default_status, label="Status Reason"),
    )


def boolean(name: str, label: str = "", true: str = "Yes", false: str = "No", **kwargs: Any) -> Column:
    return Column(name, "Boolean", (Option(0, false), Option(1, true)), label=label or name, **kwargs)


def plain_column(name: str) -> Column:
    """A column given by name only: its type as the name says (the known consent Booleans, statecode,
    statuscode, ``_x_value`` lookups), else String."""
    if name in CONSENT_COLUMNS:
        return boolean(name, true="Do Not Allow", false="Allow")
    if name == "statecode":
        return state_columns()[0]
    if name == "statuscode":
        return state_columns()[1]
    if name.startswith("_") and name.endswith("_value") and len(name) > len("__value"):
        return Column(name[1:-6], "Lookup")
    return Column(name)


def plain_table(name: str, columns: Iterable[str], entity_set: str, known: Table | None = None) -> Table:
    """A typed table from a plain column set; a table the stand-in knows (contact, lead, account) keeps its
    metadata and the types of the columns it knows."""
    typed = []
    for column in sorted(set(columns) - {f"{name}id"}):
        found = known.column(column) if known is not None else None
        typed.append(found or plain_column(column))
    if known is not None:
        return Table(
            name,
            entity_set,
            tuple(typed),
            known.schema_name,
            known.label,
            known.primary_name,
            known.object_type_code,
            known.custom,
            known.ownership,
        )
    primary = "name" if "name" in columns else None
    return Table(name, entity_set, tuple(typed), primary_name=primary)


def label(text: str, metadata_id: str) -> dict[str, Any]:
    """A ``Label`` (docs/dataverse-admin.md §1.1) in 1033 only; empty text -> no labels."""
    if not text:
        return {"LocalizedLabels": [], "UserLocalizedLabel": None}
    localized = {"Label": text, "LanguageCode": 1033, "IsManaged": True, "MetadataId": metadata_id, "HasChanged": None}
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": dict(localized)}
