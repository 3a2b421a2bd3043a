"""Contact point consent for Customer Insights – Journeys: which consent records an opt-out writes, as pure functions.

Real-time journeys check consent per email address in ``msdynmkt_contactpointconsent4``, not ``donotbulkemail``.
With ``CONSENT_PURPOSE_IDS`` / ``CONSENT_TOPIC_IDS`` set, an opt-out also records the address as opted out of each
configured purpose and topic. The table has no alternate key, so this follows Microsoft's own recipe: list the
records for the address, channel and purpose (or topic); update every match to Opted Out, or create one when there
is none (docs/consent.md). A created record's id is derived from its purpose (or topic) and its address
(:func:`record_id`): two workers that both found nothing create the same id, so the second meets Dataverse's
duplicate-key refusal and updates the first's record instead of adding a second one.

Two rules hold whatever exists: a record is never set to anything but Opted Out (nobody is opted *in*), and records
of other channels, purposes and topics are never touched. A record that is already opted out is left alone, so a
redelivered or duplicate opt-out writes nothing twice.

What the write is for (its purposes, topics, address columns and text) is :mod:`.consent_settings`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from optout_core.domain.consent_settings import ConsentSettings
from optout_core.domain.ids import normalise_guid
from optout_core.domain.odata import equals

TABLE = "msdynmkt_contactpointconsent4"
ENTITY_SET = "msdynmkt_contactpointconsent4s"
KEY = "msdynmkt_contactpointconsent4id"
ADDRESS = "msdynmkt_contactpointvalue"
CHANNEL = "msdynmkt_contactpointtype"
STATUS = "msdynmkt_value"
CONSENT_TYPE = "msdynmkt_contactpointconsenttype"
SOURCE = "msdynmkt_source"
REASON = "msdynmkt_logicalreason"  # the choice "Reason"
DESCRIPTION = "msdynmkt_reason"  # the free text "Reason Description"
# A create with a primary key that is taken: error.code 0x80040237 DuplicateRecord ("Cannot insert duplicate key"),
# https://learn.microsoft.com/power-apps/developer/data-platform/reference/web-service-error-codes and
# https://learn.microsoft.com/troubleshoot/power-platform/power-apps/dataverse/client-errors. The code is the
# published fact; the HTTP status of a POST that meets it is not (412 is published for If-None-Match), so the
# app recognises the code whatever the status.
DUPLICATE_RECORD = "0x80040237"
# The namespace of the name-based (RFC 9562 version 5) ids of created records; fixed for ever, or ids would change.
RECORD_NAMESPACE = uuid.UUID("47fa9e58-3ae5-4b4f-8071-6e1db5d71008")

EMAIL = 534120000  # Channel: Email
OPTED_OUT = 534120002  # Consent status: Opted Out (534120000 Not Set, 534120001 Opted In: never written)
SOURCE_INTERNAL = 534120000
NO_REASONS = 534119999


class ConsentType(IntEnum):
    PURPOSE = 534120000
    TOPIC = 534120001


@dataclass(frozen=True, slots=True)
class Scope:
    """What a record is consent for: a purpose or a topic, by id."""

    kind: ConsentType
    id: str  # lowercase GUID

    @property
    def table(self) -> str:
        return "msdynmkt_purpose" if self.kind is ConsentType.PURPOSE else "msdynmkt_topic"

    @property
    def entity_set(self) -> str:
        return self.table + "s"

    def bind(self) -> dict[str, str]:
        # The navigation property is spelt with a capital I (msdynmkt_purposeId), unlike the column.
        return {f"{self.table}Id@odata.bind": f"/{self.entity_set}({self.id})"}

    def __str__(self) -> str:
        return f"{self.table}/{self.id}"


def scopes(settings: ConsentSettings) -> tuple[Scope, ...]:
    """What ``settings`` opt an address out of: each purpose, then each topic."""
    return tuple(Scope(ConsentType.PURPOSE, p) for p in settings.purposes) + tuple(
        Scope(ConsentType.TOPIC, t) for t in settings.topics
    )


def addresses(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[str, ...]:
    """The recipient's distinct, non-empty addresses in ``columns`` order (the same address twice, in any case,
    counts once: Dataverse compares text without regard to case)."""
    found: dict[str, str] = {}
    for column in columns:
        value = row.get(column)
        if isinstance(value, str) and value.strip():
            found.setdefault(address_key(value), value.strip())
    return tuple(found.values())


def address_key(address: str) -> str:
    """Two addresses are one when Dataverse's text comparison calls them equal: case-insensitive, character by
    character (``lower``), never case-folded — ``casefold`` makes ``straße`` and ``strasse`` one address, which
    Dataverse keeps apart (docs/consent.md)."""
    return address.strip().lower()


def record_id(address: str, scope: Scope) -> str:
    """The id of the record this app creates for ``address`` and ``scope``: a name-based UUID (uuid5) of the scope
    and the address as Dataverse compares it (:func:`address_key`), so every worker, and every resend of a create
    whose answer was lost, names the same record."""
    return str(uuid.uuid5(RECORD_NAMESPACE, f"{int(scope.kind)}/{scope.id}/{address_key(address)}"))


# -- listing what exists -----------------------------------------------------------------------------------

QUERY_SELECT = (KEY, ADDRESS, CHANNEL, CONSENT_TYPE, STATUS, "_msdynmkt_purposeid_value", "_msdynmkt_topicid_value")


def query_filter(address: str) -> str:
    """The OData ``$filter`` for the email-channel records of ``address`` (escaped by :mod:`.odata`)."""
    return f"{equals(ADDRESS, address)} and {CHANNEL} eq {EMAIL}"


@dataclass(frozen=True, slots=True)
class Existing:
    """A consent record as listed: its id, status and what it is consent for."""

    id: str
    address: str
    channel: int | None
    kind: int | None
    status: int | None
    purpose: str | None
    topic: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Existing:
        return cls(
            id=str(row.get(KEY, "")).lower(),
            address=str(row.get(ADDRESS) or ""),
            channel=_int(row.get(CHANNEL)),
            kind=_int(row.get(CONSENT_TYPE)),
            status=_int(row.get(STATUS)),
            purpose=normalise_guid(row.get("_msdynmkt_purposeid_value")),
            topic=normalise_guid(row.get("_msdynmkt_topicid_value")),
        )

    def is_for(self, address: str, scope: Scope) -> bool:
        """Microsoft's match: this address, the email channel, the consent type and the purpose (or topic) id."""
        if address_key(self.address) != address_key(address) or self.channel != EMAIL or self.kind != scope.kind:
            return False
        return (self.purpose if scope.kind is ConsentType.PURPOSE else self.topic) == scope.id


# -- the plan ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to write for one address: records to create (one per scope without any), records to set to Opted Out,
    and records already opted out (left alone)."""

    address: str
    create: tuple[Scope, ...] = ()
    update: tuple[str, ...] = ()  # record ids
    kept: tuple[str, ...] = ()  # record ids already opted out

    @property
    def writes(self) -> int:
        return len(self.create) + len(self.update)


def plan(address: str, scopes: Iterable[Scope], existing: Iterable[Existing]) -> Plan:
    """Which records to create and which to update so that ``address`` is opted out of every scope.

    Only records that match a scope exactly are considered (:meth:`Existing.is_for`); every match is updated
    (Microsoft's recipe updates them all), unless it is opted out already."""
    listed = list(existing)
    create: list[Scope] = []
    update: dict[str, None] = {}
    kept: dict[str, None] = {}
    for scope in dict.fromkeys(scopes):
        matches = [record for record in listed if record.is_for(address, scope)]
        if not matches:
            create.append(scope)
        for record in matches:
            (kept if record.status == OPTED_OUT else update)[record.id] = None
    return Plan(address, tuple(create), tuple(update), tuple(kept))


def new_record(address: str, scope: Scope, description: str) -> dict[str, Any]:
    """The body of a created record: its derived id, Email, Opted Out, Source Internal, Reason "No reasons", and the
    marker text."""
    return {
        KEY: record_id(address, scope),
        ADDRESS: address,
        CHANNEL: EMAIL,
        CONSENT_TYPE: int(scope.kind),
        STATUS: OPTED_OUT,
        SOURCE: SOURCE_INTERNAL,
        REASON: NO_REASONS,
        DESCRIPTION: description,
        **scope.bind(),
    }


def opted_out(description: str) -> dict[str, Any]:
    """The update of an existing record: status Opted Out, with the source, reason and marker text Microsoft's
    recipe writes; channel, consent type, address and purpose stay as they are."""
    return {STATUS: OPTED_OUT, SOURCE: SOURCE_INTERNAL, REASON: NO_REASONS, DESCRIPTION: description}


@dataclass(frozen=True)
class Tally:
    """What the consent write did for one recipient, for its outcome line (counts only: never an address)."""

    addresses: int = 0
    created: int = 0
    updated: int = 0
    kept: int = 0
    empty: tuple[str, ...] = field(default=())  # address columns that were empty

    def describe(self, wrote: str) -> str:
        """``wrote`` is what the recipient write set (``donotbulkemail``)."""
        if not self.addresses:
            return f"wrote {wrote}; no consent record: {', '.join(self.empty) or 'the address'} empty"
        written = self.created + self.updated
        parts = [f"{self.created} created", f"{self.updated} updated"]
        if self.kept:
            parts.append(f"{self.kept} already opted out, left alone")
        noun = "record" if written == 1 else "records"
        return f"wrote {wrote} and {written} consent {noun} ({'; '.join(parts)}) for {self.addresses} address(es)"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
