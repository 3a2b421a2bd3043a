"""Redrive's decisions (optout_core.app.redrive): a redriven work item starts a new retry window."""

from optout_core.app.redrive import Held, redrive_copy
from optout_core.domain.model import Recipient, Route
from optout_core.domain.workitem import WorkItem

ITEM = WorkItem(
    route=Route.OPT_OUT,
    log_id="5c1e8a72-4f10-f011-998a-6045bd0f2d01",
    recipient=Recipient("contact", "a1000000-0000-4000-8000-000000000001"),
    reschedules=10,
    first_attempt=1_700_000_000.0,
    last_error="Dataverse answered 503",
)


def test_a_redriven_work_item_starts_a_new_retry_window_and_keeps_its_put_back_count():
    held = Held(
        message_id=f"{ITEM.message_id}",
        body=ITEM.to_json(),
        application_properties={"outcome": "failed", "original_message_id": ITEM.message_id},
    )
    copy = WorkItem.from_json(redrive_copy(held, "opt-out").body)
    assert copy.first_attempt is None and copy.last_error is None
    assert copy.reschedules == 10  # its later put-backs (…:r11, …:r12) must not reuse earlier MessageIds
    assert copy.log_id == ITEM.log_id and copy.recipient == ITEM.recipient


def test_a_campaign_log_body_is_redriven_as_it_is():
    body = b'{"MessageName":"Create"}'
    assert redrive_copy(Held(message_id="m", body=body), "campaign-log").body == body
