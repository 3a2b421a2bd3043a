"""A loopback AMQP 1.0 peer that the real ``azure-servicebus`` SDK can talk to: a tiny Service Bus double.

Built on python-qpid-proton. It accepts the SDK's connection string with ``UseDevelopmentEmulator=true`` (the
SDK then speaks plain ``amqp://`` to the port in the endpoint, with SASL ANONYMOUS, like it does with the
Service Bus emulator), answers every ``$cbs`` put-token request with 202, and keeps messages per address.

What it does, as Service Bus would:

- **send**: a message sent to ``<queue>`` is accepted, stored with an ``x-opt-sequence-number`` annotation, and
  recorded exactly as it arrived on the wire (:attr:`AmqpPeer.received`); :meth:`AmqpPeer.refuse_sends` makes
  it reject transfers to a queue with an AMQP error instead (a full queue, a missing Send right);
- **receive in peek-lock** (rcv-settle-mode second): messages go out in sequence order with a 16-byte
  delivery tag (the SDK's lock token) and ``header.delivery_count`` (the number of abandons; proton leaves a
  header of defaults out, so the SDK reports ``None``, not 0, for a first delivery). A locked message is not
  handed out again until it is settled or its link or connection goes away (then it is available again).
  The peer echoes the receiver's outcome, then settles: *accepted* = complete (removed); *modified* = abandon
  (available again, delivery count + 1); *released* = available again; *rejected* = dead-letter: moved to
  ``<queue>/$deadletterqueue`` with the ``DeadLetterReason`` / ``DeadLetterErrorDescription`` application
  properties from the error's info (or its condition/description);
- **management** on ``<entity>/$management``: ``com.microsoft:peek-message`` (what ``peek_messages`` sends),
  answered 200 with the messages from the requested sequence number, or 204 when there are none.

What it does not do: TLS, real authentication (any token is accepted), lock expiry or lock renewal
(``com.microsoft:renew-lock``), scheduled delivery (an ``x-opt-scheduled-enqueue-time`` message is stored and
available at once), duplicate detection, sessions, deferral, time to live, max delivery count, topics, and every
other management operation (answered 501). It is a test double for this app's SDK calls, nothing more.

All proton objects live on the peer's own thread; tests talk to it through a lock-guarded store and an
:class:`~proton.reactor.EventInjector`. It binds 127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from proton import Condition, Delivery, Endpoint, Handler, Link, Message, symbol
from proton.reactor import ApplicationEvent, Container, EventInjector

DEAD_LETTER_SUFFIX = "/$deadletterqueue"
MANAGEMENT_SUFFIX = "/$management"
CBS = "$cbs"
PEEK_OPERATION = "com.microsoft:peek-message"


@dataclass(frozen=True)
class Received:
    """One message exactly as a client sent it: where to, on which connection, and whether it was accepted."""

    address: str
    message: Message
    connection: int
    accepted: bool = True


@dataclass
class _Stored:
    message: Message
    sequence_number: int
    delivery_count: int = 0


@dataclass
class _Inflight:
    address: str
    stored: _Stored
    link: Any = field(repr=False)


class AmqpPeer:
    """Start with ``with AmqpPeer() as peer:``; give the SDK ``peer.connection_string``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        if host != "127.0.0.1":
            raise ValueError("the peer binds the loopback interface only")
        self._host = host
        self._lock = threading.RLock()
        self._queues: dict[str, list[_Stored]] = defaultdict(list)
        self._sequence = itertools.count(1)
        self._refused: dict[str, tuple[str, str]] = {}
        self.received: list[Received] = []
        self.connections = 0  # AMQP connections opened by clients so far
        self.token_requests = 0  # $cbs put-token requests answered
        self.management_requests: list[tuple[str, str]] = []  # (address, operation)
        self._broker = _Broker(self)
        self._container: Container | None = None
        self._injector: EventInjector | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> AmqpPeer:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._injector = EventInjector()
        self._container = Container(self._broker)
        self._container.selectable(self._injector)
        self._thread = threading.Thread(target=self._run, name="amqp-peer", daemon=True)
        self._thread.start()
        if not self._started.wait(10) or self.port is None:
            self.stop()
            raise RuntimeError(f"the AMQP peer did not start: {self._failure!r}")
        return self

    def _run(self) -> None:
        try:
            self._container.run()
        except BaseException as exc:  # noqa: BLE001 (the peer thread keeps any failure; start() or stop() re-raises it)
            self._failure = exc
        finally:
            # proton's reactor ends without closing its sockets: close the listener and every connection's
            # socket, so clients get "connection refused/reset" rather than a socket nobody will ever answer.
            for sock in self._broker.sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._started.set()

    def stop(self) -> None:
        """Close every connection and the listener, and join the peer's thread. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if thread.is_alive():
            self._injector.trigger(ApplicationEvent("peer_stop"))
            thread.join(10)
        if thread.is_alive():
            raise RuntimeError("the AMQP peer's thread did not stop")
        for fd in self._injector.pipe:  # proton leaves the injector's pipe open
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._failure is not None:
            raise RuntimeError("the AMQP peer failed") from self._failure

    def __enter__(self) -> AmqpPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connection_string(self) -> str:
        # UseDevelopmentEmulator=true: the SDK keeps the port and connects without TLS (as to the emulator).
        return (
            f"Endpoint=sb://{self._host}:{self.port};SharedAccessKeyName=k;SharedAccessKey=v;"
            "UseDevelopmentEmulator=true;"
        )

    # -- the store, for tests ------------------------------------------------------------------------------

    def put(self, queue: str, message: Message) -> int:
        """Seed ``queue`` (or ``<queue>/$deadletterqueue``) with a message; returns its sequence number."""
        stored = self._store(_address(queue) or queue, _copy(message))
        self._wake()
        return stored.sequence_number

    def messages(self, queue: str) -> list[Message]:
        """Copies of what ``queue`` holds now (available and locked), in sequence order."""
        with self._lock:
            return [_copy(s.message) for s in self._all(_address(queue) or queue)]

    def received_on(self, address: str) -> list[Message]:
        """The accepted messages clients sent to ``address``, as they were on the wire."""
        with self._lock:
            return [r.message for r in self.received if r.address == address and r.accepted]

    def refuse_sends(
        self, queue: str, condition: str = "amqp:resource-limit-exceeded", description: str = "the queue is full"
    ) -> None:
        """Reject every transfer to ``queue`` from now on, with this AMQP error."""
        with self._lock:
            self._refused[queue] = (condition, description)

    # -- shared by both threads, under the lock ---------------------------------------------------------------

    def _store(self, address: str, message: Message) -> _Stored:
        with self._lock:
            sequence_number = next(self._sequence)
            annotations = dict(message.annotations or {})
            annotations[symbol("x-opt-sequence-number")] = sequence_number
            message.annotations = annotations
            stored = _Stored(message, sequence_number)
            self._queues[address].append(stored)
            return stored

    def _all(self, address: str) -> list[_Stored]:
        locked = [i.stored for i in self._broker.inflight.values() if i.address == address]
        return sorted([*self._queues.get(address, ()), *locked], key=lambda s: s.sequence_number)

    def _wake(self) -> None:
        if self._thread is not None and self._injector is not None:
            self._injector.trigger(ApplicationEvent("peer_wake"))


class _Broker(Handler):
    """The reactor-side half: every method runs on the peer's thread."""

    def __init__(self, peer: AmqpPeer) -> None:
        super().__init__()
        self.peer = peer
        self.acceptor: Any = None
        self.connections: list[Any] = []
        self.inflight: dict[Delivery, _Inflight] = {}  # delivered in peek-lock, not settled yet
        self.sockets: list[Any] = []  # closed when the reactor ends

    # -- connections and links -------------------------------------------------------------------------

    def on_reactor_init(self, event: Any) -> None:
        self.acceptor = event.container.listen(f"{self.peer._host}:0")
        listener = self.acceptor._selectable._delegate
        self.sockets.append(listener)
        self.peer.port = listener.getsockname()[1]
        self.peer._started.set()

    def on_connection_remote_open(self, event: Any) -> None:
        connection = event.connection
        selectable = getattr(event.transport, "_selectable", None)
        if getattr(selectable, "_delegate", None) is not None:
            self.sockets.append(selectable._delegate)
        with self.peer._lock:
            self.peer.connections += 1
            connection.number = self.peer.connections
        self.connections.append(connection)
        connection.open()

    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        link.open()
        if link.is_receiver:
            link.flow(_CREDIT)

    def on_link_remote_close(self, event: Any) -> None:
        self._release(lambda link: link == event.link)
        if not event.link.state & Endpoint.LOCAL_CLOSED:
            event.link.close()

    def on_session_remote_close(self, event: Any) -> None:
        if not event.session.state & Endpoint.LOCAL_CLOSED:
            event.session.close()

    def on_connection_remote_close(self, event: Any) -> None:
        self._forget(event.connection)
        if not event.connection.state & Endpoint.LOCAL_CLOSED:
            event.connection.close()

    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self._forget(event.connection)

    def _forget(self, connection: Any) -> None:
        # A dropped connection's locks are released: its unsettled messages are available again.
        self._release(lambda link: link.connection == connection)
        if connection in self.connections:
            self.connections.remove(connection)

    # -- outgoing: deliver stored messages in peek-lock ----------------------------------------------------

    def on_link_flow(self, event: Any) -> None:
        if event.link.is_sender:
            self._pump(event.link)

    def on_peer_wake(self, event: Any) -> None:
        for connection in list(self.connections):
            for link in _links(connection):
                if link.is_sender:
                    self._pump(link)

    def _pump(self, link: Any) -> None:
        address = _address(link.remote_source.address)
        if not address or address == CBS or address.endswith(MANAGEMENT_SUFFIX):
            return
        if not (link.state & Endpoint.LOCAL_ACTIVE and link.state & Endpoint.REMOTE_ACTIVE):
            return
        while link.credit > 0:
            with self.peer._lock:
                pending = self.peer._queues.get(address)
                if not pending:
                    break
                stored = pending.pop(0)
                message = _copy(stored.message)
                message.delivery_count = stored.delivery_count
                # The SDK reads the 16-byte delivery tag as the message's lock token (a UUID).
                delivery = message.send(link, tag=uuid.uuid4().bytes_le)
                if link.snd_settle_mode != Link.SND_SETTLED:  # receive-and-delete clients pre-settle
                    self.inflight[delivery] = _Inflight(address, stored, link)
        if link.drain_mode:
            link.drained()

    def on_delivery(self, event: Any) -> None:
        delivery = event.delivery
        if delivery.link.is_receiver:
            self._incoming(delivery)
            return
        if not delivery.updated or not delivery.remote_state:
            return
        with self.peer._lock:
            inflight = self.inflight.pop(delivery, None)
        if inflight is None:
            return
        outcome = delivery.remote_state
        if outcome == Delivery.ACCEPTED:
            pass  # complete: the message is gone
        elif outcome == Delivery.REJECTED:
            self._dead_letter(inflight, delivery.remote.condition)
        else:  # released or modified: abandon
            self._requeue(inflight, increment=outcome == Delivery.MODIFIED)
        # rcv-settle-mode second: the SDK counts a settlement done only when the broker echoes the outcome
        # on a settled disposition.
        delivery.update(outcome)
        delivery.settle()
        self.on_peer_wake(event)

    def _requeue(self, inflight: _Inflight, *, increment: bool) -> None:
        with self.peer._lock:
            inflight.stored.delivery_count += 1 if increment else 0
            _insert(self.peer._queues[inflight.address], inflight.stored)

    def _dead_letter(self, inflight: _Inflight, condition: Condition | None) -> None:
        # The SDK's dead_letter_message() rejects with condition com.microsoft:dead-letter and the reason and
        # description in the error's info; Service Bus turns them into application properties.
        info = condition.info if condition is not None and isinstance(condition.info, dict) else {}
        info = {str(k): v for k, v in info.items()}
        reason = info.get("DeadLetterReason") or (condition.name if condition else None) or "rejected"
        description = info.get("DeadLetterErrorDescription") or (condition.description if condition else None)
        with self.peer._lock:
            message = inflight.stored.message
            properties = dict(message.properties or {})
            properties["DeadLetterReason"] = str(reason)
            if description:
                properties["DeadLetterErrorDescription"] = str(description)
            message.properties = properties
            base = inflight.address.removesuffix(DEAD_LETTER_SUFFIX)
            _insert(self.peer._queues[base + DEAD_LETTER_SUFFIX], inflight.stored)

    def _release(self, belongs: Any) -> None:
        with self.peer._lock:
            released = [(d, i) for d, i in self.inflight.items() if belongs(i.link)]
            for delivery, inflight in released:
                del self.inflight[delivery]
                _insert(self.peer._queues[inflight.address], inflight.stored)

    # -- incoming: sends, token puts and management requests -----------------------------------------------

    def _incoming(self, delivery: Delivery) -> None:
        if not delivery.readable or delivery.partial:
            return
        link = delivery.link
        message = Message()
        message.decode(link.recv(delivery.pending))
        link.advance()
        address = _address(link.remote_target.address) or _address(message.address) or ""
        if address == CBS or address.endswith(MANAGEMENT_SUFFIX):
            self._answer(link, address, message)
            delivery.update(Delivery.ACCEPTED)
        else:
            with self.peer._lock:
                refused = self.peer._refused.get(address)
                self.peer.received.append(Received(address, _copy(message), link.connection.number, not refused))
            if refused:
                # With an info map, as Service Bus sends it: azure-servicebus 7.15 indexes error[2] and, without
                # it, fails in a callback and then waits for ever for the send's outcome.
                tracking = {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())}
                delivery.local.condition = Condition(refused[0], refused[1], tracking)
                delivery.update(Delivery.REJECTED)
            else:
                self.peer._store(address, message)
                delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        link.flow(1)
        self.on_peer_wake(None)

    def _answer(self, link: Any, address: str, request: Message) -> None:
        operation = str((request.properties or {}).get("operation", ""))
        if address == CBS:
            with self.peer._lock:
                self.peer.token_requests += 1
            status, body = 202, None
        else:
            with self.peer._lock:
                self.peer.management_requests.append((address, operation))
            status, body = self._manage(address.removesuffix(MANAGEMENT_SUFFIX), operation, request.body)
        response = Message(
            address=request.reply_to,
            correlation_id=request.id,
            body=body,
            properties={
                "status-code": status,
                "statusCode": status,
                "status-description": _DESCRIPTIONS[status],
                "statusDescription": _DESCRIPTIONS[status],
            },
        )
        reply = next(
            (
                out
                for out in _links(link.connection)
                if out.is_sender and _address(out.remote_source.address) == address
            ),
            None,
        )
        if reply is not None and reply.credit > 0:
            response.send(reply, tag=uuid.uuid4().bytes)

    def _manage(self, entity: str, operation: str, body: Any) -> tuple[int, Any]:
        if operation != PEEK_OPERATION:
            return 501, None
        body = {str(k): v for k, v in (body or {}).items()}
        start = int(body.get("from-sequence-number") or 1)
        count = int(body.get("message-count") or 1)
        with self.peer._lock:
            chosen = [s for s in self.peer._all(entity) if s.sequence_number >= start][:count]
            encoded = []
            for stored in chosen:
                message = _copy(stored.message)
                message.delivery_count = stored.delivery_count
                encoded.append({"message": message.encode()})
        if not encoded:
            return 204, None
        return 200, {"messages": encoded}

    def on_peer_stop(self, event: Any) -> None:
        if self.acceptor is not None:
            self.acceptor.close()
        for connection in list(self.connections):
            if not connection.state & Endpoint.LOCAL_CLOSED:
                connection.close()
        self.peer._injector.close()
        container = self.peer._container
        if not self.connections:
            container.stop()
        else:  # let the close frames go out, then end the reactor even if a client never answers
            container.schedule(0.2, _Stopper(container))


class _Stopper:
    def __init__(self, container: Container) -> None:
        self.container = container

    def on_timer_task(self, event: Any) -> None:
        self.container.stop()


_DESCRIPTIONS = {200: "OK", 202: "Accepted", 204: "No Content", 501: "Not Implemented"}


_CREDIT = 100


def _links(connection: Any) -> list[Any]:
    """The connection's open links (management responses go out on the client's receiver for that address)."""
    links, mask = [], Endpoint.LOCAL_ACTIVE | Endpoint.REMOTE_ACTIVE
    link = connection.link_head(mask)
    while link is not None:
        links.append(link)
        link = link.next(mask)
    return links


def _insert(queue: list[_Stored], stored: _Stored) -> None:
    queue.append(stored)
    queue.sort(key=lambda s: s.sequence_number)


def _address(address: str | None) -> str | None:
    """``amqps://host:port/queue`` → ``queue``; ``<queue>/$DeadLetterQueue`` (the SDK's spelling) →
    ``<queue>/$deadletterqueue``: the SDK names entities with a full URI, and sub-queue names are case-insensitive."""
    if not address:
        return None
    if "://" in address:
        address = address.split("://", 1)[1]
        address = address.split("/", 1)[1] if "/" in address else ""
    for suffix in (DEAD_LETTER_SUFFIX, MANAGEMENT_SUFFIX):
        head, sep, tail = address.rpartition("/")
        if sep and f"/{tail}".lower() == suffix:
            address = head + suffix
        elif suffix == DEAD_LETTER_SUFFIX and head.lower().endswith(DEAD_LETTER_SUFFIX):
            address = head[: -len(DEAD_LETTER_SUFFIX)] + DEAD_LETTER_SUFFIX + sep + tail
    return address


def _copy(message: Message) -> Message:
    copy = Message()
    copy.decode(message.encode())
    if isinstance(copy.body, memoryview):  # a data section decodes as a view into proton's buffer
        copy.body = bytes(copy.body)
    return copy
