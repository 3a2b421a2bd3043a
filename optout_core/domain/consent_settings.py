"""The consent write's settings: the ids of the purposes and topics an opt-out records the address as opted out of,
the address columns, and the Reason Description.

Kept apart from :mod:`optout_core.domain.consent` (the records and the plan of which to create or update): every
process reads its settings with its first message, but only a process with consent on loads the consent write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from optout_core.domain.errors import SettingsError
from optout_core.domain.ids import normalise_guid

DESCRIPTION_MAX = 500
DESCRIPTION_PLACEHOLDERS = ("log_id",)
DEFAULT_DESCRIPTION = "Opted out by optout from Concep campaign log {log_id}"


@dataclass(frozen=True)
class ConsentSettings:
    """The consent write's settings; no purpose and no topic means it is off (the app's behaviour before it)."""

    purposes: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    address_columns: tuple[str, ...] = ("emailaddress1",)
    description: str = DEFAULT_DESCRIPTION

    @property
    def enabled(self) -> bool:
        return bool(self.purposes or self.topics)

    @classmethod
    def parse(cls, purposes: str, topics: str, columns: str, description: str) -> ConsentSettings:
        """From the raw CONSENT_PURPOSE_IDS, CONSENT_TOPIC_IDS, RECIPIENT_EMAIL_COLUMNS, CONSENT_REASON_DESCRIPTION."""
        names = [c.strip().lower() for c in columns.split(";") if c.strip()]
        for name in names:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise SettingsError(f"RECIPIENT_EMAIL_COLUMNS: {name!r} is not a Dataverse logical name")
        if not names:
            raise SettingsError("RECIPIENT_EMAIL_COLUMNS must name at least one address column, e.g. emailaddress1")
        unknown = set(re.findall(r"\{([^{}]*)\}", description)) - set(DESCRIPTION_PLACEHOLDERS)
        if unknown:
            raise SettingsError(f"CONSENT_REASON_DESCRIPTION: unknown placeholder(s) {sorted(unknown)}; use {{log_id}}")
        return cls(
            purposes=_guids(purposes, "CONSENT_PURPOSE_IDS"),
            topics=_guids(topics, "CONSENT_TOPIC_IDS"),
            address_columns=tuple(dict.fromkeys(names)),
            description=description,
        )

    def description_for(self, log_id: str) -> str:
        return self.description.replace("{log_id}", log_id)[:DESCRIPTION_MAX]


def _guids(text: str, setting: str) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for entry in (part.strip() for part in text.split(";")):
        if not entry:
            continue
        guid = normalise_guid(entry)
        if guid is None:
            raise SettingsError(f"{setting}: {entry!r} is not a GUID (the id at the end of the purpose's URL)")
        found[guid] = None
    return tuple(found)
