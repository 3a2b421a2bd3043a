"""The Dataverse Web API's failures: what an answer means, and what an administrator should do about it.

Every non-success answer (or ``$batch`` part) becomes one of two errors: :class:`DataverseUnavailable`
(429, 5xx, 408, timeouts, lost answers: a later try may succeed) or :class:`DataverseRejected` (the request
or the configuration is wrong). The advice for the error codes an administrator can fix is written once,
in :func:`advice`, and shared by the outcome reasons and ``check --connect``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from optout_core.domain.errors import OptOutError, PermanentError, TransientError
from optout_core.domain.retry import RetryPolicy

# A gateway that answers 502/504 may have passed the request on: the write may have committed.
LOST_ANSWER_STATUSES = frozenset({502, 504})
log = logging.getLogger("optout.dataverse")
NO_APPLICATION_USER = "0x80072560"


class DataverseError(OptOutError):
    """The Dataverse Web API refused or could not serve a request.

    ``code`` and ``message`` are the Web API's ``error.code`` / ``error.message``; ``request_id`` is the
    ``x-ms-service-request-id`` header, which Microsoft support asks for. What it took (requests, tries) is not
    the error's to say: :class:`~optout_core.dataverse.result.Attempt` records it next to the error.
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
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after

    def details(self) -> dict[str, Any]:
        """What the Web API said besides the reason, to build the same error with another reason from."""
        return {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "request_id": self.request_id,
            "retry_after": self.retry_after,
        }


class DataverseRejected(DataverseError, PermanentError):
    """400/403/405/412/413 or a repeated 401: the request itself or the configuration is wrong."""


class DataverseUnavailable(DataverseError, TransientError):
    """429, 5xx, 408, timeouts or connection errors that outlived the retry policy."""


class OutOfTime(DataverseUnavailable):
    """The throttle gate would stay closed past the caller's time budget: the request was not sent, and the work
    goes back to its queue (or to Service Bus) instead of outliving its message lock at the gate."""


class SignInFailed(DataverseRejected):
    """No token could be had: the identity or its configuration is wrong (a redriven copy runs once it is fixed)."""


class Undetermined(DataverseUnavailable):
    """A read-back could not tell whether an earlier, unanswered write took effect: never write blind. Its
    message is the read's own real error (a 503, a timeout), never a vaguer "could not tell"."""


def from_answer(
    status: int, headers: Mapping[str, str], body: bytes, what: str = "", retry_after_cap: float = 300.0
) -> DataverseError:
    """The error a non-success answer (or ``$batch`` part) stands for, with the Web API's code and message
    and, when permanent, the administrator's advice. A 429's Retry-After is read within ``retry_after_cap``."""
    code, message = _error_body(body)
    request_id = headers.get("x-ms-service-request-id")
    reason = f"Dataverse answered {status}{what}{_describe(code, message)}"
    if RetryPolicy.is_transient_status(status):
        retry_after = retry_after_seconds(headers, retry_after_cap) if status == 429 else None
        return DataverseUnavailable(
            reason, status=status, code=code, message=message, request_id=request_id, retry_after=retry_after
        )
    hint = advice(status, code)
    return DataverseRejected(
        reason + (f" - {hint}" if hint else ""), status=status, code=code, message=message, request_id=request_id
    )


def longer_wait(current: DataverseError | None, new: DataverseError) -> DataverseError:
    """Of two transient failures (parts of one round), the one that asks for the longer wait (the newer on a tie)."""
    if current is None or current.retry_after is None:
        return new
    if new.retry_after is None or new.retry_after < current.retry_after:
        return current
    return new


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


def retry_after_seconds(headers: Mapping[str, str], cap: float = 300.0) -> float | None:
    """``Retry-After`` as seconds, at most ``cap``: Dataverse sends delta-seconds; an HTTP date is tolerated.

    A value beyond the cap (``10000000000``, a date in 2100) is treated as the cap; a non-finite, negative or
    unreadable one as absent (the caller's normal back-off). Either is logged, with the value as sent.
    """
    value = headers.get("Retry-After") or headers.get("retry-after")  # $batch part headers are lower-cased
    if not value:
        return None
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _http_date_from_now(value)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        log.warning("Retry-After %r is not a usable number of seconds: using the normal back-off", value[:40])
        return None
    if seconds > cap:
        log.warning("Retry-After %r is beyond DATAVERSE_RETRY_AFTER_CAP_SECONDS: clamped to %g s", value[:40], cap)
        return cap
    return seconds


def _http_date_from_now(value: str) -> float | None:
    from email.utils import parsedate_to_datetime  # rare: Dataverse sends seconds

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
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


def sign_in_advice(exc: Exception) -> str:
    """What a failed sign-in means, in administrator language (AADSTS codes named); never the token."""
    text = str(exc)
    if "AADSTS7000222" in text or "AADSTS7000215" in text:
        return (
            "sign-in failed: the client secret has expired or is wrong (AADSTS7000222/7000215); create a "
            "new secret, or better, use the Function App's managed identity"
        )
    if "AADSTS700016" in text:
        return "sign-in failed: the application (client) id is not found in this tenant (AADSTS700016)"
    if "AADSTS500011" in text:
        return "sign-in failed: the resource principal for DATAVERSE_URL is not in this tenant (AADSTS500011)"
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return f"sign-in failed ({type(exc).__name__}): {first_line[:300]}"
