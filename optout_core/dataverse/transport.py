"""The only place a Dataverse Web API request is sent.

Every request — a write, a read-back, a row read, a ``$batch``, ``WhoAmI`` — goes through
:meth:`Transport.perform`, and so gets the same treatment:

* authentication, and **one fresh token** when Dataverse answers 401 (a token can expire between issue and use);
* the process-wide :class:`~optout_core.dataverse.throttle.ThrottleGate` (a 429 pauses every request of the
  process, and the gate bounds the requests in flight);
* retries as :func:`~optout_core.domain.policy.next_step` says, with back-off or the server's Retry-After;
* the judgement of a **lost answer**: a request that left but whose answer never arrived (read timeout, dropped
  connection, 502/504 from a gateway, a ``$batch`` answer that cannot be matched) may have committed, so before
  it is sent again the row is read back and, when it already holds the write, it is not written twice.

Operations go one request each, or together through ``$batch`` (up to 1,000 per request, ``continue-on-error``),
where each keeps its own outcome: a part that fails transiently goes again alone with the others that failed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optout_core.dataverse import odata_batch
from optout_core.dataverse.auth import AccessTokenLike, TokenCredentialLike, access_token
from optout_core.dataverse.errors import (
    LOST_ANSWER_STATUSES,
    DataverseError,
    DataverseRejected,
    DataverseUnavailable,
    SignInFailed,
    Undetermined,
    from_answer,
    longer_wait,
    sign_in_advice,
)
from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.throttle import ThrottleGate
from optout_core.domain.policy import FailurePolicy, RetryNow, next_step

if TYPE_CHECKING:
    import requests

API = "/api/data/v9.2"
_USER_AGENT = "optout (Dataverse Web API client; python-requests)"
# Refresh a cached token this long before it expires, so a request never leaves with a dying token.
_TOKEN_MARGIN_SECONDS = 300
log = logging.getLogger("optout.dataverse")


@dataclass(frozen=True, slots=True)
class ReadBack:
    """How to tell whether an unanswered write already took effect: the row holds ``expected``."""

    path: str
    expected: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Operation:
    request: Request
    missing_ok: bool = False  # a 404 is an answer (the row does not exist), not a failure
    read_back: ReadBack | None = None  # writes only; None: safe to send again (a read), or not checkable
    resend_when_lost: bool = True  # False for a create: sent twice it could make two rows


Result = Response | DataverseError


@dataclass(frozen=True, slots=True)
class _Lost:
    """No answer: ``sent`` when the request may have reached Dataverse (anything but a failed connect)."""

    sent: bool
    cause: str


@dataclass(frozen=True, slots=True)
class _Refused:
    """An error answer that stands for each part of a ``$batch`` (or a final 401), with what it refused."""

    answer: Response
    what: str


Answer = Response | _Lost | _Refused
_HELD = Response(204, {}, b"")  # the row already holds the write: as good as the write's own 204
_NOT_RENEWED = " and the credential gave the refused token again (a static token, or one it cannot renew)"


class Transport:
    def __init__(
        self,
        url: str,
        credential: TokenCredentialLike,
        *,
        policy: FailurePolicy,
        timeout: float,
        gate: ThrottleGate,
        sleep: Callable[[float], None],
    ) -> None:
        self.url = url.rstrip("/")
        self._credential = credential
        self._scope = f"{self.url}/.default"
        self._policy = policy
        self._timeout = timeout
        self._gate = gate
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token: AccessTokenLike | None = None
        self._session: requests.Session | None = None

    def perform(
        self,
        operations: Sequence[Operation],
        *,
        batch: bool,
        verify_first: bool = False,
        deadline: float | None = None,
    ) -> tuple[list[Result], int]:
        """Each operation's final answer (2xx, or 404 when ``missing_ok``) or error, and the requests it took.

        ``verify_first``: an earlier attempt may already have applied the writes (a redelivered message), so
        they are read back before anything is sent. ``deadline`` (``time.monotonic()``): no retry starts after
        it; what is left gets its transient error, for the caller to put back.
        """
        results: list[Result | None] = [None] * len(operations)
        pending = list(range(len(operations)))
        uncertain = set(pending) if verify_first else set()
        attempt = requests = 0
        last_real: DataverseError | None = None  # the last error from a write itself, not from a read-back
        try:
            while pending:
                failure: DataverseError | None = None
                checkable = [i for i in pending if i in uncertain and operations[i].read_back is not None]
                if checkable:
                    held, failure, sent = self._read_back(operations, checkable, batch)
                    requests += sent
                    for index, answer in held.items():
                        results[index] = answer
                    pending = [i for i in pending if i not in held]
                    if failure is None:
                        uncertain.clear()  # the rest is known not to hold its write yet
                if failure is None and pending:
                    retry, failure, lost, sent = self._send(operations, pending, results, batch)
                    requests += sent
                    pending, uncertain = retry, lost
                    last_real = failure or last_real
                if not pending:
                    break
                assert failure is not None
                attempt += 1
                step = next_step(failure.failure, attempt=attempt, policy=self._policy, can_put_back=False)
                if isinstance(step, RetryNow) and deadline is not None and time.monotonic() + step.delay > deadline:
                    log.info("dataverse: the time budget is used up; %d operation(s) left for later", len(pending))
                elif isinstance(step, RetryNow):
                    log.info(
                        "dataverse retry: %d operation(s), attempt=%d delay=%.2fs cause=%s",
                        len(pending),
                        attempt,
                        step.delay,
                        failure,
                    )
                    if step.throttled:
                        self._gate.hold(step.delay)  # every worker of this process waits, not just this one
                    else:
                        self._sleep(step.delay)
                    continue
                # The reason is the last real error, never a later read-back's "cannot tell".
                report = last_real if isinstance(failure, Undetermined) and last_real is not None else failure
                report.requests, report.attempts = requests, attempt
                for index in pending:
                    results[index] = report
                break
        except SignInFailed as refused:  # no token at all: every operation still open is refused alike
            refused.requests, refused.attempts = requests, attempt + 1
            for index in pending:
                if results[index] is None:
                    results[index] = refused
        final = [r for r in results if r is not None]
        assert len(final) == len(results), "every operation ends with an answer or an error"
        return final, requests

    # -- one round: every pending operation sent once ------------------------------------------------

    def _send(
        self, operations: Sequence[Operation], pending: list[int], results: list[Result | None], batch: bool
    ) -> tuple[list[int], DataverseError | None, set[int], int]:
        """Returns what to send again, the failure to report if retries run out, which of those may have
        committed, and the requests made."""
        retry: list[int] = []
        lost: set[int] = set()
        failure: DataverseError | None = None
        sent = 0
        for chunk, answers, count in self._exchange_all([operations[i].request for i in pending], pending, batch):
            sent += count
            for index, answer in zip(chunk, answers, strict=True):
                operation = operations[index]
                error: DataverseError
                if isinstance(answer, _Lost):
                    maybe_done, error = answer.sent, DataverseUnavailable(answer.cause)
                else:
                    response = answer.answer if isinstance(answer, _Refused) else answer
                    if 200 <= response.status < 300 or (response.status == 404 and operation.missing_ok):
                        results[index] = response
                        continue
                    maybe_done, error = response.status in LOST_ANSWER_STATUSES, self._error(answer)
                if not isinstance(error, DataverseUnavailable):
                    results[index] = error
                elif maybe_done and not operation.resend_when_lost:  # a create: look, never make it twice
                    results[index] = Undetermined(f"{error}; it may have been carried out: look before redoing it")
                else:
                    retry.append(index)
                    if maybe_done:
                        lost.add(index)
                    failure = longer_wait(failure, error)
        return retry, failure, lost, sent

    def _read_back(
        self, operations: Sequence[Operation], indexes: list[int], batch: bool
    ) -> tuple[dict[int, Result], Undetermined | None, int]:
        """Reads the rows of possibly-applied writes. Index → final result for those already holding their write
        (a 204), gone (the 404) or whose read was refused for good (the error, e.g. a column that does not exist:
        the write would be refused too); and :class:`Undetermined` when a read could not tell."""
        settled: dict[int, Result] = {}
        sent = 0
        reads = []
        for index in indexes:
            check = operations[index].read_back
            assert check is not None
            reads.append(Request("GET", f"{check.path}?$select={','.join(check.expected)}", {}))
        for chunk, answers, count in self._exchange_all(reads, indexes, batch):
            sent += count
            for index, answer in zip(chunk, answers, strict=True):
                check = operations[index].read_back
                assert check is not None
                if isinstance(answer, _Lost):
                    return settled, Undetermined(answer.cause), sent
                response = answer.answer if isinstance(answer, _Refused) else answer
                if response.status == 404:
                    settled[index] = response
                    continue
                if response.status != 200:
                    error = self._error(answer)
                    if isinstance(error, DataverseRejected):
                        settled[index] = error
                        continue
                    return settled, Undetermined(str(error)), sent
                try:
                    row = json.loads(response.body)
                except ValueError:
                    return settled, Undetermined("Dataverse's read-back answer was not JSON"), sent
                if all(row.get(column) == value for column, value in check.expected.items()):
                    log.info("dataverse read-back: row already holds the update; not written again")
                    settled[index] = _HELD
        return settled, None, sent

    def _error(self, answer: Response | _Refused) -> DataverseError:
        """What an error answer means; a whole ``$batch`` or final-401 answer says what it refused."""
        response, what = (answer.answer, answer.what) if isinstance(answer, _Refused) else (answer, "")
        return from_answer(response.status, response.headers, response.body, what, self._policy.retry_after_cap)

    def _exchange_all(
        self, requests: list[Request], indexes: list[int], batch: bool
    ) -> list[tuple[list[int], list[Answer], int]]:
        """Sends ``requests`` one by one, or in ``$batch`` chunks; each chunk's indexes, answers and requests."""
        if not batch:
            out: list[tuple[list[int], list[Answer], int]] = []
            for index, request in zip(indexes, requests, strict=True):
                answer, count = self._exchange(request)
                out.append(([index], [answer], count))
            return out
        chunks = []
        for start in range(0, len(requests), odata_batch.MAX_OPERATIONS):
            part = requests[start : start + odata_batch.MAX_OPERATIONS]
            chunk = indexes[start : start + odata_batch.MAX_OPERATIONS]
            answers, count = self._exchange_batch(part)
            chunks.append((chunk, answers, count))
        return chunks

    def _exchange_batch(self, requests: list[Request]) -> tuple[list[Answer], int]:
        """One ``$batch`` request: each operation's answer, in order. A whole-batch failure is every part's."""
        content_type, body = odata_batch.build(requests)
        headers = {"Content-Type": content_type, "Prefer": "odata.continue-on-error"}
        answer, count = self._exchange(Request("POST", f"{API}/$batch", headers, body))
        if isinstance(answer, (_Lost, _Refused)):
            return [answer] * len(requests), count
        if answer.status != 200:
            return [_Refused(answer, " to $batch")] * len(requests), count
        try:
            parts = odata_batch.parse(answer.headers.get("Content-Type", ""), answer.body)
        except odata_batch.BatchFormatError:
            parts = []
        if len(parts) != len(requests):  # an answer we cannot match to the operations: as good as lost
            unmatched = _Lost(sent=True, cause="Dataverse's $batch answer did not match the request")
            return [unmatched] * len(requests), count
        return list(parts), count

    # -- one HTTP exchange ------------------------------------------------------------------------

    def _exchange(self, request: Request) -> tuple[Response | _Lost | _Refused, int]:
        """Send once; on a 401, once more with a token obtained anew (see :func:`auth.access_token`).
        The answer and the requests made."""
        import requests  # lazy: the router never pays for it

        token = self._access_token()
        for count in (1, 2):
            try:
                answer = self._http(request, token)
            except (requests.ConnectionError, requests.Timeout) as exc:
                # Only a failed connect proves the request never left; anything later may have committed.
                sent = not isinstance(exc, requests.ConnectTimeout)
                return _Lost(sent=sent, cause=f"Dataverse unreachable: {type(exc).__name__}"), count
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
                # The answer was cut off mid-body: the request arrived, and a write may have committed.
                return _Lost(sent=True, cause=f"Dataverse's answer was cut off: {type(exc).__name__}"), count
            if answer.status != 401:
                return answer, count
            if count == 1:
                refused, token = (
                    token,
                    self._access_token(refused=token, challenge=answer.headers.get("WWW-Authenticate")),
                )
                if token == refused:  # the credential cannot issue another token (a static one, or a cache)
                    return _Refused(answer, _NOT_RENEWED), count
        return _Refused(answer, " to a token obtained anew after a first 401"), count

    def _http(self, request: Request, token: str) -> Response:
        import requests

        headers = {
            "User-Agent": _USER_AGENT,
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            **request.headers,
        }
        # Prepared directly and sent on the pooled session: no cookie jar, auth or hook merging per request
        # (the bearer header is the only credential, and Dataverse's cookies are not needed).
        prepared = requests.PreparedRequest()
        prepared.prepare(method=request.method, url=self.url + request.path, headers=headers, data=request.body)
        session = self._get_session()
        with self._gate:
            r = session.send(prepared, timeout=self._timeout, allow_redirects=False)
            if r.status_code == 429:  # told before this request leaves the gate: the others stay back
                self._gate.refused()
        return Response(r.status_code, r.headers, r.content)

    def _get_session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                import requests
                from requests.adapters import HTTPAdapter

                session = requests.Session()
                # Enough pooled connections for the worker's thread pool; retries are ours, not urllib3's.
                adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                # Proxy and CA-bundle variables are read once here instead of on every request (requests
                # re-reads the environment per call otherwise, a sizeable share of a loopback write).
                session.proxies.update(requests.utils.get_environ_proxies(self.url))
                bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                if bundle:
                    session.verify = bundle
                session.trust_env = False
                self._session = session
            return self._session

    def _access_token(self, *, refused: str | None = None, challenge: str | None = None) -> str:
        """The token to send: the cached one while it is good, or — after Dataverse refused ``refused`` — one
        obtained anew (once: threads that saw the same refused token share the replacement). A sign-in that
        fails raises :class:`SignInFailed` (permanent), explained as ``check --connect`` would."""
        from azure.core.exceptions import ClientAuthenticationError

        with self._lock:
            token = self._token
            try:
                if refused is not None and token is not None and token.token == refused:
                    token = self._token = access_token(
                        self._credential, self._scope, refused=token, challenge=challenge
                    )
                elif token is None or token.expires_on - _TOKEN_MARGIN_SECONDS <= time.time():
                    token = self._token = access_token(self._credential, self._scope)
            except ClientAuthenticationError as exc:
                raise SignInFailed(sign_in_advice(exc)) from None
            return token.token

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
