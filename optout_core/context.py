"""Reading the ``RemoteExecutionContext`` Dataverse posts to Service Bus (JSON message format).

Pure functions over bytes and plain data. The body is .NET ``DataContractJsonSerializer`` output:
dictionaries are ``[{"key": …, "value": …}]`` arrays, complex values carry a ``"__type"`` tag, dates
are ``/Date(ms±hhmm)/`` and every ``/`` is escaped as ``\\/`` (``json.loads`` undoes that). Unknown
keys are ignored: Microsoft keeps adding members. Anything unreadable raises :class:`UnreadableMessage`
with a reason that tells the administrator what to change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .errors import PermanentError
from .ids import normalise_guid

# Dataverse trims contexts over 192 KB and fails to send anything larger; 512 KiB leaves room for
# Premium-tier headroom while refusing bodies that cannot have come from Dataverse.
MAX_BODY_BYTES = 512 * 1024
_DATE = re.compile(r"/Date\((-?\d{1,15})([+-]\d{4})?\)/")
_JSON_TYPES = ("application/json", "text/json")
_LOOKUP_VALUE = re.compile(r"_(\w+)_value")
_LOOKUP_TABLE = "Microsoft.Dynamics.CRM.lookuplogicalname"
_FORMATTED = "OData.Community.Display.V1.FormattedValue"


class UnreadableMessage(PermanentError):
    """The body is not a Dataverse JSON context this app can read."""


@dataclass(frozen=True)
class Reference:
    """An EntityReference (lookup) value: the referenced table, its id (None if malformed) and display name."""

    table: str
    id: str | None
    name: str | None = None


@dataclass(frozen=True)
class CampaignLogContext:
    """What the router needs from one Dataverse message."""

    message_name: str | None
    entity_name: str | None
    primary_id: str | None            # normalised GUID, or None when absent or malformed
    organization_id: str | None
    operation_id: str | None
    correlation_id: str | None
    target: Mapping[str, Any] | None  # Target attributes by column; None when the context was trimmed
    formatted: Mapping[str, str] = field(default_factory=dict)

    def created_on(self) -> datetime | None:
        value = (self.target or {}).get("createdon")
        return parse_date(value) if isinstance(value, str) else None


def context_from_row(base: CampaignLogContext, row: Mapping[str, Any]) -> CampaignLogContext:
    """The context a trimmed message would have carried, rebuilt from the Web API's row.

    The row comes from ``GET …(<id>)`` with ``Prefer: odata.include-annotations="*"``: a lookup arrives
    as ``_<column>_value`` plus a ``…@Microsoft.Dynamics.CRM.lookuplogicalname`` annotation, a choice as
    its integer plus a ``…@OData.Community.Display.V1.FormattedValue`` annotation.
    """
    attributes: dict[str, Any] = {}
    formatted: dict[str, str] = {}
    for key, value in row.items():
        if "@" in key:
            continue
        label = row.get(f"{key}@{_FORMATTED}")
        lookup = _LOOKUP_VALUE.fullmatch(key)
        if lookup is not None:
            column, table = lookup.group(1), row.get(f"{key}@{_LOOKUP_TABLE}")
            attributes[column] = None if value is None or not isinstance(table, str) else {
                "LogicalName": table, "Id": value, "Name": label if isinstance(label, str) else None}
            key = column
        else:
            attributes[key] = value
        if isinstance(label, str):
            formatted[key] = label
    return replace(base, target=attributes, formatted=formatted)


def load_context(body: bytes, content_type: str | None = "application/json") -> CampaignLogContext:
    """Decode and read one message body, or raise :class:`UnreadableMessage` saying why."""
    document = _decode(body, content_type)
    if not isinstance(document, dict):
        raise UnreadableMessage(f"body is a JSON {json_type(document)}, not a Dataverse "
                                "RemoteExecutionContext object")
    target = _target(document)
    return CampaignLogContext(
        message_name=_text(document, "MessageName"),
        entity_name=_text(document, "PrimaryEntityName"),
        primary_id=_guid(document, "PrimaryEntityId"),
        organization_id=_guid(document, "OrganizationId"),
        operation_id=_guid(document, "OperationId"),
        correlation_id=_guid(document, "CorrelationId"),
        target=None if target is None else pairs(target.get("Attributes"), "Target.Attributes"),
        formatted={} if target is None else {
            k: v for k, v in pairs(target.get("FormattedValues"), "Target.FormattedValues").items()
            if isinstance(v, str)},
    )


def pairs(items: Any, where: str) -> dict[str, Any]:
    """``[{"key": k, "value": v}, …]`` → ``{k: v}``; null or absent → ``{}``."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise UnreadableMessage(f"{where} is not a key/value array")
    result = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise UnreadableMessage(f"{where} holds an entry that is not a {{key, value}} pair")
        key, value = item["key"], item.get("value")
        if key in result and result[key] != value:  # .NET dictionaries have unique keys: not Dataverse's
            raise UnreadableMessage(f"{where} lists {key[:100]!r} twice with different values (duplicate keys)")
        result[key] = value
    return result


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
    value = unwrap(value)
    if not isinstance(value, dict):
        return None
    tag = type_name(value)
    if tag not in (None, "EntityReference") or "Attributes" in value:
        return None
    table, row_id, name = value.get("LogicalName"), unwrap(value.get("Id")), value.get("Name")
    if not isinstance(table, str) or "Id" not in value:
        return None
    return Reference(table.lower(), normalise_guid(row_id), name if isinstance(name, str) else None)


def as_option_code(value: Any) -> int | None:
    """The integer of an OptionSetValue (or of a bare whole number)."""
    value = unwrap(value)
    if isinstance(value, dict) and type_name(value) in (None, "OptionSetValue") and "Value" in value:
        value = value["Value"]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


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


def _decode(body: bytes, content_type: str | None) -> Any:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if not body:
        raise UnreadableMessage("body is empty")
    if "msbin1" in media_type or body[:1] == b"@":
        raise UnreadableMessage("body is .NET Binary (application/msbin1): set the service endpoint's "
                                "message format to JSON in the Plug-in Registration Tool")
    if media_type.endswith("xml") or body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
        raise UnreadableMessage("body is XML: set the service endpoint's message format to JSON "
                                "in the Plug-in Registration Tool")
    if media_type and media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        raise UnreadableMessage(f"content type {media_type!r} is not application/json: set the service "
                                "endpoint's message format to JSON")
    if len(body) > MAX_BODY_BYTES:
        raise UnreadableMessage(f"body is {len(body)} bytes; Dataverse never posts more than 192 KB")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableMessage(f"body is not UTF-8 text (invalid byte at offset {exc.start}): set the "
                                "service endpoint's message charset to UTF8") from None
    try:
        # Floats stay floats: routing reads no decimal column, and Decimal parsing costs per message.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # Some of json's messages already end in "at" ("Invalid control character at").
        at = "" if exc.msg.endswith(" at") else " at"
        raise UnreadableMessage(f"body is not valid JSON ({exc.msg}{at} line {exc.lineno} "
                                f"column {exc.colno})") from None
    except RecursionError:
        raise UnreadableMessage("body is JSON nested too deeply to be a Dataverse context") from None
    except ValueError:  # e.g. a number beyond Python's 4,300-digit integer conversion limit
        raise UnreadableMessage("body holds a number too long to be a Dataverse value") from None


def _target(document: Mapping[str, Any]) -> Mapping[str, Any] | None:
    target = pairs(document.get("InputParameters"), "InputParameters").get("Target")
    if target is None:
        return None
    if not isinstance(target, dict) or type_name(target) not in (None, "Entity"):
        raise UnreadableMessage("InputParameters.Target is not an Entity")
    return target


def _text(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise UnreadableMessage(f"{key} is a JSON {json_type(value)}, not a string")
    return value


def _guid(document: Mapping[str, Any], key: str) -> str | None:
    value = unwrap(document.get(key))
    if value is None:
        return None
    guid = normalise_guid(value)
    if guid is None:
        raise UnreadableMessage(f"{key} is not a GUID")
    return guid
