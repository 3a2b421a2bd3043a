"""Dataverse row ids. They end up in Web API URLs, so only a well-formed GUID is ever accepted."""

from __future__ import annotations

import re

_GUID = re.compile(r"\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?")


def normalise_guid(value: object) -> str | None:
    """The lowercase hyphenated form of a GUID string (braces tolerated), or None for anything else."""
    if not isinstance(value, str):
        return None
    match = _GUID.fullmatch(value)
    if match is None or (value[0] == "{") != (value[-1] == "}"):
        return None
    return match.group(1).lower()
