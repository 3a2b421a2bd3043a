"""The bearer token (optout_core.dataverse.auth.BearerToken) and the sender that signs with it (Authorized):
cached while good, refreshed before it expires, replaced once after a 401."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from optout_core.dataverse.auth import Authorized, BearerToken
from optout_core.dataverse.errors import SignInFailed
from optout_core.dataverse.odata_batch import Request
from optout_core.dataverse.sender import Refused
from tests.support.fake_sender import FakeSender, answer

ROOT = Path(__file__).resolve().parents[2]
SCOPE = "https://contoso.crm.dynamics.com/.default"
GET = Request("GET", "/api/data/v9.2/WhoAmI")


class Tokens:
    """A credential that hands out the given tokens in turn (the last one again when they run out)."""

    def __init__(self, *tokens, lifetime=3600):
        self.tokens, self.lifetime, self.calls = list(tokens), lifetime, []
        self.lock = threading.Lock()

    def get_token(self, *scopes, **kwargs):
        with self.lock:
            self.calls.append((scopes, kwargs))
            token = self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]
        return AccessToken(token, int(time.time() + self.lifetime))


def bearer(request):
    return request.headers["Authorization"]


def test_the_token_is_asked_for_once_and_reused_while_good():
    tokens = Tokens("one", "two")
    token = BearerToken(tokens, SCOPE)
    assert [token.current(), token.current()] == ["one", "one"]
    assert [scopes for scopes, _ in tokens.calls] == [(SCOPE,)]


def test_a_token_within_the_margin_of_its_expiry_is_refreshed_before_use():
    tokens = Tokens("dying", "fresh", lifetime=60)
    token = BearerToken(tokens, SCOPE, margin=300)
    assert [token.current(), token.current()] == ["dying", "fresh"]


def test_a_refused_token_is_replaced_once_for_every_thread_that_saw_it():
    tokens = Tokens("old", "new", "newer")
    token = BearerToken(tokens, SCOPE)
    refused = token.current()
    assert token.replace(refused, None) == "new"
    assert token.replace(refused, None) == "new"  # a second thread with the same refused token: no new sign-in
    assert len(tokens.calls) == 2


def test_a_failed_sign_in_is_refused_with_the_administrators_advice():
    class Expired:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("AADSTS7000222: the client secret keys are expired")

    with pytest.raises(SignInFailed, match="client secret has expired"):
        BearerToken(Expired(), SCOPE).current()


def test_every_request_is_signed_with_the_bearer_token():
    sender = FakeSender(204)
    assert Authorized(sender, BearerToken(Tokens("one"), SCOPE)).send(GET).status == 204
    assert [bearer(r) for r in sender.requests] == ["Bearer one"]
    assert GET.headers == {}  # the caller's request is not changed


def test_a_401_is_sent_once_more_with_a_token_obtained_anew():
    sender = FakeSender(answer(401), 204)
    assert Authorized(sender, BearerToken(Tokens("old", "new"), SCOPE)).send(GET).status == 204
    assert [bearer(r) for r in sender.requests] == ["Bearer old", "Bearer new"]


def test_a_second_401_is_refused_as_such():
    sender = FakeSender(401, 401)
    reply = Authorized(sender, BearerToken(Tokens("old", "new"), SCOPE)).send(GET)
    assert isinstance(reply, Refused) and reply.answer.status == 401 and "obtained anew" in reply.what


def test_a_credential_that_gives_the_refused_token_again_is_not_asked_to_send_it_twice():
    sender = FakeSender(401, 204)
    reply = Authorized(sender, BearerToken(Tokens("static"), SCOPE)).send(GET)
    assert isinstance(reply, Refused) and "gave the refused token again" in reply.what
    assert len(sender.requests) == 1


_STATIC_CHILD = """
import json, sys
from optout_core.app.services import build_dataverse_client
from optout_core.dataverse.auth import BearerToken, StaticTokenCredential, dataverse_credential
from optout_core.domain.settings import Settings
settings = Settings.from_env({"DATAVERSE_URL": "http://127.0.0.1:9", "DATAVERSE_TOKEN": "local-token"})
build_dataverse_client(settings)
token = BearerToken(dataverse_credential(settings), "http://127.0.0.1:9/.default")
assert token.current() == "local-token" and token.replace("local-token", None) == "local-token"
print(json.dumps(sorted(name for name in sys.modules if name.startswith(("azure.core", "azure.identity")))))
"""


def test_a_static_token_never_loads_azure_core_or_azure_identity():
    child = subprocess.run(
        [sys.executable, "-c", _STATIC_CHILD], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(child.stdout.splitlines()[-1]) == []


def test_a_sign_in_failure_still_ends_as_signin_failed_once_azure_core_is_loaded():
    class Refusing:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("AADSTS700016: application not found")

    with pytest.raises(SignInFailed):
        BearerToken(Refusing(), SCOPE).current()
