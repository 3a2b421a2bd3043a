"""The Web API client (optout_core.dataverse) over real HTTP against the loopback Dataverse stand-in."""

import threading
import time

import pytest
from azure.core.credentials import AccessToken

from optout_core.dataverse.client import DataverseClient, Write
from optout_core.dataverse.errors import DataverseRejected, DataverseUnavailable, SignInFailed
from optout_core.domain.errors import PermanentError, TransientError
from optout_core.domain.retry import RetryPolicy
from optout_dev.standin import Fault

CONTACT = "a1000000-0000-4000-8000-000000000001"
LEAD = "b2000000-0000-4000-8000-000000000001"
MISSING = "d4000000-0000-4000-8000-000000000004"


class Tokens:
    """A TokenCredential handing out tokens from a list; counts calls and scopes asked for."""

    def __init__(self, *tokens):
        self.tokens, self.calls, self.scopes = list(tokens), 0, []

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(scopes)
        token = self.tokens[min(self.calls, len(self.tokens) - 1)]
        self.calls += 1
        return AccessToken(token, int(time.time()) + 3600)


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


def client_for(standin, sleeps, credential=None, timeout=2.0, **policy):
    retry = RetryPolicy(**{"attempts": 4, "backoff": 0.5, **policy})
    client = DataverseClient(
        standin.url, credential or Tokens("local-token"), retry=retry, timeout=timeout, sleep=sleeps
    )
    return client


def test_update_patches_the_row_with_if_match_and_odata_headers(standin, sleeps):
    result = client_for(standin, sleeps).update("contact", CONTACT, {"donotbulkemail": True})
    assert result.value.found and result.requests == 1
    assert standin.row("contact", CONTACT)["donotbulkemail"] is True
    request = standin.requests[-1]
    assert request.method == "PATCH" and request.path == f"/api/data/v9.2/contacts({CONTACT})"
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["if-match"] == "*"
    assert headers["odata-version"] == "4.0" and headers["odata-maxversion"] == "4.0"
    assert headers["content-type"] == "application/json" and headers["accept"] == "application/json"
    assert "authorization" not in headers  # the stand-in never records tokens
    assert standin.client_bugs == []


def test_the_token_is_asked_for_the_environment_default_scope(standin, sleeps):
    tokens = Tokens("local-token")
    client_for(standin, sleeps, tokens).update("lead", LEAD, {"donotbulkemail": True})
    assert tokens.scopes == [(f"{standin.url}/.default",)]


def test_tokens_are_reused_until_they_near_expiry(standin, sleeps):
    tokens = Tokens("local-token")
    client = client_for(standin, sleeps, tokens)
    for _ in range(3):
        client.update("contact", CONTACT, {"donotbulkemail": True})
    assert tokens.calls == 1


@pytest.mark.parametrize("code", ["0x80040217", ""])
def test_a_missing_row_is_reported_and_never_created(make_standin, code, sleeps):
    standin = make_standin(not_found_code=code)
    result = client_for(standin, sleeps).update("contact", MISSING, {"donotbulkemail": True})
    assert not result.value.found
    assert standin.row("contact", MISSING) is None
    assert standin.client_bugs == []


def test_an_unknown_column_is_rejected_permanently_with_the_web_api_error(standin, sleeps):
    with pytest.raises(DataverseRejected) as caught:
        client_for(standin, sleeps).update("contact", CONTACT, {"x_nosuchcolumn": 1}).get()
    error = caught.value
    assert isinstance(error, PermanentError) and not error.retryable
    assert error.status == 400 and error.code == "0x0" and "x_nosuchcolumn" in error.message
    assert error.request_id
    assert sleeps == []


def test_a_missing_application_user_is_explained(make_standin, sleeps):
    standin = make_standin(app_user=False)
    with pytest.raises(DataverseRejected) as caught:
        client_for(standin, sleeps).update("contact", CONTACT, {"donotbulkemail": True}).get()
    assert caught.value.status == 403 and caught.value.code == "0x80072560"
    assert "application user" in str(caught.value)


def test_429_waits_the_full_retry_after_then_succeeds(standin, sleeps):
    standin.inject(Fault(status=429, retry_after=7))
    result = client_for(standin, sleeps).update("contact", CONTACT, {"donotbulkemail": True})
    assert result.value.found and result.requests == 2
    assert sleeps == [pytest.approx(7, abs=0.1)]  # waited at the process-wide gate


def test_a_retry_after_beyond_the_limit_gives_the_message_back_without_waiting(standin, sleeps):
    standin.inject(Fault(status=429, retry_after=120))
    with pytest.raises(DataverseUnavailable) as caught:
        client_for(standin, sleeps, max_retry_after=30).update("contact", CONTACT, {"donotbulkemail": True}).get()
    assert isinstance(caught.value, TransientError) and caught.value.retryable
    assert caught.value.status == 429 and caught.value.retry_after == 120
    assert sleeps == []


@pytest.mark.parametrize("status, read_backs", [(500, 0), (503, 0), (408, 0), (502, 2), (504, 2)])
def test_transient_statuses_back_off_and_retry(standin, sleeps, status, read_backs):
    # After a gateway error (502/504) the write may have committed: the row is read back before writing again.
    standin.inject(Fault(status=status, method="PATCH"), times=2)
    result = client_for(standin, sleeps).update("contact", CONTACT, {"donotbulkemail": True})
    assert result.value.found and result.requests == 3 + read_backs
    assert [r.method for r in standin.requests].count("GET") == read_backs
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_a_dropped_connection_is_retried(standin, sleeps):
    standin.inject(Fault(drop=True))
    assert client_for(standin, sleeps).update("contact", CONTACT, {"donotbulkemail": True}).value.found
    assert standin.row("contact", CONTACT)["donotbulkemail"] is True


def test_a_read_timeout_is_retried(standin, sleeps):
    standin.inject(Fault(status=503, delay=3))  # answers only after the client's 2 s read timeout
    client = client_for(standin, sleeps)
    assert client.update("contact", CONTACT, {"donotbulkemail": True}).value.found
    assert len(sleeps) == 1


def test_a_write_whose_answer_was_lost_is_read_back_not_written_twice(standin, sleeps):
    standin.inject(Fault(drop=True, after=True))  # the PATCH commits, then the connection drops
    result = client_for(standin, sleeps).update("contact", CONTACT, {"donotbulkemail": True})
    assert result.value.found and result.requests == 2
    assert [r.method for r in standin.requests] == ["PATCH", "GET"]
    assert len(standin.writes) == 1


def test_a_read_back_that_differs_writes_again(standin, sleeps):
    standin.inject(Fault(drop=True))  # dropped before the write: the row still says Allow
    assert client_for(standin, sleeps).update("contact", CONTACT, {"donotbulkemail": True}).value.found
    assert [r.method for r in standin.requests] == ["PATCH", "GET", "PATCH"]
    assert len(standin.writes) == 1


def test_verify_first_skips_a_write_a_previous_delivery_already_made(standin, sleeps):
    client = client_for(standin, sleeps)
    client.update("contact", CONTACT, {"donotbulkemail": True})
    again = client.update("contact", CONTACT, {"donotbulkemail": True}, verify_first=True)
    assert again.value.found and again.requests == 1 and len(standin.writes) == 1
    missing = client.update(
        "contact", "d4000000-0000-4000-8000-000000000004", {"donotbulkemail": True}, verify_first=True
    )
    assert not missing.value.found


def test_read_row_returns_annotations_or_none(standin, sleeps):
    standin.add_row(
        "contact",
        LEAD.replace("b2", "a9"),
        donotbulkemail=True,
        **{"donotbulkemail@OData.Community.Display.V1.FormattedValue": "Do Not Allow"},
    )
    client = client_for(standin, sleeps)
    read = client.read_row("contacts", LEAD.replace("b2", "a9"), ["donotbulkemail"])
    row = read.get()
    assert row["donotbulkemail"] is True and read.requests == 1
    assert row["donotbulkemail@OData.Community.Display.V1.FormattedValue"] == "Do Not Allow"
    assert client.read_row("contacts", MISSING).get() is None
    prefer = {k.lower(): v for k, v in standin.requests[-1].headers.items()}["prefer"]
    assert prefer == 'odata.include-annotations="*"'


def test_exhausted_retries_end_with_a_transient_error(standin, sleeps):
    standin.inject(Fault(status=503), times=10)
    attempt = client_for(standin, sleeps, attempts=3).update("contact", CONTACT, {"donotbulkemail": True})
    assert isinstance(attempt.error, DataverseUnavailable) and attempt.value is None
    assert attempt.requests == 3 and attempt.attempts == 3 and len(sleeps) == 2
    assert standin.row("contact", CONTACT)["donotbulkemail"] is False


def test_an_expired_token_is_replaced_once_without_using_up_a_try(standin, sleeps):
    tokens = Tokens("local-token", "fresh-token")
    client = client_for(standin, sleeps, tokens, attempts=1)
    client.update("contact", CONTACT, {"donotbulkemail": False})
    standin.rotate_token("fresh-token")
    assert client.update("contact", CONTACT, {"donotbulkemail": True}).value.found
    assert tokens.calls == 2 and sleeps == []


def expire_token_during_pause(standin, sleeps, new_token="fresh-token"):
    """A sleep that records the pause and meanwhile expires the client's token, as Dataverse would."""

    def pause(seconds):
        sleeps.append(seconds)
        standin.rotate_token(new_token)

    return pause


def test_a_read_back_that_meets_a_401_gets_one_fresh_token_and_goes_on(standin, sleeps):
    tokens = Tokens("local-token", "fresh-token")
    client = client_for(standin, expire_token_during_pause(standin, sleeps), tokens)
    standin.inject(Fault(drop=True, after=True))  # the PATCH commits, the answer is lost, then the token expires
    result = client.update("contact", CONTACT, {"donotbulkemail": True})
    assert result.value.found and tokens.calls == 2 and len(sleeps) == 1
    assert len(standin.writes) == 1  # the read-back (401, then 200 with a fresh token) found the write: not resent


def test_a_batch_read_back_that_meets_a_401_gets_one_fresh_token_and_goes_on(standin, sleeps):
    ids = seeded(standin, 3)
    tokens = Tokens("local-token", "fresh-token")
    client = client_for(standin, expire_token_during_pause(standin, sleeps), tokens)
    standin.inject(Fault(drop=True, after=True))  # the whole batch commits, then the connection drops
    result = client.update_many([Write("contact", i, {"donotbulkemail": True}) for i in ids])
    assert all(o.error is None and o.value.found for o in result.items) and tokens.calls == 2
    assert len(standin.writes) == 3


def test_row_reads_and_whoami_get_one_fresh_token_too(standin, sleeps):
    tokens = Tokens("local-token", "fresh-token")
    client = client_for(standin, sleeps, tokens, attempts=1)
    assert client.whoami()["UserId"]
    standin.rotate_token("fresh-token")
    assert client.read_row("contacts", CONTACT, ["donotbulkemail"]).get()["donotbulkemail"] is False
    standin.rotate_token("local-token")
    tokens.tokens.append("local-token")
    assert client.whoami()["UserId"] and tokens.calls == 3 and sleeps == []


def test_a_second_401_is_a_configuration_error(standin, sleeps):
    with pytest.raises(DataverseRejected) as caught:
        client_for(standin, sleeps, Tokens("wrong", "still-wrong")).update(
            "contact", CONTACT, {"donotbulkemail": True}
        ).get()
    assert caught.value.status == 401 and "DATAVERSE_URL" in str(caught.value)


def test_whoami(standin, sleeps):
    assert "UserId" in client_for(standin, sleeps).whoami()


def test_one_client_serves_many_threads(standin, sleeps):
    client = client_for(standin, sleeps)
    ids = [f"a1000000-0000-4000-8000-{n:012d}" for n in range(10, 40)]
    for row_id in ids:
        standin.add_row("contact", row_id, donotbulkemail=False)
    threads = [
        threading.Thread(target=client.update, args=("contact", row_id, {"donotbulkemail": True})) for row_id in ids
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(standin.row("contact", row_id)["donotbulkemail"] is True for row_id in ids)
    client.close()


# -- $batch: many writes in one request, each with its own outcome ----------------------------------------


def seeded(standin, n, table="contact", prefix="a1"):
    ids = [f"{prefix}000000-0000-4000-8000-{i:012d}" for i in range(100, 100 + n)]
    for row_id in ids:
        standin.add_row(table, row_id, donotbulkemail=False)
    return ids


def test_update_many_sends_one_batch_and_reports_each_write(standin, sleeps):
    ids = seeded(standin, 3)
    writes = [Write("contact", i, {"donotbulkemail": True}) for i in ids] + [
        Write("contact", MISSING, {"donotbulkemail": True})
    ]
    result = client_for(standin, sleeps).update_many(writes)
    assert [o.value.found for o in result.items] == [True, True, True, False]
    assert all(o.error is None for o in result.items)
    assert result.requests == 1 and [r.path for r in standin.requests] == ["/api/data/v9.2/$batch"]
    assert all(standin.row("contact", i)["donotbulkemail"] is True for i in ids)
    assert standin.row("contact", MISSING) is None and standin.client_bugs == []


def test_update_many_splits_at_1000_operations(standin, sleeps):
    ids = seeded(standin, 1001)
    # A 1,000-part $batch takes the stand-in longer than the other tests' 2 s timeout on a loaded machine.
    client = client_for(standin, sleeps, timeout=60.0)
    result = client.update_many([Write("contact", i, {"donotbulkemail": True}) for i in ids])
    assert result.requests == 2 and all(o.value.found for o in result.items)


def test_a_part_refused_for_good_fails_alone(standin, sleeps):
    ids = seeded(standin, 2)
    result = client_for(standin, sleeps).update_many(
        [Write("contact", ids[0], {"x_nosuchcolumn": 1}), Write("contact", ids[1], {"donotbulkemail": True})]
    )
    assert isinstance(result.items[0].error, DataverseRejected) and result.items[0].error.code == "0x0"
    assert result.items[1].value.found and result.items[1].error is None
    assert standin.row("contact", ids[1])["donotbulkemail"] is True


def test_a_throttled_part_is_sent_again_alone_after_its_retry_after(standin, sleeps):
    ids = seeded(standin, 3)
    standin.inject(Fault(status=429, retry_after=4, inner=True, path_contains=ids[1]))
    result = client_for(standin, sleeps).update_many([Write("contact", i, {"donotbulkemail": True}) for i in ids])
    assert all(o.error is None and o.value.found for o in result.items)
    assert result.requests == 2 and sleeps == [pytest.approx(4, abs=0.1)]
    batch, again = standin.requests  # the $batch of 3, then the throttled part alone, as a request of its own
    assert len([op for op in standin.operations if op.batch == batch.batch]) == 3 and batch.batch is not None
    assert again.batch is None and again.method == "PATCH" and again.path.endswith(f"({ids[1]})")
    assert len(standin.writes) == 3


def test_a_batch_whose_answer_was_lost_is_read_back_and_nothing_is_written_twice(standin, sleeps):
    ids = seeded(standin, 3)
    standin.inject(Fault(drop=True, after=True))  # the whole batch commits, then the connection drops
    result = client_for(standin, sleeps).update_many([Write("contact", i, {"donotbulkemail": True}) for i in ids])
    assert all(o.value.found for o in result.items)
    assert len(standin.writes) == 3 and result.requests == 2  # the batch, then one GET batch to read back


def test_a_batch_failing_transiently_throughout_reports_a_transient_error_per_write(standin, sleeps):
    ids = seeded(standin, 2)
    standin.set_fault_rate(1.0, [Fault(status=503)])
    result = client_for(standin, sleeps, attempts=3).update_many(
        [Write("contact", i, {"donotbulkemail": True}) for i in ids]
    )
    assert all(isinstance(o.error, DataverseUnavailable) for o in result.items)
    assert result.requests == 3 and standin.writes == []


def test_a_read_back_refused_for_good_rejects_at_once_with_dataverses_code_not_cannot_tell(standin, sleeps):
    client = client_for(standin, sleeps)
    result = client.update_many([Write("contact", CONTACT, {"x_nosuchcolumn": True})], verify_first=True)
    [outcome] = result.items
    assert isinstance(outcome.error, DataverseRejected) and outcome.error.code == "0x0"
    assert "x_nosuchcolumn" in str(outcome.error) and sleeps == [] and result.requests == 1
    with pytest.raises(DataverseRejected, match="x_nosuchcolumn"):
        client.update("contact", CONTACT, {"x_nosuchcolumn": True}, verify_first=True).get()
    assert standin.writes == []


def test_a_credential_that_cannot_sign_in_is_refused_with_what_check_connect_would_say(standin, sleeps):
    from azure.core.exceptions import ClientAuthenticationError

    class Expired:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("AADSTS7000222: The provided client secret keys for app '…' are expired.")

    client = DataverseClient(standin.url, Expired(), retry=RetryPolicy(attempts=3), timeout=2, sleep=sleeps)
    [outcome] = client.update_many([Write("contact", CONTACT, {"donotbulkemail": True})]).items
    assert isinstance(outcome.error, SignInFailed) and "client secret has expired" in str(outcome.error)
    with pytest.raises(SignInFailed):
        client.whoami()
    assert standin.requests == [] and sleeps == []


def test_no_retry_starts_after_the_deadline(standin, sleeps):
    standin.inject(Fault(status=429, retry_after=5))  # within max_retry_after: normally waited in process
    client = client_for(standin, sleeps, max_retry_after=30)
    result = client.update_many([Write("contact", CONTACT, {"donotbulkemail": True})], deadline=time.monotonic() + 1)
    [outcome] = result.items
    assert isinstance(outcome.error, DataverseUnavailable) and outcome.error.retry_after == 5
    assert sleeps == [] and result.requests == 1 and standin.writes == []


def test_a_refused_static_token_says_it_could_not_be_renewed(standin, sleeps):
    from optout_core.dataverse.auth import StaticTokenCredential

    client = DataverseClient(standin.url, StaticTokenCredential("wrong"), retry=RetryPolicy(), timeout=2, sleep=sleeps)
    with pytest.raises(DataverseRejected) as caught:
        client.whoami()
    assert caught.value.status == 401 and "gave the refused token again" in str(caught.value)
    assert len(standin.requests) == 1  # the same token is not sent twice


def test_an_answer_cut_off_mid_body_is_a_lost_answer_read_back_not_written_twice(standin, sleeps):
    standin.inject(Fault(cut=True, status=502))  # the PATCH commits, then its answer is cut off
    result = client_for(standin, sleeps).update("contact", CONTACT, {"donotbulkemail": True})
    assert result.value.found and len(standin.writes) == 1
    assert [r.method for r in standin.requests][-1] == "GET"  # the read-back found the write


def test_a_batch_answer_cut_off_mid_body_is_read_back_not_written_twice(standin, sleeps):
    ids = seeded(standin, 3)
    standin.inject(Fault(cut=True))  # the whole batch commits, then its answer is cut off
    result = client_for(standin, sleeps).update_many([Write("contact", i, {"donotbulkemail": True}) for i in ids])
    assert all(o.error is None and o.value.found for o in result.items)
    assert len(standin.writes) == 3 and result.requests == 2
