"""Redrive: send rejected or dead-lettered messages back to be processed again, after a configuration fix.

  python -m optout_core redrive --from rejected|deadletter:<queue> [--to <queue>] [--max N] [--dry-run]

``--from rejected`` reads ``REJECTED_QUEUE``: each message goes back to the trigger queue of the function named
by its ``rejected_by`` property (CampaignLogRouter → ``CAMPAIGN_LOG_QUEUE``, BulkEmailOptOut → ``OPT_OUT_QUEUE``,
BounceDetail → ``BOUNCE_QUEUE``). ``--from deadletter:<queue>`` reads that queue's dead-letter sub-queue and
sends each message back to ``<queue>``. ``--to`` overrides the target for every message.

Each message is received in peek-lock and completed only after its copy was sent, so a failure never loses a
message: at worst one is sent twice (and the copy keeps the work item's MessageId, see :func:`redrive_copy`).
A message whose target cannot be told is left where it is (abandoned at the end of the run) and counted as
skipped. ``--dry-run`` only peeks: nothing is locked, settled or sent.

Output: a progress line on stderr, and a summary on stdout with the counts by reason, the moved and skipped
totals and the target queues. Message bodies are never printed: ids, queue names and reasons only.
Exit status: 0 done (also when the source was empty), 1 a receive or send failed, 2 a usage or settings error.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from optout_core.domain.errors import SettingsError
from optout_core.servicebus.envelopes import OutboundMessage
from optout_core.servicebus.sender import ServiceBusSender, service_bus_client
from optout_core.domain.settings import BOUNCE_FUNCTION, OPT_OUT_FUNCTION, ROUTER_FUNCTION, Settings

REJECTED = "rejected"
DEAD_LETTER_PREFIX = "deadletter:"
REDRIVE_COUNT = "redrive_count"
NO_TARGET = "no target"
SAME_QUEUE = "target is the source queue"
NOT_DATA = "body is not binary data"

RECEIVE_BATCH = 50            # messages locked per receive call
RECEIVE_WAIT_SECONDS = 5.0    # a receive waits this long for a first message; an empty one ends the run
PEEK_PAGE = 100               # messages per peek request (--dry-run)
PROGRESS_EVERY = 100          # when stderr is not a terminal: one progress line per this many messages
_SHOWN_REASON = 120           # longest reason printed (a Dataverse error can be long)


class UsageError(ValueError):
    """A bad command line: exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``redrive`` options: ``--from`` (dest ``source``), ``--to``, ``--max``, ``--dry-run``."""
    parser.add_argument("--from", dest="source", required=True, metavar="rejected|deadletter:QUEUE",
                        help="REJECTED_QUEUE, or the dead-letter sub-queue of QUEUE")
    parser.add_argument("--to", dest="to", metavar="QUEUE",
                        help="send every message here (default: the trigger queue of the message's rejected_by "
                             "function; for dead-lettered messages the queue they died on)")
    parser.add_argument("--max", dest="max", type=_positive_int, default=None, metavar="N",
                        help="move at most N messages (default: all)")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="only peek and print what would be moved; lock, settle and send nothing")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# -- the pure part: where a message goes and what its copy looks like -------------------------------------


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
    if text.startswith(DEAD_LETTER_PREFIX) and _is_queue_name(text[len(DEAD_LETTER_PREFIX):]):
        return Source(text[len(DEAD_LETTER_PREFIX):], dead_letter=True)
    raise UsageError(f"--from must be {REJECTED!r} or 'deadletter:<queue>', not {text!r}")


def _is_queue_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() for c in name) and "$" not in name


@dataclass(frozen=True)
class Held:
    """What redrive reads from one received or peeked message (application properties decoded to str)."""

    message_id: str
    body: bytes | None                    # None: not a data body (never from this app), left in place
    content_type: str | None = None
    correlation_id: str | None = None
    subject: str | None = None
    application_properties: Mapping[str, Any] = field(default_factory=dict)
    sequence_number: int | None = None

    @classmethod
    def from_sdk(cls, message: Any) -> Held:
        """Adapt an ``azure.servicebus.ServiceBusReceivedMessage`` (its property keys and strings are bytes)."""
        properties = {_text(k): _text(v) for k, v in (message.application_properties or {}).items()}
        return cls(message_id=message.message_id or "", body=_body(message), content_type=message.content_type,
                   correlation_id=message.correlation_id, subject=message.subject,
                   application_properties=properties, sequence_number=message.sequence_number)


def target_for(held: Held, source: Source, settings: Settings, to: str | None) -> tuple[str | None, str | None]:
    """``(target queue, None)``, or ``(None, why it is skipped)``."""
    if held.body is None:
        return None, NOT_DATA
    if to:
        target = to
    elif source.dead_letter:
        target = source.queue  # the queue it died on
    else:
        triggers = {ROUTER_FUNCTION: settings.campaign_log_queue, OPT_OUT_FUNCTION: settings.opt_out_queue,
                    BOUNCE_FUNCTION: settings.bounce_queue}
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
    by :func:`optout_core.pipeline.rejected_copy`, else its own) plus ``:redrive<n>``. It must differ from the
    original: the work queues' duplicate detection would otherwise drop a copy sent within a day of the
    original send without a word. It is still the same when a run sent a copy but could not complete the
    original, so the copy a later run sends again is the one duplicate detection drops.
    """
    properties = dict(held.application_properties)
    properties[REDRIVE_COUNT] = _count(properties.get(REDRIVE_COUNT)) + 1
    message_id = f"{properties.get('original_message_id') or held.message_id}:redrive{properties[REDRIVE_COUNT]}"
    return OutboundMessage(queue=target, body=held.body or b"", message_id=message_id,
                           content_type=held.content_type, correlation_id=held.correlation_id,
                           subject=held.subject, application_properties=properties)


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
    lines = [f"redrive from {source}{' (dry run: nothing locked, settled or sent)' if dry_run else ''}: "
             f"{tally.moved} {moved}, {tally.skipped} {skipped}"]
    if tally.by_target:
        lines.append(f"  {moved} to: " + ", ".join(f"{q} {n}" for q, n in sorted(tally.by_target.items())))
    if tally.by_skip:
        lines.append(f"  {skipped}: " + ", ".join(f"{why} {n}" for why, n in sorted(tally.by_skip.items())))
    if tally.by_reason:
        lines.append(f"  by {source.reason_property}:")
        lines += [f"  {n:>6}  {_shown(reason)}" for reason, n in tally.by_reason.most_common()]
    return lines


# -- the command ------------------------------------------------------------------------------------------


def redrive(args: argparse.Namespace, settings: Settings, env: Mapping[str, str], *, out: TextIO,
            err: TextIO) -> int:
    """Run ``redrive`` with parsed ``args``; returns the exit status."""
    try:
        source = parse_source(args.source, settings)
        to = args.to or None
        if to is not None and not _is_queue_name(to):
            raise UsageError(f"--to must be a queue name, not {to!r}")
        if to is not None and to == source.queue and not source.dead_letter:
            raise UsageError(f"--to {to} is the queue being redriven")
        if args.max is not None and args.max < 1:
            raise UsageError("--max must be at least 1")
        client = _client(env)
    except UsageError as exc:
        print(f"redrive: {exc}", file=err)
        return 2
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=err)
        return 2

    tally = Tally()
    progress = _Progress(err, args.max)
    try:
        with client:
            if args.dry_run:
                status = _peek(client, source, settings, to, args.max, tally, out, err)
            else:
                status = _move(client, source, settings, to, args.max, tally, progress, env, err)
    except Exception as exc:  # connecting or closing failed: Service Bus unreachable, no rights, ...
        progress.finish()  # end the bar's line before the error
        print(f"redrive: Service Bus failed: {_error(exc)}", file=err)
        status = 1
    progress.finish()
    for line in summary(tally, source, dry_run=args.dry_run):
        print(line, file=out)
    return status


def _move(client: Any, source: Source, settings: Settings, to: str | None, limit: int | None, tally: Tally,
          progress: _Progress, env: Mapping[str, str], err: TextIO) -> int:
    from azure.servicebus import ServiceBusReceiveMode, ServiceBusSubQueue

    sender = ServiceBusSender(env)
    held_back: list[Any] = []      # skipped: kept locked until the end so receive moves on, then abandoned
    counted: set[Any] = set()      # a skipped message can come back if its lock expires: count it once
    receiver = client.get_queue_receiver(
        source.queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER if source.dead_letter else None,
        receive_mode=ServiceBusReceiveMode.PEEK_LOCK, prefetch_count=0)
    try:
        with receiver:
            try:
                while limit is None or tally.moved < limit:
                    wanted = RECEIVE_BATCH if limit is None else min(RECEIVE_BATCH, limit - tally.moved)
                    try:
                        batch = receiver.receive_messages(max_message_count=wanted,
                                                          max_wait_time=RECEIVE_WAIT_SECONDS)
                    except Exception as exc:
                        print(f"redrive: receiving from {source} failed: {_error(exc)}", file=err)
                        return 1
                    if not batch:
                        break
                    new = 0
                    for index, message in enumerate(batch):
                        held = Held.from_sdk(message)
                        target, why = target_for(held, source, settings, to)
                        if target is None:
                            held_back.append(message)
                            key = held.sequence_number if held.sequence_number is not None else held.message_id
                            if key not in counted:
                                counted.add(key)
                                new += 1
                                tally.skip(held, source, why or NO_TARGET)
                                progress.update(tally)
                            continue
                        new += 1
                        copy = redrive_copy(held, target)
                        try:
                            sender.send(copy)
                        except Exception as exc:
                            _abandon(receiver, batch[index:])
                            print(f"redrive: sending {copy.message_id} to {target} failed, the message stays on "
                                  f"{source}: {_error(exc)}", file=err)
                            return 1
                        try:
                            receiver.complete_message(message)  # settle only once the copy is on its way
                        except Exception as exc:
                            _abandon(receiver, batch[index + 1:])
                            print(f"redrive: {copy.message_id} was sent to {target} but could not be completed "
                                  f"on {source}; a later run sends it again: {_error(exc)}", file=err)
                            return 1
                        tally.move(held, source, target)
                        progress.update(tally)
                    if not new:
                        break  # only skipped messages whose locks ran out came back: nothing left to do
            finally:
                _abandon(receiver, held_back)
    finally:
        sender.close()
    return 0


def _peek(client: Any, source: Source, settings: Settings, to: str | None, limit: int | None, tally: Tally,
          out: TextIO, err: TextIO) -> int:
    # One line per message on stdout is the progress here (peeking locks nothing, so it is quick).
    from azure.servicebus import ServiceBusSubQueue

    receiver = client.get_queue_receiver(
        source.queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER if source.dead_letter else None)
    with receiver:
        next_sequence = 0  # 0: from the start
        while limit is None or tally.moved < limit:
            try:
                page = receiver.peek_messages(max_message_count=PEEK_PAGE, sequence_number=next_sequence)
            except Exception as exc:
                print(f"redrive: peeking at {source} failed: {_error(exc)}", file=err)
                return 1
            if not page:
                break
            for message in page:
                if limit is not None and tally.moved >= limit:
                    break
                held = Held.from_sdk(message)
                target, why = target_for(held, source, settings, to)
                reason = _shown(reason_of(held, source))
                if target is None:
                    tally.skip(held, source, why or NO_TARGET)
                    print(f"would skip {held.message_id or '(no id)'} (#{held.sequence_number}): {why} "
                          f"[{reason}]", file=out)
                else:
                    copy = redrive_copy(held, target)
                    tally.move(held, source, target)
                    print(f"would move {held.message_id} (#{held.sequence_number}) → {target} as "
                          f"{copy.message_id} [{reason}]", file=out)
            last = page[-1].sequence_number
            if last is None or last < next_sequence:
                break  # no sequence numbers to page on
            next_sequence = last + 1
    return 0


def _abandon(receiver: Any, messages: Iterable[Any]) -> None:
    """Give locked messages back (best effort: an expired lock has given them back already)."""
    for message in messages:
        try:
            receiver.abandon_message(message)
        except Exception:
            pass


def _client(env: Mapping[str, str]) -> Any:
    return service_bus_client(env)  # the same connection settings as the sender and the triggers


class _Progress:
    """A bar redrawn in place on a terminal; otherwise one line every PROGRESS_EVERY messages."""

    def __init__(self, err: TextIO, total: int | None) -> None:
        self.err, self.total = err, total
        try:
            self.tty = bool(err.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.drawn = False
        self.spin = 0

    def update(self, tally: Tally) -> None:
        done = tally.moved + tally.skipped
        if self.tty:
            if self.total:
                filled = min(30, 30 * tally.moved // self.total)
                bar = f"[{'#' * filled}{'.' * (30 - filled)}] {tally.moved}/{self.total}"
            else:
                self.spin = (self.spin + 1) % 4
                bar = f"[{'|/-\\'[self.spin]}] {tally.moved}"
            self.err.write(f"\r{bar} moved, {tally.skipped} skipped ")
            self.err.flush()
            self.drawn = True
        elif done % PROGRESS_EVERY == 0:
            self.err.write(f"redrive: {done} messages, {tally.moved} moved, {tally.skipped} skipped\n")
            self.err.flush()

    def finish(self) -> None:
        if self.drawn:
            self.err.write("\n")
            self.err.flush()
            self.drawn = False


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


def _shown(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= _SHOWN_REASON else reason[: _SHOWN_REASON - 1] + "…"


def _error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
