"""The outcome record: how one Service Bus message ended, and its one structured log line.

The log line is the evidence of what happened to each campaign log event. Record ids only — never names,
email addresses or tokens.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optout_core.domain.model import Outcome
from optout_core.domain.redact import MAX_REASON, redact

if TYPE_CHECKING:
    from optout_core.app.telemetry import Telemetry

log = logging.getLogger("optout")
RETRY = "retry"  # not an outcome: the message goes back to Service Bus for another delivery
# The setting that turns telemetry on (optout_core.app.telemetry): without it that module is not even loaded.
CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
_TELEMETRY = "optout_core.app.telemetry"


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
        """A copy with ``changes``, as ``dataclasses.replace`` makes it (an unknown field is a TypeError), without
        its cost: the record has no ``__post_init__`` and only plain values, so its fields are copied as they are."""
        unknown = changes.keys() - _FIELDS.keys()
        if unknown:
            raise TypeError(f"OutcomeRecord has no field {', '.join(sorted(unknown))}")
        copy = object.__new__(OutcomeRecord)
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    def fields(self) -> dict[str, Any]:
        """The non-empty fields as logged (line and custom dimensions alike): bounded, email addresses masked."""
        logged: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if value is None:
                continue
            # Labels and reasons can quote what a message said; an address in them (a forged activity type, say)
            # must never reach the logs. An Outcome is logged as its text.
            logged[name] = redact(str(value)) if isinstance(value, str) else value
        logged["duration_ms"] = round(self.duration_ms, 2)
        return logged

    def line(self) -> str:
        return _line(self.fields())


_FIELDS = {field.name: field for field in dataclasses.fields(OutcomeRecord)}


# One encoder for every line: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


def _line(fields: dict[str, Any]) -> str:
    return _ENCODER.encode(fields)


def log_outcome(record: OutcomeRecord, started: float) -> OutcomeRecord:
    """Stamp the time since ``started`` (a ``time.perf_counter()``) on ``record``, log its line, return it.

    Without telemetry, a line the ``optout`` logger would drop (its level is off) is not even written."""
    record = record.but(duration_ms=(time.perf_counter() - started) * 1000)
    level = logging.WARNING if record.outcome in (Outcome.REJECTED, Outcome.FAILED, RETRY) else logging.INFO
    sink = _telemetry()
    if sink is None:
        if log.isEnabledFor(level):
            log.log(level, "outcome %s", _line(record.fields()))
    else:  # App Insights gets the line with its fields as custom dimensions, plus the outcome metrics
        fields = record.fields()
        sink.emit(level, _line(fields), fields)
    return record


def _telemetry() -> Telemetry | None:
    """The process's telemetry; the module is loaded only when Application Insights is configured (or something
    loaded it already: the audit, or a test that installed one)."""
    if _TELEMETRY not in sys.modules and not os.environ.get(CONNECTION_STRING):
        return None
    from optout_core.app import telemetry

    return telemetry.current()


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
