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
    """One Azure Function of the app, as settings and routing know it."""

    name: str  # user-facing: the portal toggle is the app setting AzureWebJobs.<name>.Disabled
    queue_setting: str  # the app setting that names its trigger queue
    route: Route | None  # the work it does; None for the router


# The functions, their trigger queues and routes: everything else (settings, routing, the app's handlers,
# the local runner, redrive) reads this table rather than naming a function or queue itself.
ROUTER = Function("CampaignLogRouter", "CAMPAIGN_LOG_QUEUE", None)
OPT_OUT = Function("BulkEmailOptOut", "OPT_OUT_QUEUE", Route.OPT_OUT)
BOUNCE = Function("BounceDetail", "BOUNCE_QUEUE", Route.BOUNCE)
FUNCTIONS = (ROUTER, OPT_OUT, BOUNCE)


def function_for(route: Route) -> Function:
    """The function that does the work of ``route``."""
    return next(f for f in FUNCTIONS if f.route is route)
