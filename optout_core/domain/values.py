"""Dataverse values as a message or a Web API row carries them: typed wrappers (``{"__type": …, "__value": …}``),
EntityReferences (lookups), OptionSetValues (choices) and dates. Pure functions over decoded JSON."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from optout_core.domain.ids import normalise_guid

_DATE = re.compile(r"/Date\((-?\d{1,15})([+-]\d{4})?\)/")


class Reference(NamedTuple):
    """An EntityReference (lookup) value: the referenced table, its id (None if malformed) and display name."""

    table: str
    id: str | None
    name: str | None = None


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for reasons an administrator reads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(type(value), "value")


def type_name(value: Any) -> str | None:
    """'Entity', 'EntityReference', 'OptionSetValue', … from a ``__type`` tag, or None."""
    if isinstance(value, dict):
        tag = value.get("__type")
        if isinstance(tag, str):
            return tag.split(":", 1)[0]
    return None


def unwrap(value: Any) -> Any:
    """Typed wrappers such as ``{"__type": "Guid:#System", "__value": …}`` → their value."""
    if isinstance(value, dict) and "__value" in value and type_name(value) is not None:
        return value["__value"]
    return value


def as_reference(value: Any) -> Reference | None:
    """An EntityReference, recognised by its tag or, untagged, by its shape (as in images)."""
    if type(value) is not dict:  # most columns are text, numbers or dates: leave at once
        return None
    if "__value" in value:
        value = unwrap(value)
        if type(value) is not dict:
            return None
    table = value.get("LogicalName")
    if not isinstance(table, str) or "Id" not in value or "Attributes" in value:
        return None
    if "__type" in value and type_name(value) not in (None, "EntityReference"):
        return None
    name = value.get("Name")
    return Reference(table.lower(), normalise_guid(unwrap(value["Id"])), name if isinstance(name, str) else None)


def references_one_of(value: Any, tables: Mapping[str, Any]) -> bool:
    """A cheap first look while scanning every column: could this be a lookup to one of ``tables``?"""
    if type(value) is not dict:
        return False
    table = value.get("LogicalName") if "__value" not in value else unwrap(value)
    if isinstance(table, dict):
        table = table.get("LogicalName")
    return isinstance(table, str) and table.lower() in tables


def as_option_code(value: Any) -> int | None:
    """The integer of an OptionSetValue (or of a bare whole number)."""
    value = unwrap(value)
    if isinstance(value, dict) and type_name(value) in (None, "OptionSetValue") and "Value" in value:
        value = value["Value"]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def iso_utc(text: str) -> str | None:
    """A Dataverse date as ISO 8601 UTC to the second, or None when it is not a date."""
    match = _DATE.fullmatch(text)
    if match is not None:  # the common case, without building a datetime
        try:
            moment = time.gmtime(int(match.group(1)) // 1000)
        except (OverflowError, OSError, ValueError):
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", moment) if 1 <= moment.tm_year <= 9999 else None
    parsed = parse_date(text)
    return None if parsed is None else f"{parsed:%Y-%m-%dT%H:%M:%SZ}"


def parse_date(text: str) -> datetime | None:
    """``/Date(ms)/``, ``/Date(ms±hhmm)/`` (the ms are UTC, WCF rule) or the Web API's ISO 8601 → aware UTC."""
    match = _DATE.fullmatch(text)
    if match is None:
        try:
            parsed = datetime.fromisoformat(text)
            return parsed.astimezone(UTC) if parsed.tzinfo else None
        except (ValueError, OverflowError):
            return None
    try:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
