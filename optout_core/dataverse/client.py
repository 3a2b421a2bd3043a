"""A thin Dataverse Web API client for the one write this app makes: update a row, never create one.

Follows the Azure SDK shape: it takes the environment URL and a ``TokenCredential``. It uses the Web API
as it really behaves: ``If-Match: *`` turns PATCH into update-only (404 instead of a silent upsert-create),
429 carries ``Retry-After`` in seconds, 5xx/408/timeouts are transient, 401 means "get a new token once".
Retries follow :class:`~optout_core.retry.RetryPolicy`; what remains raises a
:class:`~optout_core.errors.DataverseRejected` (permanent) or
:class:`~optout_core.errors.DataverseUnavailable` (transient).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from optout_core.dataverse import odata_batch as batch
from optout_core.dataverse.errors import DataverseError, DataverseRejected, DataverseUnavailable
from optout_core.domain.model import ENTITY_SETS
from optout_core.domain.retry import RetryPolicy
from optout_core.dataverse.throttle import ThrottleGate

API = "/api/data/v9.2"
_USER_AGENT = "optout (Dataverse Web API client; python-requests)"
log = logging.getLogger("optout.dataverse")

# Refresh a cached token this long before it expires, so a request never leaves with a dying token.
_TOKEN_MARGIN_SECONDS = 300


class TokenCredential(Protocol):
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        """An object with ``token`` and ``expires_on`` (azure.core.credentials.AccessToken)."""


@dataclass(frozen=True)
class WriteResult:
    found: bool     # False: the row does not exist (404); nothing was written or created
    requests: int   # HTTP requests it took, retries included


@dataclass(frozen=True, slots=True)
class Write:
    """One row update of a batch."""

    table: str
    row_id: str
    changes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    found: bool = True                    # False: the row does not exist (404); nothing created
    error: DataverseError | None = None   # set when this write failed: permanent, or transient after retries


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[WriteOutcome]          # one per write, in order
    requests: int                         # HTTP requests (a $batch is one), retries and read-backs included


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class DataverseClient:
    """Updates contact, lead and account rows through the Dataverse Web API (v9.2)."""

    def __init__(self, url: str, credential: TokenCredential, *, retry: RetryPolicy = RetryPolicy(),
                 timeout: float = 30.0, max_concurrency: int = 8, sleep: Callable[[float], None] = time.sleep,
                 gate: ThrottleGate | None = None) -> None:
        self.url = url.rstrip("/")
        self._credential = credential
        self._scope = f"{self.url}/.default"
        self._retry = retry
        self._timeout = timeout
        self._sleep = sleep
        self._gate = gate or ThrottleGate(max_concurrency, sleep=sleep)
        self._lock = threading.Lock()
        self._token: Any = None
        self._session: Any = None

    def update(self, table: str, row_id: str, changes: Mapping[str, Any], *,
               verify_first: bool = False) -> WriteResult:
        """PATCH ``changes`` onto an existing row; a missing row is reported, never created.

        After an answer that was lost in flight (a read timeout, a dropped connection, a 502/504) the
        write may have committed, so before writing again the row is read back and, when it already
        holds ``changes``, not written twice. ``verify_first`` does the same before the first write
        (for a message Service Bus is delivering again).
        """
        entity_set = ENTITY_SETS[table]
        path = f"{API}/{entity_set}({row_id})"
        body = json.dumps(dict(changes), separators=(",", ":")).encode("utf-8")
        response, requests = self._send("PATCH", path, body, {"If-Match": "*", "Content-Type": "application/json"},
                                        missing_ok=True, verify=lambda: self._holds(path, changes),
                                        verify_first=verify_first)
        return WriteResult(found=response.status != 404, requests=requests)

    def update_many(self, writes: Sequence[Write], *, verify_first: bool = False) -> BatchResult:
        """Apply many updates through ``$batch`` (up to 1,000 per request, ``continue-on-error``).

        Each write keeps its own outcome: a part that fails transiently (429, 5xx) goes again in the next
        round, alone with the others that failed; parts that succeeded are never sent again. After a
        batch whose answer was lost, the rows are read back (one GET batch) before anything is re-sent.
        """
        outcomes: list[WriteOutcome | None] = [None] * len(writes)
        pending, requests, attempt = list(range(len(writes))), 0, 0
        uncertain = verify_first
        while pending:
            failure: DataverseUnavailable | None = None
            if uncertain:
                held, sent = self._held(writes, pending)
                requests += sent
                if held is None:
                    failure = DataverseUnavailable("Dataverse did not answer whether earlier writes took effect")
                else:
                    for index, found in held.items():
                        outcomes[index] = WriteOutcome(found=found)
                    pending = [index for index in pending if index not in held]
                    uncertain = False
                    if not pending:
                        break
            retry_after = None
            if failure is None:
                pending, retry_after, uncertain, failure, sent = self._batch_round(writes, pending, outcomes)
                requests += sent
                if not pending:
                    break
            attempt += 1
            delay = self._retry.delay(attempt, retry_after=retry_after)
            if delay is None:
                for index in pending:
                    outcomes[index] = WriteOutcome(error=failure)
                break
            log.info("dataverse batch retry: %d writes, attempt=%d delay=%.2fs cause=%s",
                     len(pending), attempt, delay, failure)
            if retry_after is not None:
                self._gate.hold(delay)  # every worker of this process waits, not just this one
            else:
                self._sleep(delay)
        return BatchResult([outcome or WriteOutcome() for outcome in outcomes], requests)

    def _batch_round(self, writes: Sequence[Write], pending: list[int], outcomes: list[WriteOutcome | None]
                     ) -> tuple[list[int], float | None, bool, DataverseUnavailable | None, int]:
        """Send every pending write once. Returns what to retry, the longest Retry-After, whether the
        retried writes may have committed, the failure to report if retries run out, and requests sent."""
        import requests as http

        retry, retry_after, uncertain, failure, sent = [], None, False, None, 0
        for start in range(0, len(pending), batch.MAX_OPERATIONS):
            chunk = pending[start:start + batch.MAX_OPERATIONS]
            operations = [batch.Operation("PATCH", f"{API}/{ENTITY_SETS[writes[i].table]}({writes[i].row_id})",
                                          {"Content-Type": "application/json", "If-Match": "*"},
                                          json.dumps(dict(writes[i].changes), separators=(",", ":")).encode())
                          for i in chunk]
            content_type, body = batch.build(operations)
            headers = {"Content-Type": content_type, "Prefer": "odata.continue-on-error"}
            sent += 1
            try:
                response = self._request("POST", f"{API}/$batch", body, headers, fresh_token=False)
                if response.status == 401:  # the token expired in between: once more with a fresh one
                    sent += 1
                    response = self._request("POST", f"{API}/$batch", body, headers, fresh_token=True)
            except (http.ConnectionError, http.Timeout) as exc:
                retry += chunk
                uncertain |= not isinstance(exc, http.ConnectTimeout)
                failure = DataverseUnavailable(f"Dataverse unreachable: {type(exc).__name__}")
                continue
            if response.status != 200:
                whole = _failure(response, " to $batch")
                if isinstance(whole, DataverseUnavailable):
                    retry += chunk
                    uncertain |= response.status in (502, 504)
                    retry_after, failure = _longest(retry_after, whole.retry_after), whole
                else:
                    for index in chunk:
                        outcomes[index] = WriteOutcome(error=whole)
                continue
            try:
                parts = batch.parse(response.headers.get("Content-Type", ""), response.body)
            except batch.BatchFormatError:
                parts = []
            if len(parts) != len(chunk):  # an answer we cannot match to the writes: treat as lost
                retry += chunk
                uncertain = True
                failure = DataverseUnavailable("Dataverse's $batch answer did not match the request")
                continue
            for index, part in zip(chunk, parts):
                if 200 <= part.status < 300 or part.status == 404:
                    outcomes[index] = WriteOutcome(found=part.status != 404)
                    continue
                error = _failure(_Response(part.status, part.headers, part.body))
                if isinstance(error, DataverseUnavailable):
                    retry.append(index)
                    uncertain |= part.status in (502, 504)
                    retry_after, failure = _longest(retry_after, error.retry_after), error
                else:
                    outcomes[index] = WriteOutcome(error=error)
        if failure is not None:
            failure.requests = sent
            failure.retry_after = retry_after
        return retry, retry_after, uncertain, failure, sent

    def _held(self, writes: Sequence[Write], pending: list[int]) -> tuple[dict[int, bool] | None, int]:
        """Read the pending rows back (GETs in $batch): index → found, for rows already holding their
        update or gone. None when the read-back failed."""
        held: dict[int, bool] = {}
        sent = 0
        checkable = [i for i in pending if _comparable(writes[i].changes)]
        for start in range(0, len(checkable), batch.MAX_OPERATIONS):
            chunk = checkable[start:start + batch.MAX_OPERATIONS]
            operations = [batch.Operation(
                "GET", f"{API}/{ENTITY_SETS[writes[i].table]}({writes[i].row_id})?$select={','.join(writes[i].changes)}",
                {"Accept": "application/json"}) for i in chunk]
            content_type, body = batch.build(operations)
            sent += 1
            try:
                response = self._request("POST", f"{API}/$batch", body,
                                         {"Content-Type": content_type, "Prefer": "odata.continue-on-error"},
                                         fresh_token=False)
                parts = batch.parse(response.headers.get("Content-Type", ""), response.body)
            except Exception:  # noqa: BLE001 — any failure: cannot tell yet
                return None, sent
            if response.status != 200 or len(parts) != len(chunk):
                return None, sent
            for index, part in zip(chunk, parts):
                if part.status == 404:
                    held[index] = False
                elif part.status == 200:
                    try:
                        row = json.loads(part.body)
                    except ValueError:
                        return None, sent
                    if _holds_all(row, writes[index].changes):
                        held[index] = True
                else:
                    return None, sent
        return held, sent

    def read_row(self, entity_set: str, row_id: str, select: Sequence[str] = ()) -> dict[str, Any] | None:
        """GET one row with its annotations (formatted values, lookup tables); None when it does not exist."""
        query = f"?$select={','.join(select)}" if select else ""
        response, _ = self._send("GET", f"{API}/{entity_set}({row_id}){query}", None,
                                 {"Prefer": 'odata.include-annotations="*"'}, missing_ok=True)
        return None if response.status == 404 else json.loads(response.body)

    def whoami(self) -> dict[str, Any]:
        """The ``WhoAmI`` function: proves the URL, the token and the application user in one call."""
        response, _ = self._send("GET", f"{API}/WhoAmI", None, {}, missing_ok=False)
        return json.loads(response.body)

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    # -- transport -------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], *,
              missing_ok: bool, verify: Callable[[], _Response | bool | None] | None = None,
              verify_first: bool = False) -> tuple[_Response, int]:
        """Send with retries. Returns a 2xx (or, when ``missing_ok``, 404) response and the requests made.

        ``verify`` reads back whether an earlier, unanswered try already took effect.
        """
        import requests  # lazy: the router never pays for it

        attempt = sent = 0
        refresh_token = token_refreshed = False
        uncertain = verify_first
        while True:
            if uncertain and verify is not None:
                sent += 1
                settled = verify()
                if isinstance(settled, _Response):
                    return settled, sent
                if settled is None:  # the read-back failed too: never write blind, read again later
                    attempt += 1
                    self._wait_or_raise(attempt, None, DataverseUnavailable(
                        "Dataverse did not answer whether an earlier write took effect"), sent)
                    continue
                uncertain = False
            attempt += 1
            sent += 1
            try:
                response = self._request(method, path, body, headers, fresh_token=refresh_token)
            except (requests.ConnectionError, requests.Timeout) as exc:
                # Only a failed connect proves the request never left; anything later may have committed.
                uncertain = not isinstance(exc, requests.ConnectTimeout)
                failure = DataverseUnavailable(f"Dataverse unreachable: {type(exc).__name__}")
                self._wait_or_raise(attempt, None, failure, sent)
                continue
            finally:
                refresh_token = False
            status = response.status
            uncertain = status in (502, 504)  # a gateway lost the answer; the write may have committed
            if 200 <= status < 300 or (status == 404 and missing_ok):
                return response, sent
            if status == 401 and not token_refreshed:
                # A token can expire between issue and use: fetch a new one, once, without using up a try.
                refresh_token = token_refreshed = True
                attempt -= 1
                continue
            failure = _failure(response)
            if isinstance(failure, DataverseUnavailable):
                self._wait_or_raise(attempt, failure.retry_after, failure, sent)
                continue
            failure.requests = sent
            raise failure

    def _holds(self, path: str, changes: Mapping[str, Any]) -> _Response | bool | None:
        """One read-back: a 204 when the row already holds ``changes``, the 404 when it is gone, False when
        it does not hold them yet (write), None when the read itself failed (cannot tell)."""
        if not _comparable(changes):
            return False
        try:
            response = self._request("GET", f"{path}?$select={','.join(changes)}", None, {}, fresh_token=False)
        except Exception:  # noqa: BLE001 — a failed read-back only means "cannot tell yet"
            return None
        if response.status == 404:
            return response
        if response.status != 200:
            return None
        try:
            row = json.loads(response.body)
        except ValueError:
            return None
        if _holds_all(row, changes):
            log.info("dataverse read-back: row already holds the update; not written again")
            return _Response(204, {}, b"")
        return False

    def _wait_or_raise(self, attempt: int, retry_after: float | None, failure: DataverseUnavailable,
                       sent: int) -> None:
        delay = self._retry.delay(attempt, retry_after=retry_after)
        if delay is None:
            failure.requests = sent
            raise failure
        log.info("dataverse retry: attempt=%d delay=%.2fs cause=%s", attempt, delay, failure)
        if retry_after is not None:
            self._gate.hold(delay)  # every worker of this process waits, not just this one
        else:
            self._sleep(delay)

    def _request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], *,
                 fresh_token: bool) -> _Response:
        session = self._get_session()
        all_headers = {
            "Authorization": f"Bearer {self._access_token(fresh=fresh_token)}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            **headers,
        }
        # Prepared directly and sent on the pooled session: no cookie jar, auth or hook merging per request
        # (the bearer header is the only credential, and Dataverse's cookies are not needed).
        prepared = self._prepare(method, self.url + path, body, all_headers)
        with self._gate:
            r = session.send(prepared, timeout=self._timeout, allow_redirects=False)
        return _Response(r.status_code, r.headers, r.content)

    @staticmethod
    def _prepare(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Any:
        import requests

        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=url, headers={"User-Agent": _USER_AGENT, **headers}, data=body)
        return prepared

    def _get_session(self) -> Any:
        with self._lock:
            if self._session is None:
                import requests

                session = requests.Session()
                # Enough pooled connections for the worker's thread pool; retries are ours, not urllib3's.
                adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
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

    def _access_token(self, *, fresh: bool) -> str:
        with self._lock:
            token = self._token
            if fresh or token is None or token.expires_on - _TOKEN_MARGIN_SECONDS <= time.time():
                token = self._token = self._credential.get_token(self._scope)
            return token.token


def _failure(response: _Response, what: str = "") -> DataverseError:
    """The error a non-success answer (or $batch part) stands for: transient (429, 5xx, 408, with the
    429's Retry-After) or permanent, with the Web API's code and message and, for the latter, advice."""
    status, error = response.status, _error(response)
    reason = f"Dataverse answered {status}{what}{_describe(error)}"
    if status == 429 or RetryPolicy.is_transient_status(status):
        retry_after = _retry_after(response.headers) if status == 429 else None
        return DataverseUnavailable(reason, status=status, retry_after=retry_after, **error)
    return DataverseRejected(reason + _advice(status, error), status=status, **error)


def _comparable(changes: Mapping[str, Any]) -> bool:
    """Lookup bindings (``x@odata.bind``) cannot be checked by reading the column back."""
    return all("@" not in column for column in changes)


def _holds_all(row: Mapping[str, Any], changes: Mapping[str, Any]) -> bool:
    return all(row.get(column) == value for column, value in changes.items())


def _error(response: _Response) -> dict[str, str | None]:
    """The Web API's ``error.code`` / ``error.message`` and the request id, when present."""
    code = message = None
    try:
        error = json.loads(response.body or b"{}").get("error") or {}
        code, message = error.get("code"), error.get("message")
    except (ValueError, AttributeError):
        pass
    return {"code": code if isinstance(code, str) else None,
            "message": message[:500] if isinstance(message, str) else None,
            "request_id": response.headers.get("x-ms-service-request-id")}


def _describe(error: Mapping[str, str | None]) -> str:
    parts = [p for p in (error.get("code"), error.get("message")) if p]
    return f" ({': '.join(parts)})" if parts else ""


def _advice(status: int, error: Mapping[str, str | None]) -> str:
    if error.get("code") == "0x80072560":
        return " - the identity has no application user in this environment: add one in the Power Platform admin center"
    if status == 403:
        return " - the application user's security role lacks a privilege (Write on contact, lead and account)"
    if status == 401:
        return " - a fresh token was refused too: check DATAVERSE_URL and the identity"
    if status == 404:
        return " - check DATAVERSE_URL: it must be the environment root, e.g. https://contoso.crm.dynamics.com"
    return ""


def _longest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` as seconds: Dataverse sends delta-seconds; an HTTP date is tolerated."""
    value = headers.get("Retry-After") or headers.get("retry-after")  # batch part headers are lower-cased
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # rare: Dataverse sends seconds

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
