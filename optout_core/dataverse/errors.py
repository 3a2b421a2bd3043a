"""The Dataverse Web API's failures: what an answer means, and what an administrator should do about it.

Every non-success answer (or ``$batch`` part) becomes one of two errors: :class:`DataverseUnavailable`
(429, 5xx, 408, timeouts, lost answers: a later try may succeed) or :class:`DataverseRejected` (the request
or the configuration is wrong). The advice for the error codes an administrator can fix is written once,
in :func:`advice`, and shared by the outcome reasons and ``check --connect``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from optout_core.domain.errors import OptOutError, PermanentError, TransientError
from optout_core.domain.retry import RetryPolicy

# A gateway that answers 502/504 may have passed the request on: the write may have committed.
LOST_ANSWER_STATUSES = frozenset({502, 504})
NO_APPLICATION_USER = "0x80072560"


class DataverseError(OptOutError):
    """The Dataverse Web API refused or could not serve a request.

    ``code`` and ``message`` are the Web API's ``error.code`` / ``error.message``; ``request_id`` is the
    ``x-ms-service-request-id`` header, which Microsoft support asks for.
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        requests: int = 0,
        attempts: int = 0,
    ) -> None:
        super().__init__(reason)
        self.requests = requests  # HTTP requests made before giving up, retries included
        self.attempts = attempts  # tries of this request made in this process before giving up
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after


class DataverseRejected(DataverseError, PermanentError):
    """400/403/405/412/413 or a repeated 401: the request itself or the configuration is wrong."""


class DataverseUnavailable(DataverseError, TransientError):
    """429, 5xx, 408, timeouts or connection errors that outlived the retry policy."""


def from_answer(status: int, headers: Mapping[str, str], body: bytes, what: str = "") -> DataverseError:
    """The error a non-success answer (or ``$batch`` part) stands for, with the Web API's code and message
    and, when permanent, the administrator's advice."""
    code, message = _error_body(body)
    request_id = headers.get("x-ms-service-request-id")
    reason = f"Dataverse answered {status}{what}{_describe(code, message)}"
    if RetryPolicy.is_transient_status(status):
        retry_after = retry_after_seconds(headers) if status == 429 else None
        return DataverseUnavailable(
            reason, status=status, code=code, message=message, request_id=request_id, retry_after=retry_after
        )
    hint = advice(status, code)
    return DataverseRejected(
        reason + (f" - {hint}" if hint else ""), status=status, code=code, message=message, request_id=request_id
    )


def advice(status: int | None, code: str | None) -> str:
    """What an administrator should change, for the answers a configuration causes ("" when none applies)."""
    if code == NO_APPLICATION_USER:
        return (
            "the identity has no application user in this environment: add one (Power Platform admin center > "
            "Environments > Settings > Application users) with the identity's client id and the optout security role"
        )
    if status == 403:
        return (
            "the application user exists but its security role is missing a privilege: grant Read and Write on "
            "contact, lead and account"
        )
    if status == 401:
        return (
            "Dataverse refused the token, freshly issued: DATAVERSE_URL may belong to another tenant, or the "
            "token was issued for another resource (scope <DATAVERSE_URL>/.default)"
        )
    if status == 404:
        return "check DATAVERSE_URL: it must be the environment root, e.g. https://contoso.crm.dynamics.com"
    return ""


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` as seconds: Dataverse sends delta-seconds; an HTTP date is tolerated."""
    value = headers.get("Retry-After") or headers.get("retry-after")  # $batch part headers are lower-cased
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


def _error_body(body: bytes) -> tuple[str | None, str | None]:
    """The Web API's ``error.code`` and ``error.message``, when the body carries them."""
    try:
        error = json.loads(body or b"{}").get("error") or {}
        code, message = error.get("code"), error.get("message")
    except (ValueError, AttributeError):
        return None, None
    return (code if isinstance(code, str) else None, message[:500] if isinstance(message, str) else None)


def _describe(code: str | None, message: str | None) -> str:
    parts = [p for p in (code, message) if p]
    return f" ({': '.join(parts)})" if parts else ""
