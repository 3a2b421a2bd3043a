"""One small exception hierarchy whose only job is to say whether retrying can help."""

from __future__ import annotations


class OptOutError(Exception):
    """Base of every error this package raises on purpose."""

    retryable = False


class PermanentError(OptOutError):
    """Retrying the same message cannot succeed: reject it with the reason (kept for redrive)."""


class TransientError(OptOutError):
    """A later attempt may succeed: raise so Service Bus redelivers the message."""

    retryable = True


class SettingsError(PermanentError, ValueError):
    """An app setting is missing or malformed; the message names the setting."""
