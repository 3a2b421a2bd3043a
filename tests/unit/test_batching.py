"""Many requests as $batch chunks, and each part's answer matched back to its request; a lone request goes as
itself (optout_core.dataverse.batching)."""

from optout_core.dataverse.batching import replies
from optout_core.dataverse.odata_batch import MAX_OPERATIONS, Request
from optout_core.dataverse.sender import Lost, Refused
from tests.support.fake_sender import FakeSender, answer, batch_answer, parts_of


def reads(n):
    return [Request("GET", f"/api/data/v9.2/contacts({i})") for i in range(n)]


def each_part(status):
    """A $batch answer with one ``status`` part per part of the request; ``status`` to a request sent alone."""

    def reply(request):
        return batch_answer([answer(status)] * len(parts_of(request))) if request.path.endswith("/$batch") else status

    return reply


def test_without_batch_each_request_goes_alone_in_order():
    sender = FakeSender(200, 404)
    assert [r.status for r in replies(sender.send, reads(2), batch=False)] == [200, 404]
    assert [r.path for r in sender.requests] == [r.path for r in reads(2)]


def test_a_batch_is_one_request_continuing_on_error_and_its_parts_answer_in_order():
    sender = FakeSender(batch_answer([answer(200), answer(404)]))
    assert [r.status for r in replies(sender.send, reads(2), batch=True)] == [200, 404]
    [request] = sender.requests
    assert request.path == "/api/data/v9.2/$batch" and request.headers["Prefer"] == "odata.continue-on-error"
    assert [p.path for p in parts_of(request)] == [r.path for r in reads(2)]


def test_a_lone_request_goes_as_itself_not_as_a_batch_of_one():
    sender = FakeSender(answer(404, {"error": {"code": "0x80040217", "message": "not found"}}))
    [reply] = replies(sender.send, reads(1), batch=True)
    assert reply.status == 404 and not isinstance(reply, Refused)  # as a part's answer reads: the request's own
    assert sender.requests == reads(1)


def test_a_lone_request_gets_its_own_error_answer_not_a_whole_batch_refusal():
    busy = answer(429, {"error": {"code": "0x80072322", "message": "busy"}}, **{"Retry-After": "4"})
    assert list(replies(FakeSender(busy).send, reads(1), batch=True)) == [busy]


def test_a_lone_request_without_an_answer_is_lost_as_sent():
    lost = Lost(sent=True, cause="Dataverse unreachable: ReadTimeout")
    assert list(replies(FakeSender(lost).send, reads(1), batch=True)) == [lost]


def test_batches_are_split_at_the_web_api_limit_and_a_lone_remainder_goes_as_itself():
    sender = FakeSender(otherwise=each_part(204))
    assert len(list(replies(sender.send, reads(MAX_OPERATIONS + 1), batch=True))) == MAX_OPERATIONS + 1
    first, last = sender.requests
    assert len(parts_of(first)) == MAX_OPERATIONS and last == reads(MAX_OPERATIONS + 1)[-1]


def test_a_chunk_is_sent_only_when_its_first_answer_is_wanted():
    sender = FakeSender(otherwise=each_part(204))
    answers = replies(sender.send, reads(MAX_OPERATIONS + 1), batch=True)
    next(answers)
    assert len(sender.requests) == 1


def test_a_whole_batch_refused_refuses_each_part_saying_so():
    sender = FakeSender(answer(503, {"error": {"code": "0x0", "message": "busy"}}))
    parts = list(replies(sender.send, reads(3), batch=True))
    assert all(isinstance(p, Refused) and p.what == " to $batch" and p.answer.status == 503 for p in parts)


def test_a_batch_without_an_answer_leaves_each_part_without_one():
    lost = Lost(sent=True, cause="Dataverse unreachable: ReadTimeout")
    assert list(replies(FakeSender(lost).send, reads(2), batch=True)) == [lost, lost]


def test_an_answer_that_does_not_match_the_request_is_as_good_as_lost():
    for unmatched in (batch_answer([answer(204)]), answer(200, {"not": "multipart"})):
        parts = list(replies(FakeSender(unmatched).send, reads(2), batch=True))
        assert all(isinstance(p, Lost) and p.sent for p in parts)
