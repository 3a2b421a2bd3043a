"""The outcome record: how one Service Bus message ended, and its one structured log line.

The log line is the evidence of what happened to each campaign log event. Record ids only — never names,
email addresses or tokens.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from optout_core.app import telemetry
from optout_core.domain.model import Outcome
from optout_core.domain.redact import MAX_REASON, redact

log = logging.getLogger("optout")
RETRY = "retry"  # not an outcome: the message goes back to Service Bus for another delivery


@dataclass(frozen=True)
class OutcomeRecord:
    """How one Service Bus message ended, as logged and returned to callers (the CLI, tests)."""

    function: str
    outcome: Outcome | str  # an Outcome, or RETRY when the message goes back to Service Bus
    reason: str | None = None
    log_id: str | None = None
    operation_id: str | None = None
    correlation_id: str | None = None
    message_id: str | None = None
    delivery_count: int | None = None
    route: str | None = None
    activity_type: str | None = None
    recipient: str | None = None  # "contact/<guid>"
    occurred_on: str | None = None  # the campaign log's createdon (ISO 8601): end-to-end latency starts there
    dataverse_requests: int = 0
    duration_ms: float = 0.0

    def but(self, **changes: Any) -> OutcomeRecord:
        """A copy with ``changes`` (dataclasses.replace, typed for this record)."""
        return replace(self, **changes)

    def fields(self) -> dict[str, Any]:
        """The non-empty fields as logged (line and custom dimensions alike): bounded, email addresses masked."""
        fields = {k: (str(v) if isinstance(v, Outcome) else v) for k, v in asdict(self).items()}
        fields["duration_ms"] = round(self.duration_ms, 2)
        # Labels and reasons can quote what a message said; an address in them (a forged activity type, say)
        # must never reach the logs.
        return {k: redact(v) if isinstance(v, str) else v for k, v in fields.items() if v is not None}

    def line(self) -> str:
        return _line(self.fields())


def _line(fields: dict[str, Any]) -> str:
    return json.dumps(fields, ensure_ascii=False, sort_keys=True)


def log_outcome(record: OutcomeRecord, started: float) -> OutcomeRecord:
    """Stamp the time since ``started`` (a ``time.perf_counter()``) on ``record``, log its line, return it."""
    record = record.but(duration_ms=(time.perf_counter() - started) * 1000)
    level = logging.WARNING if record.outcome in (Outcome.REJECTED, Outcome.FAILED, RETRY) else logging.INFO
    fields = record.fields()
    line = _line(fields)
    sink = telemetry.current()
    if sink is None:
        log.log(level, "outcome %s", line)
    else:  # App Insights gets the line with its fields as custom dimensions, plus the outcome metrics
        sink.emit(level, line, fields)
    return record


class outcome_or_retry:  # noqa: N801 - used as a statement: ``with outcome_or_retry(record, started):``
    """Logs a ``retry`` line when the block raises, then lets the exception reach the host (→ redelivery)."""

    def __init__(self, record: OutcomeRecord, started: float) -> None:
        self.record, self.started = record, started

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception):
            log_outcome(
                self.record.but(outcome=RETRY, reason=f"{type(exc).__name__}: {exc}"[: 2 * MAX_REASON]), self.started
            )
