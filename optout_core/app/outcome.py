"""One structured log line per message: the evidence of what happened to each campaign log event.

Record ids only — never names, email addresses or tokens.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from optout_core.domain.model import Outcome

log = logging.getLogger("optout")


@dataclass(frozen=True)
class Handled:
    """How one Service Bus message ended, as logged and returned to callers (the CLI, tests)."""

    function: str
    outcome: Outcome | str            # an Outcome, or "retry" when the message goes back to Service Bus
    reason: str | None = None
    log_id: str | None = None
    operation_id: str | None = None
    correlation_id: str | None = None
    message_id: str | None = None
    delivery_count: int | None = None
    route: str | None = None
    activity_type: str | None = None
    recipient: str | None = None      # "contact/<guid>"
    dataverse_requests: int = 0
    duration_ms: float = 0.0

    def line(self) -> str:
        fields = {k: (str(v) if isinstance(v, Outcome) else v) for k, v in asdict(self).items()}
        fields["duration_ms"] = round(self.duration_ms, 2)
        return json.dumps({k: v for k, v in fields.items() if v is not None}, ensure_ascii=False, sort_keys=True)


def record(handled: Handled) -> Handled:
    level = logging.WARNING if handled.outcome in (Outcome.REJECTED, "retry") else logging.INFO
    log.log(level, "outcome %s", handled.line())
    return handled
