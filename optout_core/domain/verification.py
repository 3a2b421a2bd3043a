"""Zero-trust events: a work item checked against Dataverse's own row of its campaign log before any write.

The only authentication of an incoming event is the SAS key Dataverse holds; anyone else with Send rights on
the campaign-log queue could forge one. With ``VERIFY_CAMPAIGN_LOG`` on, the writers read the campaign log row
(``PrimaryEntityId`` in ``CAMPAIGN_LOG_ENTITY_SET``, the same read a trimmed context needs) and decide from it
exactly as the router decides from a trimmed context: the event must exist, and its activity type and
recipient must be Dataverse's. What is written then comes from the row, not from the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from optout_core.domain.execution_context import TrimmedContext
from optout_core.domain.routing import RowRequest, decide_row, row_select
from optout_core.domain.settings import Settings, normalise_label
from optout_core.domain.workitem import WorkItem

FORGED = "no such campaign log in Dataverse: forged or deleted"


def row_request(item: WorkItem, settings: Settings) -> RowRequest:
    """The read that verifies ``item``: its campaign log row, with the columns a decision uses."""
    context = TrimmedContext(
        "Create", settings.campaign_log_table, item.log_id, None, item.operation_id, item.correlation_id
    )
    return RowRequest(settings.campaign_log_entity_set, item.log_id, row_select(settings, item.route), context)


def verified(item: WorkItem, row: Mapping[str, Any] | None, settings: Settings) -> WorkItem | str:
    """``item`` with Dataverse's values (recipient, activity type, date, bounce detail), or why it is refused.

    A refusal names the field that differs, never the values (they may be personal data).
    """
    if row is None:
        return FORGED
    decision = decide_row(row_request(item, settings), row, settings)
    if decision.work_item is None:
        return f"the event does not match Dataverse's row: the row itself is not routed ({decision.reason})"
    truth = decision.work_item
    if truth.route is not item.route:
        return "the event does not match Dataverse's row: activity type (another route)"
    if not _same_activity(item, truth):
        return "the event does not match Dataverse's row: activity type"
    if truth.recipient != item.recipient:
        return "the event does not match Dataverse's row: recipient"
    return replace(truth, reschedules=item.reschedules, first_attempt=item.first_attempt, last_error=item.last_error)


def _same_activity(message: WorkItem, row: WorkItem) -> bool:
    """The option code when both carry one (labels are language-dependent), else the label."""
    if message.activity_code is not None and row.activity_code is not None:
        return message.activity_code == row.activity_code
    if message.activity_type and row.activity_type:
        return normalise_label(message.activity_type) == normalise_label(row.activity_type)
    return True  # nothing more to compare than the route, which matched
