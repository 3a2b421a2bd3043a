"""Values from settings and arguments, made safe to put into a Dataverse Web API URL.

Every ``$filter`` the package builds takes its string values from :func:`string_literal` and its ids from
:func:`guid_literal`; a table name goes into ``EntityDefinitions(LogicalName='…')`` only through
:func:`logical_name`. The client percent-encodes the rest of a filter and leaves these escapes as they are.
"""

from __future__ import annotations

import re

from optout_core.domain.ids import normalise_guid

# "Filter rows" (learn.microsoft.com/power-apps/developer/data-platform/webapi/query/filter-rows, "Use special
# characters"): in a string value these must be URL-encoded: $ & + , / : ; = ? @. The escape character itself (%),
# the fragment mark (#) and the blank are encoded too, so no value can end or reshape the query string.
_ENCODED = frozenset("$&+,/:;=?@%# ")
# A logical name: lower-case letters, digits and underscores, starting with a letter (custom names carry a
# publisher prefix such as "cdi_"); Dataverse keeps schema names to ASCII letters, digits and underscores.
_LOGICAL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def string_literal(value: str) -> str:
    """``value`` as an OData string literal for a ``$filter``: single quotes doubled (OData's escape) and the
    characters the filter-rows page lists percent-encoded (UTF-8, as URLs carry text)."""
    doubled = value.replace("'", "''")
    text = "".join(
        "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        if char in _ENCODED or ord(char) < 0x20 or ord(char) > 0x7E
        else char
        for char in doubled
    )
    return f"'{text}'"


def guid_literal(value: object) -> str | None:
    """A GUID as OData writes it in a ``$filter`` (bare, lower-case), or None when ``value`` is no GUID."""
    return normalise_guid(value)


def logical_name(value: str) -> str | None:
    """``value`` when it is a well-formed logical name (lower-case identifier), else None."""
    return value if _LOGICAL_NAME.fullmatch(value) else None


def equals(column: str, value: str) -> str:
    """``column eq 'value'``: a string comparison (case-insensitive in Dataverse, per the filter-rows page)."""
    return f"{column} eq {string_literal(value)}"
