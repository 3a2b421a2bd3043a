"""Read-backs (optout_core.dataverse.readback): whether a write whose answer was lost already took effect."""

from optout_core.dataverse.errors import DataverseRejected, Undetermined
from optout_core.dataverse.odata_batch import Response
from optout_core.dataverse.readback import HELD, ReadBack, read_back
from optout_core.dataverse.sender import Lost
from tests.support.fake_sender import FakeSender, answer, batch_answer

CHECKS = [
    ReadBack("/api/data/v9.2/contacts(1)", {"donotbulkemail": True}),
    ReadBack("/api/data/v9.2/leads(2)", {"donotbulkemail": True, "donotemail": True}),
]


def check(*replies, batch=False):
    sender = FakeSender(*replies)
    return read_back(sender.send, CHECKS, batch=batch, retry_after_cap=300), sender


def test_the_read_asks_for_the_written_columns_only():
    _, sender = check(answer(200, {"donotbulkemail": False}), answer(200, {}))
    assert [r.path for r in sender.requests] == [
        "/api/data/v9.2/contacts(1)?$select=donotbulkemail",
        "/api/data/v9.2/leads(2)?$select=donotbulkemail,donotemail",
    ]


def test_a_row_that_holds_the_write_is_settled_and_one_that_does_not_is_left_to_write():
    found, _ = check(answer(200, {"donotbulkemail": True}), answer(200, {"donotbulkemail": True, "donotemail": False}))
    assert found.settled == {0: HELD} and found.unknown is None


def test_a_row_gone_is_settled_with_its_404():
    found, _ = check(answer(404), answer(200, {}))
    assert found.settled[0].status == 404 and found.unknown is None


def test_a_read_refused_for_good_settles_with_the_refusal_the_write_would_get():
    found, _ = check(answer(400, {"error": {"code": "0x0", "message": "no column"}}), answer(200, {}))
    assert isinstance(found.settled[0], DataverseRejected) and found.settled[0].code == "0x0"


def test_a_read_that_cannot_tell_stops_the_reads_with_its_own_error():
    found, sender = check(answer(503, {"error": {"code": "0x1", "message": "busy"}}), answer(200, {}))
    assert isinstance(found.unknown, Undetermined) and "503" in str(found.unknown)
    assert found.settled == {} and len(sender.requests) == 1  # the second row is not read


def test_a_lost_read_or_one_that_is_not_json_cannot_tell():
    lost, _ = check(Lost(sent=True, cause="Dataverse unreachable: ReadTimeout"))
    garbled, _ = check(Response(200, {}, b"<html>"))
    assert "ReadTimeout" in str(lost.unknown) and "not JSON" in str(garbled.unknown)


def test_reads_go_together_in_one_batch():
    found, sender = check(batch_answer([answer(200, {"donotbulkemail": True}), answer(404)]), batch=True)
    assert set(found.settled) == {0, 1} and len(sender.requests) == 1
