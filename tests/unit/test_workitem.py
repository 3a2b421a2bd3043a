"""Work items (optout_core.domain.workitem) and the bounce update built from them (optout_core.domain.bounce)."""

import pytest

from optout_core.domain.bounce import bounce_changes
from optout_core.domain.model import Recipient, Route
from optout_core.domain.workitem import InvalidWorkItem, WorkItem

ITEM = WorkItem(
    route=Route.BOUNCE,
    log_id="5c1e8a72-4f10-f011-998a-6045bd0f2c11",
    recipient=Recipient("lead", "b2000000-0000-4000-8000-000000000001"),
    activity_type="Hard Bounce",
    activity_code=100000007,
    operation_id="6d1e8a72-4f10-f011-998a-6045bd0f2c11",
    occurred_on="2025-03-14T09:26:53Z",
    detail="550 5.1.1 mailbox unavailable",
)


def test_round_trips_through_json():
    assert WorkItem.from_json(ITEM.to_json()) == ITEM


def test_message_id_is_deterministic_per_log_and_route():
    assert ITEM.message_id == "5c1e8a72-4f10-f011-998a-6045bd0f2c11:bounce"


@pytest.mark.parametrize(
    "body, words",
    [
        (b"nope", "not a JSON work item"),
        (b"[]", "object"),
        (b'{"version": 2}', "version 2"),
        (b'{"version": 1, "route": "delete"}', "unknown route"),
        (b'{"version": 1, "route": "opt_out", "log_id": "x"}', "log_id"),
        (
            b'{"version": 1, "route": "opt_out", "log_id": "5c1e8a72-4f10-f011-998a-6045bd0f2c11",'
            b' "recipient": {"table": "systemuser", "id": "5c1e8a72-4f10-f011-998a-6045bd0f2c11"}}',
            "contact, lead or account",
        ),
        (
            b'{"version": 1, "route": "opt_out", "log_id": "5c1e8a72-4f10-f011-998a-6045bd0f2c11",'
            b' "recipient": {"table": "contact", "id": "1)/../accounts(2"}}',
            "not a GUID",
        ),
    ],
)
def test_anything_else_is_an_invalid_work_item_with_a_reason(body, words):
    with pytest.raises(InvalidWorkItem, match=words):
        WorkItem.from_json(body)


def test_empty_bounce_update_means_audit_only():
    assert bounce_changes(None, ITEM) is None


def test_bounce_update_fills_placeholders_and_keeps_other_values():
    template = {
        "x_emailstatus": 2,
        "x_bounced": True,
        "x_bouncedon": "{occurred_on}",
        "x_note": "{activity_type} ({log_id}): {detail}",
    }
    assert bounce_changes(template, ITEM) == {
        "x_emailstatus": 2,
        "x_bounced": True,
        "x_bouncedon": "2025-03-14T09:26:53Z",
        "x_note": "Hard Bounce (5c1e8a72-4f10-f011-998a-6045bd0f2c11): 550 5.1.1 mailbox unavailable",
    }


def test_a_lone_placeholder_with_no_value_becomes_null_and_inside_text_empty():
    item = WorkItem(route=Route.BOUNCE, log_id=ITEM.log_id, recipient=ITEM.recipient)
    assert bounce_changes({"x_on": "{occurred_on}", "x_note": "why: {detail}."}, item) == {
        "x_on": None,
        "x_note": "why: .",
    }


def test_placeholder_values_are_not_reinterpreted():
    item = WorkItem(route=Route.BOUNCE, log_id=ITEM.log_id, recipient=ITEM.recipient, detail="{log_id} {0} %s")
    assert bounce_changes({"x_note": "{detail}!"}, item) == {"x_note": "{log_id} {0} %s!"}


def _document(**changes):
    import json

    document = json.loads(ITEM.to_json())
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "body",
    [
        _document(recipient={"table": ["contact"], "id": ITEM.recipient.id}),  # a list where a name belongs
        _document(recipient={"table": {"a": 1}, "id": ITEM.recipient.id}),
        _document(route=["opt_out"]),
        _document(log_id=[ITEM.log_id]),
    ],
)
def test_a_malformed_item_is_an_invalid_work_item_never_another_error(body):
    with pytest.raises(InvalidWorkItem):
        WorkItem.from_json(body)


@pytest.mark.parametrize("first_attempt", [10**400, -(10**400), 1e308, "1700000000"])
def test_a_first_attempt_beyond_any_real_time_opens_no_window_and_raises_nothing(first_attempt):
    body = _document(first_attempt=first_attempt).replace(b"1e+308", b"1e308")
    assert WorkItem.from_json(body).first_attempt is None


def test_a_huge_put_back_count_cannot_make_a_message_id_too_long():
    item = WorkItem.from_json(_document(reschedules=10**100))
    assert item.reschedules == 0 and len(item.message_id) <= 128
