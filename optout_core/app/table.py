"""Each function of the table (:data:`optout_core.domain.model.FUNCTIONS`: its name, queue, route and activity
types) with the handler that does its work for one message.

The local runner and the tests read it to go from a route to the function, its queue and its handler;
``function_app.py`` binds the same handlers to the Functions host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from optout_core.app.audit import run_scheduled
from optout_core.app.bounce import record_bounce
from optout_core.app.opt_out import opt_out_batch
from optout_core.app.outcome import OutcomeRecord
from optout_core.app.router import route
from optout_core.app.services import Services
from optout_core.domain.audit import Report
from optout_core.domain.model import AUDIT, BOUNCE, OPT_OUT, ROUTER, Function, Route, Timer
from optout_core.servicebus.envelopes import InboundMessage

Handler = Callable[[InboundMessage, Services], OutcomeRecord]
BatchHandler = Callable[[Sequence[InboundMessage], Services], list[OutcomeRecord]]


def _opt_out_one(msg: InboundMessage, services: Services) -> OutcomeRecord:
    [record] = opt_out_batch([msg], services)  # as BulkEmailOptOut, with a batch of one
    return record


@dataclass(frozen=True)
class Entry:
    function: Function
    handle: Handler
    # Set when the trigger takes a batch (``cardinality="many"``): what the host hands it, as one call.
    handle_batch: BatchHandler | None = None


TABLE: tuple[Entry, ...] = (
    Entry(ROUTER, route),
    Entry(OPT_OUT, _opt_out_one, opt_out_batch),
    Entry(BOUNCE, record_bounce),
)


def entry_for(route_: Route) -> Entry:
    """The function that does the work of ``route_``, with its handler."""
    return next(e for e in TABLE if e.function.route == route_)


@dataclass(frozen=True)
class TimerEntry:
    """A timer function (:data:`optout_core.domain.model.TIMERS`) with the handler the host runs on its schedule."""

    timer: Timer
    run: Callable[[Services, datetime | None], Report | None]


TIMER_TABLE: tuple[TimerEntry, ...] = (TimerEntry(AUDIT, run_scheduled),)
