"""What the client's calls come to, as values: one :class:`Attempt` per operation, and a :class:`Batch` of them.

Like urllib3's ``Retry.history``, the record says what was tried (requests, tries) next to what came of it, so a
caller never reads counts off an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from optout_core.dataverse.errors import DataverseError


@dataclass(frozen=True, slots=True)
class Attempt[T]:
    """One operation's end: its ``value``, or the ``error`` that ended it (permanent, or transient after the
    retries or the time budget ran out). ``requests``: HTTP requests the call took, retries and read-backs included
    (in a batch, the whole batch's); ``attempts``: tries made in this process before the error (the failure
    policy's count; 0 when it failed for good at once)."""

    value: T | None = None
    error: DataverseError | None = None
    requests: int = 0
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self) -> T | None:
        """The value; the error raised."""
        if self.error is not None:
            raise self.error
        return self.value

    def map[U](self, convert: Callable[[T], U]) -> Attempt[U]:
        """The same attempt with its value converted; a conversion that fails with a Dataverse error (an answer
        that does not say what it must) ends it with that error."""
        if self.error is not None:
            return Attempt[U](None, self.error, self.requests, self.attempts)
        try:
            return Attempt(convert(cast("T", self.value)), None, self.requests, self.attempts)
        except DataverseError as refused:
            return Attempt[U](None, refused, self.requests, 0)


@dataclass(frozen=True, slots=True)
class Batch[T]:
    """One attempt per operation, in order, and the HTTP requests all of them took (a ``$batch`` is one)."""

    items: tuple[Attempt[T], ...]
    requests: int

    def map[U](self, convert: Callable[[T], U]) -> Batch[U]:
        return Batch(tuple(item.map(convert) for item in self.items), self.requests)

    @property
    def rows(self) -> list[T | DataverseError]:
        """Each operation's value, or the error that ended it, in order."""
        return [cast("T", item.value) if item.error is None else item.error for item in self.items]
