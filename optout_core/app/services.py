"""The services the functions use: built lazily on first use, then reused for the life of the process.

This is the one seam between the functions and the outside world. Production code calls
:func:`services`, which builds the real Service Bus sender and Dataverse client from the app settings;
tests and the local runner :func:`install` their own (an in-memory queue, a client for a loopback
stand-in) through the same seam.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from optout_core.app.recent import RecentWork
from optout_core.domain.errors import SettingsError
from optout_core.domain.settings import Settings

if TYPE_CHECKING:  # the client modules load with their first use, not at indexing
    from optout_core.dataverse.client import DataverseClient, Write, Written
    from optout_core.dataverse.result import Attempt, Batch
    from optout_core.servicebus.sender import QueueSender


class Dataverse(Protocol):
    """What the functions ask of Dataverse (:class:`optout_core.dataverse.client.DataverseClient`), and no more:
    the writers' recipient writes (``update`` for a bounce, ``update_many`` for a batch of opt-outs), the campaign
    log reads (``read_row`` for a trimmed context, ``read_rows`` for verification) and the consent table's
    ``query_many`` / ``write_rows``. Tests and the local runner put a client for a loopback stand-in behind it."""

    def update(
        self,
        table: str,
        row_id: str,
        changes: Mapping[str, Any],
        *,
        verify_first: bool = False,
        deadline: float | None = None,
    ) -> Attempt[Written]: ...

    def update_many(
        self,
        writes: Sequence[Write],
        *,
        verify_first: bool = False,
        deadline: float | None = None,
        returning: Sequence[str] = (),
    ) -> Batch[Written]: ...

    def read_row(
        self, entity_set: str, row_id: str, select: Sequence[str] = (), *, deadline: float | None = None
    ) -> Attempt[dict[str, Any] | None]: ...

    def read_rows(
        self, entity_set: str, row_ids: Sequence[str], select: Sequence[str] = (), *, deadline: float | None = None
    ) -> Batch[dict[str, Any] | None]: ...

    def query_many(
        self, entity_set: str, filters: Sequence[str], select: Sequence[str], *, deadline: float | None = None
    ) -> Batch[list[dict[str, Any]]]: ...

    def write_rows(
        self,
        entity_set: str,
        creates: Sequence[Mapping[str, Any]],
        updates: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        deadline: float | None = None,
    ) -> Batch[str | Written]: ...


class Services:
    """Settings plus the clients built from them. Clients are created on first use and reused."""

    def __init__(
        self,
        settings: Settings,
        *,
        sender: QueueSender | None = None,
        dataverse: Dataverse | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock  # Unix time: when an event's retry window opened, and how old it is
        self._sender = sender
        self._dataverse = dataverse
        self._env = env
        self._lock = threading.Lock()
        self.recent = RecentWork()  # work items this process finished: a duplicate arriving together is skipped

    @property
    def sender(self) -> QueueSender:
        with self._lock:
            if self._sender is None:
                from optout_core.servicebus.sender import ServiceBusSender  # a writer's applied event sends nothing

                self._sender = ServiceBusSender(self._env)
            return self._sender

    @property
    def dataverse(self) -> Dataverse:
        with self._lock:
            if self._dataverse is None:
                self._dataverse = build_dataverse_client(self.settings)
            return self._dataverse


def build_dataverse_client(settings: Settings) -> DataverseClient:
    from optout_core.dataverse.auth import dataverse_credential
    from optout_core.dataverse.client import DataverseClient

    if not settings.dataverse_url:
        raise SettingsError(
            "DATAVERSE_URL is not set: BulkEmailOptOut and BounceDetail need the "
            "environment URL, e.g. https://contoso.crm.dynamics.com"
        )
    return DataverseClient(
        settings.dataverse_url,
        dataverse_credential(settings),
        retry=settings.retry,
        retry_after_cap=settings.retry_after_cap,
        timeout=settings.dataverse_timeout,
        max_concurrency=settings.dataverse_concurrency,
        protection_window=settings.protection_window,
    )


_installed: Services | None = None
_install_lock = threading.Lock()


def services() -> Services:
    """The process's services; the first call reads the app settings from the environment."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = Services(Settings.from_env(os.environ))
        return _installed


def install(replacement: Services | None) -> None:
    """Use ``replacement`` from now on; None goes back to lazily built production services."""
    global _installed
    with _install_lock:
        _installed = replacement
