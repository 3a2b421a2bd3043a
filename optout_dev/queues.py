"""Service Bus queues in memory, for tests, benchmarks and local runs (never deployed)."""

from __future__ import annotations

import threading
from collections import defaultdict

from optout_core.servicebus.envelopes import InboundMessage, OutboundMessage


class InMemoryQueues:
    """Queues in memory, with Service Bus duplicate detection: a MessageId already seen on a queue is dropped."""

    def __init__(self, *, duplicate_detection: bool = True) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[OutboundMessage]] = defaultdict(list)
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._duplicate_detection = duplicate_detection
        self.duplicates_dropped = 0

    def send(self, message: OutboundMessage) -> None:
        with self._lock:
            if self._duplicate_detection and message.message_id in self._seen[message.queue]:
                self.duplicates_dropped += 1
                return
            self._seen[message.queue].add(message.message_id)
            self._queues[message.queue].append(message)

    def messages(self, queue: str) -> list[OutboundMessage]:
        with self._lock:
            return list(self._queues.get(queue, ()))

    def take(self, queue: str, message_id: str | None = None) -> OutboundMessage | None:
        """Remove and return the oldest message of ``queue``, or the one with ``message_id`` (None if absent)."""
        with self._lock:
            pending = self._queues.get(queue) or []
            for index, message in enumerate(pending):
                if message_id is None or message.message_id == message_id:
                    return pending.pop(index)
            return None


def delivered(message: OutboundMessage, delivery_count: int | None = None) -> InboundMessage:
    """``message`` as its queue's trigger receives it."""
    return InboundMessage(
        body=message.body,
        message_id=message.message_id,
        delivery_count=delivery_count,
        correlation_id=message.correlation_id,
        application_properties=message.application_properties,
    )
