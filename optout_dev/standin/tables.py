"""What the stand-in serves: its address, tables and columns, the identities WhoAmI answers, row keys and etags."""

from __future__ import annotations

import re

from optout_dev.standin.schema import CONSENT_COLUMNS

API_PREFIX = "/api/data/v9.2/"
HOST = "127.0.0.1"  # loopback only: the stand-in accepts any test token and must never be reachable

# Logical name -> entity set name (the URL segment, case-sensitive). Extra tables: pass entity_sets=.
ENTITY_SETS: dict[str, str] = {"contact": "contacts", "lead": "leads", "account": "accounts"}

# Two-option (Edm.Boolean) columns: the real service rejects "true"/1 for them, so the stand-in does too.
BOOLEAN_COLUMNS: frozenset[str] = frozenset(CONSENT_COLUMNS)
# description: somewhere a demo can note bounces.
_COMMON_COLUMNS = (
    *CONSENT_COLUMNS,
    "emailaddress1",
    "emailaddress2",
    "emailaddress3",
    "description",
    "statecode",
    "statuscode",
)
DEFAULT_TABLES: dict[str, frozenset[str]] = {
    "contact": frozenset({"contactid", *_COMMON_COLUMNS, "firstname", "lastname", "fullname"}),
    "lead": frozenset({"leadid", *_COMMON_COLUMNS, "firstname", "lastname", "fullname", "companyname", "subject"}),
    "account": frozenset({"accountid", *_COMMON_COLUMNS, "name"}),
}

# Fixed identities so tests can assert on WhoAmI without reading them back first.
USER_ID = "5d3f2c1e-7a4b-4c2d-9e8f-0a1b2c3d4e5f"
BUSINESS_UNIT_ID = "b0e1d2c3-a4b5-4c6d-8e7f-901a2b3c4d5e"
ORGANIZATION_ID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def etag(version: int) -> str:
    """The weak etag of a row version, as Dataverse writes it."""
    return f'W/"{version}"'


def normalise_id(row_id: str) -> str:
    """A row id as the stand-in keys it (lower case); ValueError unless it is a hyphenated GUID."""
    if not isinstance(row_id, str) or not GUID.fullmatch(row_id):
        raise ValueError(f"row id must be a hyphenated GUID, got {row_id!r}")
    return row_id.lower()
