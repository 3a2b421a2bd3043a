"""The small, versioned work item the router sends to the opt-out and bounce queues."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from optout_core.domain.errors import PermanentError
from optout_core.domain.ids import normalise_guid
from optout_core.domain.model import ENTITY_SETS, Recipient, Route

VERSION = 1
MAX_RESCHEDULES = 1_000_000  # far beyond any retry window's put-backs; keeps put-back MessageIds short
_LATEST = 32_503_680_000  # the year 3000 as Unix time: later than any first attempt
# Compact, with ASCII escapes: a lone surrogate in a label or bounce detail cannot break the UTF-8 body. One
# encoder for every item (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class InvalidWorkItem(PermanentError):
    """A message on a work queue that is not a work item this version understands."""


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One routed campaign log event. Carries ids and labels only: no names, no email addresses."""

    route: Route
    log_id: str
    recipient: Recipient
    activity_type: str | None = None  # the label, when the message had one
    activity_code: int | None = None  # the option code, when the column is a choice
    operation_id: str | None = None
    correlation_id: str | None = None
    occurred_on: str | None = None  # ISO 8601 UTC of the log's createdon
    detail: str | None = None  # bounce detail column, bounces only
    reschedules: int = 0  # times put back on its queue (never reset: each put-back copy needs its own MessageId)
    first_attempt: float | None = None  # when the event was first forwarded (Unix time): its retry window opens
    last_error: str | None = None  # the last real error of a put-back copy: the reason if the window closes

    @property
    def key(self) -> str:
        """One event's identity on one route: the same for every copy of this work item."""
        return self.key_for(self.log_id, self.route)

    @staticmethod
    def key_for(log_id: str, route: Route) -> str:
        return f"{log_id}:{route}"

    @property
    def message_id(self) -> str:
        # Deterministic, so Service Bus duplicate detection drops a re-send after the router is redelivered;
        # a rescheduled copy needs its own id, or duplicate detection would drop it as well.
        return self.key if not self.reschedules else f"{self.key}:r{self.reschedules}"

    def to_json(self) -> bytes:
        document = {
            "version": VERSION,
            "route": str(self.route),
            "log_id": self.log_id,
            "recipient": self.recipient.as_dict(),
            "activity_type": self.activity_type,
            "activity_code": self.activity_code,
            "operation_id": self.operation_id,
            "correlation_id": self.correlation_id,
            "occurred_on": self.occurred_on,
            "detail": self.detail,
            "reschedules": self.reschedules,
            "first_attempt": self.first_attempt,
            "last_error": self.last_error,
        }
        return _ENCODER.encode(document).encode("ascii")

    @classmethod
    def from_json(cls, body: bytes) -> WorkItem:
        """The work item in ``body``; :class:`InvalidWorkItem` for anything else, however it is malformed (a list
        where a table name belongs, a number too large for a float): never another exception, so a caller that
        rejects invalid items never stops on one."""
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise InvalidWorkItem("body is not a JSON work item") from None
        try:
            return cls._from_document(document)
        except (TypeError, ValueError, OverflowError) as exc:  # a field of the wrong kind the checks below missed
            raise InvalidWorkItem(f"work item field of the wrong kind ({type(exc).__name__})") from None

    @classmethod
    def _from_document(cls, document: Any) -> WorkItem:
        if not isinstance(document, dict):
            raise InvalidWorkItem("body is not a JSON work item object")
        if document.get("version") != VERSION:
            raise InvalidWorkItem(
                f"work item version {document.get('version')!r} is not {VERSION}: redrive it through CampaignLogRouter"
            )
        try:
            route = Route(str(document.get("route")))
        except ValueError:
            raise InvalidWorkItem(f"unknown route {document.get('route')!r}") from None
        log_id = normalise_guid(document.get("log_id"))
        recipient = document.get("recipient")
        if log_id is None:
            raise InvalidWorkItem("log_id is not a GUID")
        if (
            not isinstance(recipient, dict)
            or not isinstance(recipient.get("table"), str)
            or recipient["table"] not in ENTITY_SETS
        ):
            raise InvalidWorkItem("recipient table is not contact, lead or account")
        recipient_id = normalise_guid(recipient.get("id"))
        if recipient_id is None:
            raise InvalidWorkItem("recipient id is not a GUID")
        code = document.get("activity_code")
        reschedules = document.get("reschedules", 0)
        first_attempt = document.get("first_attempt")
        return cls(
            route=route,
            log_id=log_id,
            recipient=Recipient(recipient["table"], recipient_id),
            activity_type=_optional_text(document, "activity_type"),
            activity_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            operation_id=normalise_guid(document.get("operation_id")),
            correlation_id=normalise_guid(document.get("correlation_id")),
            occurred_on=_optional_text(document, "occurred_on"),
            detail=_optional_text(document, "detail"),
            reschedules=reschedules
            if isinstance(reschedules, int)
            and not isinstance(reschedules, bool)
            and 0 <= reschedules <= MAX_RESCHEDULES
            else 0,
            first_attempt=_time(first_attempt),
            last_error=_optional_text(document, "last_error"),
        )


def _time(value: Any) -> float | None:
    """A Unix time, or None: not a number, not finite, negative, or beyond any real time (a 400-digit integer
    would not even convert to a float)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if isinstance(value, int) and not 0 <= value <= _LATEST:
        return None
    return float(value) if math.isfinite(value) and 0 <= value <= _LATEST else None


def _optional_text(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    return value if isinstance(value, str) else None
