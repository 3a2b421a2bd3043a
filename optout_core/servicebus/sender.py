"""Sending to Service Bus queues: the SDK adapter behind the QueueSender protocol."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any, Protocol
from uuid import UUID

from optout_core.domain.errors import SettingsError
from optout_core.servicebus.envelopes import OutboundMessage


class QueueSender(Protocol):
    def send(self, message: OutboundMessage) -> None:
        """Send one message; raise on failure (the caller's message is then redelivered)."""


class ServiceBusSender:
    """One ``ServiceBusClient`` per process and one sender per queue, built on first use and reused.

    The SDK's clients are not thread-safe and sync functions run on a thread pool, so one lock guards them.
    The connection comes from the same settings as the triggers: ``ServiceBusConnection`` (a connection
    string) or ``ServiceBusConnection__fullyQualifiedNamespace`` with a managed identity.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env
        self._lock = threading.Lock()
        self._client: Any = None
        self._senders: dict[str, Any] = {}

    def send(self, message: OutboundMessage) -> None:
        from azure.servicebus import ServiceBusMessage  # lazy: keeps function indexing cheap

        properties: dict[str | bytes, int | float | bytes | bool | str | UUID] = {}
        for name, value in message.application_properties.items():
            properties[name] = value
        sdk_message = ServiceBusMessage(
            message.body,
            message_id=message.message_id,
            content_type=message.content_type,
            correlation_id=message.correlation_id,
            subject=message.subject,
            application_properties=properties,
            scheduled_enqueue_time_utc=message.scheduled_enqueue_time,
        )
        with self._lock:
            sender = self._senders.get(message.queue)
            if sender is None:
                sender = self._senders[message.queue] = self._get_client().get_queue_sender(message.queue)
            sender.send_messages(sdk_message)

    def close(self) -> None:
        with self._lock:
            for sender in self._senders.values():
                sender.close()
            if self._client is not None:
                self._client.close()
            self._senders, self._client = {}, None

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = service_bus_client(self._env)
        return self._client


def service_bus_client(env: Mapping[str, str]) -> Any:
    """A ``ServiceBusClient`` from the triggers' own connection settings: ``ServiceBusConnection`` (a
    connection string) or ``ServiceBusConnection__fullyQualifiedNamespace`` with a managed identity."""
    from azure.servicebus import ServiceBusClient

    connection = env.get("ServiceBusConnection")
    namespace = env.get("ServiceBusConnection__fullyQualifiedNamespace") or env.get(
        "ServiceBusConnection:fullyQualifiedNamespace"
    )
    if connection:
        try:
            return ServiceBusClient.from_connection_string(connection)
        except ValueError:
            raise SettingsError("ServiceBusConnection is not a Service Bus connection string") from None
    if namespace:
        return ServiceBusClient(namespace, _service_bus_credential(env))
    raise SettingsError(
        "set ServiceBusConnection (connection string) or "
        "ServiceBusConnection__fullyQualifiedNamespace (managed identity or az login)"
    )


def _service_bus_credential(env: Mapping[str, str]) -> Any:
    # Mirrors the Functions extension: __credential=managedidentity + __clientId selects a user-assigned identity.
    client_id = env.get("ServiceBusConnection__clientId")
    if (env.get("ServiceBusConnection__credential") or "").lower() == "managedidentity" or client_id:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
