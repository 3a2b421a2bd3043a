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
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

from optout_core.app.redrive import (
    Held,
    Source,
    Tally,
    UsageError,
    is_queue_name,
    parse_source,
    plan_move,
    reason_of,
    shown,
    summary,
)
from optout_core.domain.errors import SettingsError
from optout_core.domain.settings import Settings
from optout_core.servicebus.sender import ServiceBusSender, service_bus_client

RECEIVE_BATCH = 50  # messages locked per receive call
RECEIVE_WAIT_SECONDS = 5.0  # a receive waits this long for a first message; an empty one ends the run
PEEK_PAGE = 100  # messages per peek request (--dry-run)
PROGRESS_EVERY = 100  # when stderr is not a terminal: one progress line per this many messages


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``redrive`` options: ``--from`` (dest ``source``), ``--to``, ``--max``, ``--dry-run``."""
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="rejected|deadletter:QUEUE",
        help="REJECTED_QUEUE, or the dead-letter sub-queue of QUEUE",
    )
    parser.add_argument(
        "--to",
        dest="to",
        metavar="QUEUE",
        help="send every message here (default: the trigger queue of the message's rejected_by "
        "function; for dead-lettered messages the queue they died on)",
    )
    parser.add_argument(
        "--max",
        dest="max",
        type=_positive_int,
        default=None,
        metavar="N",
        help="move at most N messages (default: all)",
    )
    parser.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="only peek and print what would be moved; lock, settle and send nothing",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# -- the command ------------------------------------------------------------------------------------------


def redrive(args: argparse.Namespace, settings: Settings, env: Mapping[str, str], *, out: TextIO, err: TextIO) -> int:
    """Run ``redrive`` with parsed ``args``; returns the exit status."""
    try:
        source = parse_source(args.source, settings)
        to = args.to or None
        if to is not None and not is_queue_name(to):
            raise UsageError(f"--to must be a queue name, not {to!r}")
        if to is not None and to == source.queue and not source.dead_letter:
            raise UsageError(f"--to {to} is the queue being redriven")
        if args.max is not None and args.max < 1:
            raise UsageError("--max must be at least 1")
        client = service_bus_client(env)  # the same connection settings as the sender and the triggers
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
            plan = _Plan(source, settings, to, args.max)
            if args.dry_run:
                status = _peek(client, plan, tally, out, err)
            else:
                status = _move(client, plan, tally, progress, env, err)
    except Exception as exc:  # noqa: BLE001 - connecting or closing failed (unreachable, no rights, ...): report it
        progress.finish()  # end the bar's line before the error
        print(f"redrive: Service Bus failed: {_error(exc)}", file=err)
        status = 1
    progress.finish()
    for line in summary(tally, source, dry_run=args.dry_run):
        print(line, file=out)
    return status


@dataclass
class _Plan:
    """What a run moves: from where, under which settings, to where (None: where each message belongs)."""

    source: Source
    settings: Settings
    to: str | None
    limit: int | None


class _Failed(Exception):
    """Ends a move early: what went wrong has been printed, and the message stays where it is."""


def _move(client: Any, plan: _Plan, tally: Tally, progress: _Progress, env: Mapping[str, str], err: TextIO) -> int:
    from azure.servicebus import ServiceBusReceiveMode, ServiceBusSubQueue

    sender = ServiceBusSender(env)
    receiver = client.get_queue_receiver(
        plan.source.queue,
        sub_queue=ServiceBusSubQueue.DEAD_LETTER if plan.source.dead_letter else None,
        receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
        prefetch_count=0,
    )
    mover = _Mover(plan, receiver, sender, tally, progress, err)
    try:
        with receiver:
            try:
                mover.run()
            except _Failed:
                return 1
            finally:
                _abandon(receiver, mover.held_back)
    finally:
        sender.close()
    return 0


@dataclass
class _Mover:
    """Receives, copies and completes the messages of one run, one receive batch at a time."""

    plan: _Plan
    receiver: Any
    sender: ServiceBusSender
    tally: Tally
    progress: _Progress
    err: TextIO
    held_back: list[Any] = field(default_factory=list)  # skipped: kept locked until the end, then abandoned
    counted: set[Any] = field(default_factory=set)  # a skipped message can come back if its lock expires

    def run(self) -> None:
        limit = self.plan.limit
        while limit is None or self.tally.moved < limit:
            wanted = RECEIVE_BATCH if limit is None else min(RECEIVE_BATCH, limit - self.tally.moved)
            try:
                batch = self.receiver.receive_messages(max_message_count=wanted, max_wait_time=RECEIVE_WAIT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - any SDK failure: report it, the message stays where it is
                self._fail(f"receiving from {self.plan.source} failed: {_error(exc)}")
            if not batch:
                return
            new = sum(self._one(batch, index) for index in range(len(batch)))
            if not new:
                return  # only skipped messages whose locks ran out came back: nothing left to do

    def _one(self, batch: list[Any], index: int) -> bool:
        """Move ``batch[index]``, or hold it back; True when it was not seen before."""
        message, source = batch[index], self.plan.source
        held = _held(message)
        copy, why = plan_move(held, source, self.plan.settings, self.plan.to)
        if copy is None:
            self.held_back.append(message)
            key = held.sequence_number if held.sequence_number is not None else held.message_id
            if key in self.counted:
                return False
            self.counted.add(key)
            self.tally.skip(held, source, why)
            self.progress.update(self.tally)
            return True
        try:
            self.sender.send(copy)
        except Exception as exc:  # noqa: BLE001 - any SDK failure: report it, the message stays where it is
            _abandon(self.receiver, batch[index:])
            self._fail(
                f"sending {copy.message_id} to {copy.queue} failed, the message stays on {source}: {_error(exc)}"
            )
        try:
            self.receiver.complete_message(message)  # settle only once the copy is on its way
        except Exception as exc:  # noqa: BLE001 - any SDK failure: report it, the message stays where it is
            _abandon(self.receiver, batch[index + 1 :])
            self._fail(
                f"{copy.message_id} was sent to {copy.queue} but could not be completed on {source}; "
                f"a later run sends it again: {_error(exc)}"
            )
        self.tally.move(held, source, copy.queue)
        self.progress.update(self.tally)
        return True

    def _fail(self, text: str) -> NoReturn:
        print(f"redrive: {text}", file=self.err)
        raise _Failed(text)


def _peek(client: Any, plan: _Plan, tally: Tally, out: TextIO, err: TextIO) -> int:
    # One line per message on stdout is the progress here (peeking locks nothing, so it is quick).
    from azure.servicebus import ServiceBusSubQueue

    source, settings, to, limit = plan.source, plan.settings, plan.to, plan.limit

    receiver = client.get_queue_receiver(
        source.queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER if source.dead_letter else None
    )
    with receiver:
        next_sequence = 0  # 0: from the start
        while limit is None or tally.moved < limit:
            try:
                page = receiver.peek_messages(max_message_count=PEEK_PAGE, sequence_number=next_sequence)
            except Exception as exc:  # noqa: BLE001 - any SDK failure: report it, the message stays where it is
                print(f"redrive: peeking at {source} failed: {_error(exc)}", file=err)
                return 1
            if not page:
                break
            for message in page:
                if limit is not None and tally.moved >= limit:
                    break
                held = _held(message)
                copy, why = plan_move(held, source, settings, to)
                reason = shown(reason_of(held, source))
                if copy is None:
                    tally.skip(held, source, why)
                    print(
                        f"would skip {shown(held.message_id) or '(no id)'} (#{held.sequence_number}): {why} [{reason}]",
                        file=out,
                    )
                else:
                    tally.move(held, source, copy.queue)
                    print(
                        f"would move {shown(held.message_id)} (#{held.sequence_number}) → {copy.queue} as "
                        f"{copy.message_id} [{reason}]",
                        file=out,
                    )
            last = page[-1].sequence_number
            if last is None or last < next_sequence:
                break  # no sequence numbers to page on
            next_sequence = last + 1
    return 0


def _held(message: Any) -> Held:
    """What redrive reads from ``message``; a message whose properties cannot be read is still counted (as one
    that cannot be moved: its body is left out), never a stop."""
    try:
        return Held.from_sdk(message)
    except Exception:  # noqa: BLE001 - a planted property of any kind: skip the message, go on
        return Held(
            message_id=str(getattr(message, "message_id", "") or ""),
            body=None,
            sequence_number=getattr(message, "sequence_number", None),
        )


def _abandon(receiver: Any, messages: Iterable[Any]) -> None:
    """Give locked messages back (best effort: an expired lock has given them back already)."""
    for message in messages:
        with contextlib.suppress(Exception):  # its lock expires anyway; the message is never lost
            receiver.abandon_message(message)


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


def _error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
