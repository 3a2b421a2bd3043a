"""Reading the ``RemoteExecutionContext`` Dataverse posts to Service Bus (JSON message format).

Pure functions over bytes and plain data. The body is .NET ``DataContractJsonSerializer`` output:
dictionaries are ``[{"key": …, "value": …}]`` arrays, complex values carry a ``"__type"`` tag, dates
are ``/Date(ms±hhmm)/`` and every ``/`` is escaped as ``\\/`` (``json.loads`` undoes that). Unknown
keys are ignored: Microsoft keeps adding members. Anything unreadable raises :class:`UnreadableMessage`
with a reason that tells the administrator what to change, except a Target that is not a readable Entity:
that is kept as the reason of a :class:`HeaderOnlyContext`, because a Delete or Assign names the row by
EntityReference and must be ignored on its message name, not rejected for its Target.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from optout_core.domain.errors import PermanentError
from optout_core.domain.ids import normalise_guid

# Dataverse trims contexts over 192 KB and fails to send anything larger; 512 KiB leaves room for
# Premium-tier headroom while refusing bodies that cannot have come from Dataverse.
MAX_BODY_BYTES = 512 * 1024
_DATE = re.compile(r"/Date\((-?\d{1,15})([+-]\d{4})?\)/")
_JSON_TYPES = ("application/json", "text/json")
_XML_START = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*<")  # matched in place: no copy of the body
_LOOKUP_VALUE = re.compile(r"_(\w+)_value")
_OPTION_CODES = re.compile(r"-?\d{1,10}(?:,-?\d{1,10})*")  # a multi-select choice as the Web API returns it
_LOOKUP_TABLE = "Microsoft.Dynamics.CRM.lookuplogicalname"
_FORMATTED = "OData.Community.Display.V1.FormattedValue"


class UnreadableMessage(PermanentError):
    """The body is not a Dataverse JSON context this app can read."""


class Reference(NamedTuple):
    """An EntityReference (lookup) value: the referenced table, its id (None if malformed) and display name."""

    table: str
    id: str | None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ContextHeader:
    """What every Dataverse message says about itself: which message, table, row and organisation."""

    message_name: str | None
    entity_name: str | None
    primary_id: str | None  # normalised GUID, or None when absent or malformed
    organization_id: str | None
    operation_id: str | None
    correlation_id: str | None

    def _header(self) -> tuple[str | None, str | None, str | None, str | None, str | None, str | None]:
        return (
            self.message_name,
            self.entity_name,
            self.primary_id,
            self.organization_id,
            self.operation_id,
            self.correlation_id,
        )

    def trimmed(self) -> TrimmedContext:
        return TrimmedContext(*self._header())

    def without_target(self, problem: str) -> HeaderOnlyContext:
        return HeaderOnlyContext(*self._header(), problem)

    def with_target(self, target: Mapping[str, Any], formatted: Mapping[str, str]) -> CampaignLogContext:
        return CampaignLogContext(*self._header(), target, formatted)


@dataclass(frozen=True, slots=True)
class TrimmedContext(ContextHeader):
    """A context Dataverse trimmed (over its size limit): no Target, so the row must be read from the Web API."""


@dataclass(frozen=True, slots=True)
class HeaderOnlyContext(ContextHeader):
    """A context whose Target is not a readable Entity: a Delete's or Assign's Target is an EntityReference,
    and a malformed payload cannot be read. Only the header is usable, so the router decides on it (the
    wrong table is rejected, a non-Create ignored) and rejects a Create for ``problem``."""

    problem: str  # why the Target could not be read, as an administrator reads it


@dataclass(frozen=True, slots=True)
class CampaignLogContext(ContextHeader):
    """A full context: the header and the new campaign log's columns (the Target entity)."""

    target: Mapping[str, Any]  # Target attributes by column
    formatted: Mapping[str, str] = field(default_factory=dict)  # display labels of choices and lookups

    def created_on(self) -> str | None:
        """The log's ``createdon`` as ISO 8601 UTC (``2025-03-14T09:26:53Z``), or None."""
        value = unwrap(self.target.get("createdon"))  # also {"__type": "DateTime:#System", "__value": …}
        return iso_utc(value) if isinstance(value, str) else None


def context_from_row(base: TrimmedContext, row: Mapping[str, Any]) -> CampaignLogContext:
    """The context a trimmed message would have carried, rebuilt from the Web API's row.

    The row comes from ``GET …(<id>)`` with ``Prefer: odata.include-annotations="*"``: a lookup arrives
    as ``_<column>_value`` plus a ``…@Microsoft.Dynamics.CRM.lookuplogicalname`` annotation, a choice as
    its integer plus a ``…@OData.Community.Display.V1.FormattedValue`` annotation, a multi-select choice as
    a string of comma-separated codes plus its labels (read as the list of codes a context carries).
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
            attributes[column] = (
                None
                if value is None or not isinstance(table, str)
                else {"LogicalName": table, "Id": value, "Name": label if isinstance(label, str) else None}
            )
            key = column
        elif isinstance(value, str) and isinstance(label, str) and _OPTION_CODES.fullmatch(value):
            attributes[key] = [int(code) for code in value.split(",")]  # text has no formatted value
        else:
            attributes[key] = value
        if isinstance(label, str):
            formatted[key] = label
    return base.with_target(attributes, formatted)


_BOM = b"\xef\xbb\xbf"


@functools.cache
def _fast_decoder() -> Any:
    """A decoder for only the members the router reads. It skips everything else (ParentContext,
    images, SharedVariables…) without building it, which makes reading a message cheaper than a plain
    ``json.loads`` of it; types are checked afterwards, by the same code as the exact path. Built on first
    use, so indexing the function app does not pay for msgspec."""
    import msgspec

    class Members(msgspec.Struct):
        MessageName: Any = None
        PrimaryEntityName: Any = None
        PrimaryEntityId: Any = None
        OrganizationId: Any = None
        OperationId: Any = None
        CorrelationId: Any = None
        InputParameters: Any = None

    decoder = msgspec.json.Decoder(Members)
    members = (
        "MessageName",
        "PrimaryEntityName",
        "PrimaryEntityId",
        "OrganizationId",
        "OperationId",
        "CorrelationId",
        "InputParameters",
    )

    def decode(body: bytes) -> dict[str, Any]:
        decoded = decoder.decode(body)
        return {name: getattr(decoded, name) for name in members}

    refused = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError)
    return decode, refused


type Context = CampaignLogContext | TrimmedContext | HeaderOnlyContext


def load_context(body: bytes, content_type: str | None = "application/json") -> Context:
    """Decode and read one message body, or raise :class:`UnreadableMessage` saying why.

    The body and header must be readable. The payload (``InputParameters`` and its Target) is read only
    as far as it can be: a missing Target makes a :class:`TrimmedContext`, a Target that is not a readable
    Entity a :class:`HeaderOnlyContext`, so the header is checked before the Target's problem is reported.
    """
    _check_format(body, content_type)
    decode, refused = _fast_decoder()
    try:
        document: Any = decode(body[3:] if body.startswith(_BOM) else body)
    except refused:
        # Anything the fast decoder refuses goes through the standard library, which tolerates what
        # Python's json does (NaN, huge numbers, lone surrogates) and names the defect precisely.
        document = _decode_exactly(body)
    if not isinstance(document, dict):
        raise UnreadableMessage(f"body is a JSON {json_type(document)}, not a Dataverse RemoteExecutionContext object")
    header = ContextHeader(
        message_name=_text(document, "MessageName"),
        entity_name=_text(document, "PrimaryEntityName"),
        primary_id=_guid(document, "PrimaryEntityId"),
        organization_id=_guid(document, "OrganizationId"),
        operation_id=_guid(document, "OperationId"),
        correlation_id=_guid(document, "CorrelationId"),
    )
    try:
        target = _target(document)
        if target is None:
            return header.trimmed()
        attributes = pairs(target.get("Attributes"), "Target.Attributes")
        formatted = pairs(target.get("FormattedValues"), "Target.FormattedValues")
    except UnreadableMessage as exc:
        return header.without_target(str(exc))
    return header.with_target(attributes, {k: v for k, v in formatted.items() if isinstance(v, str)})


def pairs(items: Any, where: str) -> dict[str, Any]:
    """``[{"key": k, "value": v}, …]`` → ``{k: v}``; null or absent → ``{}``."""
    if items is None:
        return {}
    if type(items) is not list:
        raise UnreadableMessage(f"{where} is not a key/value array")
    try:  # the common case, in one pass; anything unusual is looked at entry by entry below
        result = {item["key"]: item.get("value") for item in items}
        if len(result) == len(items) and all(type(key) is str for key in result):
            return result
    except (TypeError, KeyError, AttributeError):
        pass
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


def _check_format(body: bytes, content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if not body:
        raise UnreadableMessage("body is empty")
    if "msbin1" in media_type or body[:1] == b"@":
        raise UnreadableMessage(
            "body is .NET Binary (application/msbin1): set the service endpoint's "
            "message format to JSON in the Plug-in Registration Tool"
        )
    if media_type.endswith("xml") or _XML_START.match(body):
        raise UnreadableMessage(
            "body is XML: set the service endpoint's message format to JSON in the Plug-in Registration Tool"
        )
    if media_type and media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        raise UnreadableMessage(
            f"content type {media_type!r} is not application/json: set the service endpoint's message format to JSON"
        )
    if len(body) > MAX_BODY_BYTES:
        raise UnreadableMessage(f"body is {len(body)} bytes; Dataverse never posts more than 192 KB")


def _decode_exactly(body: bytes) -> Any:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableMessage(
            f"body is not UTF-8 text (invalid byte at offset {exc.start}): set the "
            "service endpoint's message charset to UTF8"
        ) from None
    try:
        # Floats stay floats: routing reads no decimal column, and Decimal parsing costs per message.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # Some of json's messages already end in "at" ("Invalid control character at").
        at = "" if exc.msg.endswith(" at") else " at"
        raise UnreadableMessage(
            f"body is not valid JSON ({exc.msg}{at} line {exc.lineno} column {exc.colno})"
        ) from None
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
