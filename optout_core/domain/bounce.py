"""What a bounce writes: BOUNCE_UPDATE with its placeholders filled from the work item."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from optout_core.domain.workitem import WorkItem

_PLACEHOLDER = re.compile(r"\{(activity_type|occurred_on|log_id|detail)\}")


def uses_detail(template: Mapping[str, Any] | None) -> bool:
    """Whether BOUNCE_UPDATE writes the bounce detail (``{detail}``): only then is BOUNCE_DETAIL_COLUMN read."""
    return any(isinstance(value, str) and "{detail}" in value for value in (template or {}).values())


def bounce_changes(template: Mapping[str, Any] | None, item: WorkItem) -> dict[str, Any] | None:
    """The columns to PATCH for a bounce, or None when BOUNCE_UPDATE is empty (audit only).

    A string that is exactly one placeholder whose value is unknown becomes null, so a date column is
    cleared rather than sent an empty string; inside longer text an unknown value reads as "".
    """
    if template is None:
        return None
    values = {
        "activity_type": item.activity_type or (None if item.activity_code is None else str(item.activity_code)),
        "occurred_on": item.occurred_on,
        "log_id": item.log_id,
        "detail": item.detail,
    }

    def fill(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)] or "", value)

    return {column: fill(value) for column, value in template.items()}
