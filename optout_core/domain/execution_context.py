"""Reading the ``RemoteExecutionContext`` Dataverse posts to Service Bus (JSON message format).

Pure functions over bytes and plain data. The body is .NET ``DataContractJsonSerializer`` output:
dictionaries are ``[{"key": …, "value": …}]`` arrays, complex values carry a ``"__type"`` tag, dates
are ``/Date(ms±hhmm)/`` and every ``/`` is escaped as ``\\/`` (``json.loads`` undoes that). Unknown
keys are ignored: Microsoft keeps adding members. Anything unreadable raises :class:`UnreadableMessage`
with a reason that tells the administrator what to change, except a Target that is not a readable Entity:
that is kept as the reason of a :class:`HeaderOnlyContext`, because a Delete or Assign names the row by
EntityReference and must be ignored on its message name, not rejected for its Target.

The values inside (lookups, choices, dates) are read by :mod:`optout_core.domain.values`; a Web API row that
stands in for a trimmed context, by :mod:`optout_core.domain.webapi_row`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from optout_core.domain.errors import PermanentError
from optout_core.domain.ids import normalise_guid
from optout_core.domain.values import iso_utc, json_type, type_name, unwrap

# Dataverse trims contexts over 192 KB and fails to send anything larger; 512 KiB leaves room for
# Premium-tier headroom while refusing bodies that cannot have come from Dataverse.
MAX_BODY_BYTES = 512 * 1024
_JSON_TYPES = ("application/json", "text/json")
_XML_START = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*<")  # matched in place: no copy of the body


class UnreadableMessage(PermanentError):
    """The body is not a Dataverse JSON context this app can read."""


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


_BOM = b"\xef\xbb\xbf"


class _FastDecoder(NamedTuple):
    decode: Callable[[bytes], dict[str, Any]]  # the members the router reads, by name
    refused: tuple[type[Exception], ...]  # what it raises for a body it refuses (the exact path reads it then)


_MEMBERS = (
    "MessageName",
    "PrimaryEntityName",
    "PrimaryEntityId",
    "OrganizationId",
    "OperationId",
    "CorrelationId",
    "InputParameters",
)


@functools.cache
def _fast_decoder() -> _FastDecoder:
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

    def decode(body: bytes) -> dict[str, Any]:
        decoded = decoder.decode(body)
        return {name: getattr(decoded, name) for name in _MEMBERS}

    return _FastDecoder(decode, (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError))


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
