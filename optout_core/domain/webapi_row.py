"""A campaign log row as the Web API returns it, read as the context a trimmed message would have carried."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from optout_core.domain.execution_context import CampaignLogContext, TrimmedContext

_LOOKUP_VALUE = re.compile(r"_(\w+)_value")
_OPTION_CODES = re.compile(r"-?\d{1,10}(?:,-?\d{1,10})*")  # a multi-select choice as the Web API returns it
_LOOKUP_TABLE = "Microsoft.Dynamics.CRM.lookuplogicalname"
_FORMATTED = "OData.Community.Display.V1.FormattedValue"


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
