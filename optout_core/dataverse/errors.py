"""The Dataverse Web API's failures, in the package's retryable / permanent hierarchy."""

from __future__ import annotations

from ..domain.errors import OptOutError, PermanentError, TransientError


class DataverseError(OptOutError):
    """The Dataverse Web API refused or could not serve a request.

    ``code`` and ``message`` are the Web API's ``error.code`` / ``error.message``; ``request_id`` is the
    ``x-ms-service-request-id`` header, which Microsoft support asks for.
    """

    def __init__(self, reason: str, *, status: int | None = None, code: str | None = None,
                 message: str | None = None, request_id: str | None = None,
                 retry_after: float | None = None, requests: int = 0) -> None:
        super().__init__(reason)
        self.requests = requests  # HTTP requests made before giving up, retries included
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after


class DataverseRejected(DataverseError, PermanentError):
    """400/403/405/412/413 or a repeated 401: the request itself or the configuration is wrong."""


class DataverseUnavailable(DataverseError, TransientError):
    """429, 5xx, 408, timeouts or connection errors that outlived the retry policy."""
