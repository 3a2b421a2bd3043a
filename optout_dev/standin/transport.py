"""The stand-in's HTTP/1.1 plumbing on loopback: the listening server, one thread per connection (TLS
handshakes happen there), the connections tracked so that stop() can close them, reading a request's body and
writing an answer."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from optout_dev.standin.responses import Response, error

_MAX_BODY = 16 * 1024 * 1024

# What socketserver hands a server; a TCP server like this one only ever gets a connected socket.
_Request = socket.socket | tuple[bytes, socket.socket]


def _connection(request: _Request) -> socket.socket:
    if isinstance(request, socket.socket):
        return request
    raise TypeError("the stand-in serves TCP connections only")


class Connections:
    """Open connections and the threads serving them; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[socket.socket, threading.Thread] = {}
        self._secure: dict[socket.socket, socket.socket] = {}  # plain socket -> its TLS wrapper

    def track(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._threads[sock] = thread

    def retrack(self, plain: socket.socket, secure: socket.socket) -> None:
        """The connection now speaks TLS through ``secure``."""
        with self._lock:
            thread = self._threads.pop(plain, None)
            if thread is not None:
                self._threads[secure] = thread
            self._secure[plain] = secure

    def untrack(self, sock: socket.socket) -> socket.socket:
        """Forget a connection; returns the socket to close (the TLS one, when it was wrapped)."""
        with self._lock:
            sock = self._secure.pop(sock, sock)
            self._threads.pop(sock, None)
            return sock

    def close_all(self, timeout: float = 5.0) -> None:
        """Wake the threads blocked reading idle keep-alive connections, and wait for them to end."""
        with self._lock:
            connections = list(self._threads.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            thread.join(timeout=timeout)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real service
    disable_nagle_algorithm = True  # headers and body go out in two writes: don't stall on delayed ACKs
    server: LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def _dispatch(self) -> None:
        self.server.serve(self)

    do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class LoopbackServer(ThreadingHTTPServer):
    """Serves every request with ``serve``; ``tls``, once set, wraps each connection before it is read."""

    daemon_threads = True
    allow_reuse_port = False  # a second server must not share the port and steal requests

    def __init__(self, address: tuple[str, int], serve: Callable[[Handler], None], connections: Connections) -> None:
        self.serve = serve
        self.connections = connections
        self.tls: ssl.SSLContext | None = None
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's getfqdn(): a reverse DNS lookup can stall start-up.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: _Request, client_address: Any) -> None:
        # Track every connection before its thread starts, so stop() can close idle keep-alive
        # connections and join their threads (no handler thread outlives stop()).
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="dataverse-standin-conn",
            daemon=True,
        )
        self.connections.track(_connection(request), thread)
        thread.start()

    def finish_request(self, request: _Request, client_address: Any) -> None:
        if self.tls is not None:
            # Handshake here, in the connection's thread, so a slow client cannot stall accept().
            # Wrapping detaches the plain socket: track the TLS one so stop() can still close it.
            plain = _connection(request)
            try:
                secure = self.tls.wrap_socket(plain, server_side=True)
            except (OSError, ValueError):
                return
            self.connections.retrack(plain, secure)
            request = secure
        super().finish_request(request, client_address)

    def shutdown_request(self, request: _Request) -> None:
        super().shutdown_request(self.connections.untrack(_connection(request)))

    def handle_error(self, request: _Request, client_address: Any) -> None:
        pass  # quiet: clients hanging up mid-answer are expected in fault tests


def read_body(handler: Handler) -> tuple[bytes, Response | None]:
    """The request's body, and the answer to give instead of serving it when it cannot be read."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        return b"", error(
            400, "STANDIN_UNSUPPORTED", "Chunked request bodies are not supported; send Content-Length.", close=True
        )
    raw = handler.headers.get("Content-Length")
    if raw is None:
        return b"", None
    try:
        length = int(raw)
        if length < 0:
            raise ValueError
    except ValueError:
        return b"", error(400, "", f"Invalid Content-Length {raw!r}.", close=True)
    if length > _MAX_BODY:
        return b"", error(413, "", "The request payload is too large.", close=True)
    try:
        body = handler.rfile.read(length)
    except OSError:
        body = b""
    if len(body) < length:
        return body, Response(0, drop=True)  # client went away mid-body
    return body, None


def send(handler: Handler, response: Response) -> None:
    """Write the answer; a ``drop`` answer closes the connection without a byte."""
    if response.drop:
        # No bytes at all: the client must see a connection error, not an empty answer.
        handler.close_connection = True
        with contextlib.suppress(OSError):  # the client is gone already
            handler.connection.shutdown(socket.SHUT_RDWR)
        return
    if response.cut:
        _send_cut(handler, response)
        return
    try:
        handler.send_response(response.status)
        for name, value in response.headers:
            handler.send_header(name, value)
        handler.send_header("OData-Version", "4.0")
        handler.send_header("x-ms-service-request-id", str(uuid.uuid4()))
        if response.status not in (204, 304):
            handler.send_header("Content-Length", str(len(response.body)))
        if response.close:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        if response.body and handler.command != "HEAD" and response.status not in (204, 304):
            handler.wfile.write(response.body)
    except OSError:
        handler.close_connection = True  # the client hung up (e.g. its read timeout fired)


def _send_cut(handler: Handler, response: Response) -> None:
    """Status line, headers (a ``Content-Length`` for the whole body), half the body, then close: an answer
    cut off mid-body, as when a connection breaks while the answer is on its way."""
    handler.close_connection = True
    with contextlib.suppress(OSError):  # the client hung up first
        handler.send_response(response.status)
        for name, value in response.headers:
            handler.send_header(name, value)
        handler.send_header("OData-Version", "4.0")
        handler.send_header("x-ms-service-request-id", str(uuid.uuid4()))
        handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(response.body[: len(response.body) // 2])
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
