"""One small exception hierarchy whose only job is to say whether retrying can help."""

from __future__ import annotations

from optout_core.domain.policy import Failure


class OptOutError(Exception):
    """Base of every error this package raises on purpose."""

    retryable = False
    retry_after: float | None = None  # seconds the server asked us to wait (a 429's Retry-After)

    @property
    def failure(self) -> Failure:
        """This error as the failure policy reads it."""
        return Failure(str(self), transient=self.retryable, retry_after=self.retry_after)


class PermanentError(OptOutError):
    """Retrying the same message cannot succeed: reject it with the reason (kept for redrive)."""


class TransientError(OptOutError):
    """A later attempt may succeed: retried in process, then the work item is put back on its queue, due later,
    until its retry window closes (then it ends ``failed`` on the rejected queue)."""

    retryable = True


class SettingsError(PermanentError, ValueError):
    """An app setting is missing or malformed; the message names the setting."""
