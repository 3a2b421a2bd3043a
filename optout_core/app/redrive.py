"""Redrive's decisions: where a kept (rejected or dead-lettered) message goes back to, and what its copy is.

``rejected``: each message goes back to the trigger queue of the function named by its ``rejected_by``
property (read from the one table of functions); ``deadletter:<queue>``: back to ``<queue>``. The command
that receives, sends and settles is :mod:`optout_core.cli.redrive`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from optout_core.domain.model import FUNCTIONS
from optout_core.domain.redact import redact
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import InvalidWorkItem, WorkItem
from optout_core.servicebus.envelopes import OutboundMessage, derived_message_id

REJECTED = "rejected"
DEAD_LETTER_PREFIX = "deadletter:"
REDRIVE_COUNT = "redrive_count"
NO_TARGET = "no target"
SAME_QUEUE = "target is the source queue"
NOT_DATA = "body is not binary data"
UNREADABLE = "cannot be read"
_REDRIVEN = re.compile(r"(?::redrive\d{1,9})+$")  # what earlier trips added to a MessageId
_SHOWN_REASON = 120  # longest reason printed (a Dataverse error can be long)


class UsageError(ValueError):
    """A bad command line: exit status 2."""


@dataclass(frozen=True)
class Source:
    queue: str
    dead_letter: bool

    def __str__(self) -> str:
        return f"{DEAD_LETTER_PREFIX}{self.queue}" if self.dead_letter else REJECTED

    @property
    def reason_property(self) -> str:
        return "DeadLetterReason" if self.dead_letter else "rejected_reason"


def parse_source(text: str, settings: Settings) -> Source:
    if text == REJECTED:
        return Source(settings.rejected_queue, dead_letter=False)
    if text.startswith(DEAD_LETTER_PREFIX) and is_queue_name(text[len(DEAD_LETTER_PREFIX) :]):
        return Source(text[len(DEAD_LETTER_PREFIX) :], dead_letter=True)
    raise UsageError(f"--from must be {REJECTED!r} or 'deadletter:<queue>', not {text!r}")


@dataclass(frozen=True)
class Held:
    """What redrive reads from one received or peeked message (application properties decoded to str)."""

    message_id: str
    body: bytes | None  # None: not a data body (never from this app), left in place
    content_type: str | None = None
    correlation_id: str | None = None
    subject: str | None = None
    application_properties: Mapping[str, Any] = field(default_factory=dict)
    sequence_number: int | None = None

    @classmethod
    def from_sdk(cls, message: Any) -> Held:
        """Adapt an ``azure.servicebus.ServiceBusReceivedMessage`` (its property keys and strings are bytes)."""
        properties = {_text(k): _text(v) for k, v in (message.application_properties or {}).items()}
        return cls(
            message_id=message.message_id or "",
            body=_body(message),
            content_type=message.content_type,
            correlation_id=message.correlation_id,
            subject=message.subject,
            application_properties=properties,
            sequence_number=message.sequence_number,
        )


def target_for(held: Held, source: Source, settings: Settings, to: str | None) -> tuple[str | None, str | None]:
    """``(target queue, None)``, or ``(None, why it is skipped)``."""
    if held.body is None:
        return None, NOT_DATA
    target: str | None
    if to:
        target = to
    elif source.dead_letter:
        target = source.queue  # the queue it died on
    else:
        triggers = {function.name: settings.queue(function) for function in FUNCTIONS}
        target = triggers.get(str(held.application_properties.get("rejected_by") or ""))
        if target is None:
            return None, NO_TARGET
    if target == source.queue and not source.dead_letter:
        return None, SAME_QUEUE
    return target, None


def redrive_copy(held: Held, target: str) -> OutboundMessage:
    """The message to send back: same body, content type, correlation id, subject and properties.

    Every property is kept, the ``rejected_*`` / ``original_*`` / ``DeadLetter*`` ones too: they are the evidence
    of what happened, and a message rejected again simply gets them overwritten. ``redrive_count`` counts the
    trips through redrive.

    The MessageId is the one the message had before it was rejected (its ``original_message_id`` property, set
    by :func:`optout_core.app.settle.rejected_copy`, else its own) without an earlier trip's ``:redrive<k>``,
    plus ``:redrive<n>``: ids do not grow with each trip, and stay within Service Bus's limit whatever the
    input. It must differ from the original: the work queues' duplicate detection would otherwise drop a copy
    sent within a day of the original send without a word. It is still the same when a run sent a copy but
    could not complete the original, so the copy a later run sends again is the one duplicate detection drops.

    A work item's body starts a new retry window (its first attempt and last error are cleared); its put-back
    count is kept, so that its later put-back copies still get MessageIds of their own.
    """
    properties = dict(held.application_properties)
    properties[REDRIVE_COUNT] = _count(properties.get(REDRIVE_COUNT)) + 1
    original = _REDRIVEN.sub("", str(properties.get("original_message_id") or held.message_id))
    message_id = derived_message_id(original, f":redrive{properties[REDRIVE_COUNT]}")
    return OutboundMessage(
        queue=target,
        body=_new_window(held.body or b""),
        message_id=message_id,
        content_type=held.content_type,
        correlation_id=held.correlation_id,
        subject=held.subject,
        application_properties=properties,
    )


def plan_move(held: Held, source: Source, settings: Settings, to: str | None) -> tuple[OutboundMessage | None, str]:
    """``(the copy to send, "")`` or ``(None, why it is skipped)``. Whatever a kept message holds, the answer is
    one of these: a message that cannot be read is skipped (and reported), so it never stops the messages
    behind it from being moved, on this run or any later one."""
    try:
        target, why = target_for(held, source, settings, to)
        if target is None:
            return None, why or NO_TARGET
        return redrive_copy(held, target), ""
    except Exception as exc:  # noqa: BLE001 - anything a planted body or property can make the copy raise
        return None, f"{UNREADABLE} ({type(exc).__name__})"


def reason_of(held: Held, source: Source) -> str:
    reason = held.application_properties.get(source.reason_property)
    return str(reason) if reason not in (None, "") else "(no reason)"


@dataclass
class Tally:
    moved: int = 0
    skipped: int = 0
    by_target: Counter[str] = field(default_factory=Counter)
    by_skip: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)

    def move(self, held: Held, source: Source, target: str) -> None:
        self.moved += 1
        self.by_target[target] += 1
        self.by_reason[reason_of(held, source)] += 1

    def skip(self, held: Held, source: Source, why: str) -> None:
        self.skipped += 1
        self.by_skip[why] += 1
        self.by_reason[reason_of(held, source)] += 1


def summary(tally: Tally, source: Source, *, dry_run: bool) -> list[str]:
    """The report printed at the end."""
    moved, skipped = ("would move", "would skip") if dry_run else ("moved", "skipped")
    lines = [
        f"redrive from {source}{' (dry run: nothing locked, settled or sent)' if dry_run else ''}: "
        f"{tally.moved} {moved}, {tally.skipped} {skipped}"
    ]
    if tally.by_target:
        lines.append(f"  {moved} to: " + ", ".join(f"{q} {n}" for q, n in sorted(tally.by_target.items())))
    if tally.by_skip:
        lines.append(f"  {skipped}: " + ", ".join(f"{why} {n}" for why, n in sorted(tally.by_skip.items())))
    if tally.by_reason:
        lines.append(f"  by {source.reason_property}:")
        lines += [f"  {n:>6}  {shown(reason)}" for reason, n in tally.by_reason.most_common()]
    return lines


def is_queue_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() for c in name) and "$" not in name


def _body(message: Any) -> bytes | None:
    from azure.servicebus.amqp import AmqpMessageBodyType

    if message.body_type == AmqpMessageBodyType.DATA:
        return b"".join(bytes(part) for part in message.body)
    value = message.body if message.body_type == AmqpMessageBodyType.VALUE else None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return None


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    return value


def _count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def shown(reason: str) -> str:
    """A kept message's reason as redrive prints it: one line, bounded, addresses masked (it is read from
    the message, which anyone who can send to the queue wrote)."""
    reason = " ".join(redact(reason).split())
    return reason if len(reason) <= _SHOWN_REASON else reason[: _SHOWN_REASON - 1] + "…"


def _new_window(body: bytes) -> bytes:
    try:
        item = WorkItem.from_json(body)
    except InvalidWorkItem:
        return body  # a campaign log context (for the router), or not a work item this version reads: as it is
    return replace(item, first_attempt=None, last_error=None).to_json()
