"""Domain values shared by the router and the writers: routes, the functions, recipients, outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The tables a campaign log's recipient can be, with their Web API entity sets (case-sensitive).
ENTITY_SETS = {"contact": "contacts", "lead": "leads", "account": "accounts"}


class Route(StrEnum):
    OPT_OUT = "opt_out"
    BOUNCE = "bounce"


class Outcome(StrEnum):
    """How a message ended. Every message ends in exactly one of these, or raises to be redelivered.

    ``rescheduled`` ends the message but not the event: a copy of the work item is due again later.
    """

    ROUTED = "routed"  # router: forwarded to the opt-out or bounce queue
    IGNORED = "ignored"  # router: nothing to do, with the reason
    REJECTED = "rejected"  # any function: kept on the rejected queue, with the reason
    APPLIED = "applied"  # writer: the recipient row was updated (or audited only)
    RECIPIENT_MISSING = "recipient_missing"  # writer: the row no longer exists; never re-created
    FAILED = "failed"  # writer: still failing when its retry window closed; kept on the rejected queue
    RESCHEDULED = "rescheduled"  # writer: throttled for long; the work item waits on its queue


@dataclass(frozen=True, slots=True)
class Recipient:
    table: str  # contact, lead or account
    id: str  # lowercase GUID

    def __str__(self) -> str:
        return f"{self.table}/{self.id}"

    def as_dict(self) -> dict[str, str]:
        return {"table": self.table, "id": self.id}


@dataclass(frozen=True, slots=True)
class Function:
    """One Azure Function of the app: its trigger queue, the work it does and the activity types sent to it.

    Settings (its queue and activity-type settings, its portal toggle), the router's rules, the settings checks,
    the generated app settings and queue list and the CLI all read these rows.
    """

    name: str  # user-facing: the portal toggle is the app setting AzureWebJobs.<name>.Disabled
    queue_setting: str  # the app setting that names its trigger queue
    queue_default: str  # that queue's name unless set (and the queue the Bicep template creates)
    route: Route | None = None  # the work it does; None for the router
    work: str = ""  # that work in a reason or a setting's meaning: "opt-out", "bounce"
    types_setting: str | None = None  # the app setting listing the activity types routed to it
    types_default: str = ""
    types_required: bool = False  # an empty list would silently drop this work (opt-outs must never be)
    batch: bool = False  # triggered with a batch of messages (the host does not renew their locks)


# The functions, their trigger queues, routes and activity types: everything else (settings, routing, the app's
# handlers, the local runner, redrive, the generated settings and queue files) reads this table.
ROUTER = Function("CampaignLogRouter", "CAMPAIGN_LOG_QUEUE", "campaign-log", work="campaign log")
OPT_OUT = Function(
    "BulkEmailOptOut",
    "OPT_OUT_QUEUE",
    "opt-out",
    Route.OPT_OUT,
    "opt-out",
    "OPT_OUT_ACTIVITY_TYPES",
    "Spam Report;Group Opt out;Client Opt Out",
    types_required=True,
    batch=True,
)
BOUNCE = Function(
    "BounceDetail",
    "BOUNCE_QUEUE",
    "bounce",
    Route.BOUNCE,
    "bounce",
    "BOUNCE_ACTIVITY_TYPES",
    "Hard Bounce;Soft Bounce;Bounce",
)
FUNCTIONS = (ROUTER, OPT_OUT, BOUNCE)


@dataclass(frozen=True, slots=True)
class Timer:
    """A function the host runs on a schedule rather than per message: no queue, no route, no activity types.

    Its settings (the schedule and its portal toggle) are generated from this row like a queue function's. A
    timer ships switched off (``off_by_default``): its toggle's default is true, and the app reads a missing
    toggle as off, so it runs only once someone sets ``AzureWebJobs.<name>.Disabled`` to false.
    """

    name: str
    schedule_setting: str  # the app setting holding its NCRONTAB schedule (bound as %<setting>%)
    schedule_default: str
    work: str
    off_by_default: bool = True


# The scheduled compliance audit (optout_core/app/audit.py run_scheduled): the last AUDIT_LOOKBACK_DAYS of
# campaign logs, every night at 02:00 UTC unless AUDIT_SCHEDULE says otherwise.
AUDIT = Timer("OptOutAudit", "AUDIT_SCHEDULE", "0 0 2 * * *", "compliance audit")
TIMERS = (AUDIT,)


def function_for(route: Route, functions: tuple[Function, ...] = FUNCTIONS) -> Function:
    """The function that does the work of ``route``."""
    return next(f for f in functions if f.route == route)
