"""Service Bus messages as plain data: what a function receives, and what it sends on."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class InboundMessage:
    """The parts of a received Service Bus message the pipeline reads."""

    body: bytes
    content_type: str | None = "application/json"
    message_id: str = ""
    delivery_count: int | None = None
    correlation_id: str | None = None
    application_properties: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_functions(cls, msg: Any) -> InboundMessage:
        """Adapt an ``azure.functions.ServiceBusMessage`` (duck-typed: no import on this path)."""
        properties = getattr(msg, "application_properties", None) or getattr(msg, "user_properties", None)
        return cls(
            body=msg.get_body() or b"",
            content_type=getattr(msg, "content_type", None),
            message_id=getattr(msg, "message_id", None) or "",
            delivery_count=getattr(msg, "delivery_count", None),
            correlation_id=getattr(msg, "correlation_id", None),
            application_properties=dict(properties or {}),
        )


@dataclass(frozen=True)
class OutboundMessage:
    """A message to send with the Service Bus SDK (which, unlike the output binding, sets MessageId)."""

    queue: str
    body: bytes
    message_id: str
    content_type: str | None = "application/json"
    correlation_id: str | None = None
    subject: str | None = None
    application_properties: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    scheduled_enqueue_time: datetime | None = None


MAX_MESSAGE_ID = 128  # Service Bus refuses a longer MessageId


def derived_message_id(base: str, suffix: str) -> str:
    """``base`` + ``suffix`` (``:rejected``, ``:redrive2``), always within Service Bus's 128 characters.

    Deterministic, so duplicate detection still drops a re-sent copy. A base that would not fit, however it
    came to be that long (a sender's own long MessageId, ids grown through many trips), is replaced by a
    short hash of itself."""
    if len(base) + len(suffix) <= MAX_MESSAGE_ID:
        return base + suffix
    return hashlib.sha256(base.encode("utf-8", "surrogatepass")).hexdigest()[:40] + suffix[: MAX_MESSAGE_ID - 40]
