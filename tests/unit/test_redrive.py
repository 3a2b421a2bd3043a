"""Redrive's decisions (optout_core.app.redrive): a redriven work item starts a new retry window."""

import pytest

from optout_core.app.redrive import Held, Source, plan_move, redrive_copy
from optout_core.app.settle import rejected_copy
from optout_core.domain.model import Recipient, Route
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage

SETTINGS = Settings.from_env({})

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


def test_message_ids_do_not_grow_with_each_trip_through_redrive():
    held = Held(message_id=ITEM.message_id, body=ITEM.to_json())
    for trip in range(1, 30):
        copy = redrive_copy(held, "opt-out")
        assert copy.message_id == f"{ITEM.message_id}:redrive{trip}"
        # rejected again: the kept copy names the redriven id as its original
        rejected = rejected_copy(
            InboundMessage(body=copy.body, message_id=copy.message_id), "still refused", "BulkEmailOptOut", SETTINGS
        )
        held = Held(
            message_id=rejected.message_id,
            body=rejected.body,
            application_properties={**copy.application_properties, **rejected.application_properties},
        )


@pytest.mark.parametrize("length", [100, 120, 128, 500, 4096])
def test_a_long_message_id_still_gives_kept_and_redriven_ids_service_bus_accepts(length):
    original = "m" * length
    kept = rejected_copy(InboundMessage(body=b"{}", message_id=original), "x", "CampaignLogRouter", SETTINGS)
    assert len(kept.message_id) <= 128 and kept.message_id.endswith(":rejected")
    assert (
        kept.message_id
        == rejected_copy(  # deterministic: duplicate detection still drops a re-send
            InboundMessage(body=b"{}", message_id=original), "x", "CampaignLogRouter", SETTINGS
        ).message_id
    )
    held = Held(message_id=kept.message_id, body=b"{}", application_properties=kept.application_properties)
    assert len(redrive_copy(held, "campaign-log").message_id) <= 128


@pytest.mark.parametrize(
    "body",
    [
        ITEM.to_json().replace(b'"table":"contact"', b'"table":["contact"]'),
        ITEM.to_json().replace(b'"first_attempt":1700000000.0', b'"first_attempt":' + b"9" * 400),
        b"\xff\xfe not json",
    ],
)
def test_a_planted_body_is_moved_or_skipped_never_a_stop(body):
    held = Held(message_id="planted", body=body, application_properties={"rejected_by": "BulkEmailOptOut"})
    copy, why = plan_move(held, Source("rejected", dead_letter=False), SETTINGS, None)
    assert (copy is not None and copy.queue == "opt-out") or why.startswith("cannot be read")


def test_a_message_that_cannot_be_read_is_skipped_with_that_reason():
    class Hostile(dict):
        def get(self, *args):
            raise RuntimeError("planted")

    held = Held(message_id="planted", body=b"{}", application_properties=Hostile())
    copy, why = plan_move(held, Source("rejected", dead_letter=False), SETTINGS, None)
    assert copy is None and why.startswith("cannot be read")
