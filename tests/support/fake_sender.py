"""A scripted :class:`~optout_core.dataverse.sender.HttpSender` for unit tests of the Dataverse layers: it answers
each request with the next scripted reply (a status, a Response, a Lost, or a function of the request) and keeps
every request it was given."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.sender import Lost

Scripted = int | Response | Lost | Callable[[Request], Response | Lost]


class FakeSender:
    def __init__(self, *replies: Scripted, otherwise: Scripted | None = None) -> None:
        self.replies = list(replies)
        self.otherwise = otherwise
        self.requests: list[Request] = []

    def send(self, request: Request) -> Response | Lost:
        self.requests.append(request)
        reply = self.replies.pop(0) if self.replies else self.otherwise
        assert reply is not None, f"no reply scripted for {request.method} {request.path}"
        if callable(reply):
            return reply(request)
        return Response(reply, {}, b"") if isinstance(reply, int) else reply

    @property
    def methods(self) -> list[str]:
        return [r.method for r in self.requests]


def answer(status: int, body: Any = None, **headers: str) -> Response:
    return Response(status, headers, b"" if body is None else json.dumps(body).encode())


def batch_answer(parts: Iterable[Response]) -> Response:
    """A ``$batch`` answer holding ``parts``, in Dataverse's multipart shape."""
    out = bytearray()
    for part in parts:
        out += b"--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        out += f"HTTP/1.1 {part.status} X\r\nOData-Version: 4.0\r\n".encode()
        for name, value in part.headers.items():
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + part.body + b"\r\n"
    out += b"--batchresponse_1--\r\n"
    return Response(200, {"Content-Type": "multipart/mixed; boundary=batchresponse_1"}, bytes(out))


def parts_of(request: Request) -> list[Request]:
    """The requests inside a ``$batch`` request (method and path)."""
    assert request.body is not None
    lines = [line for line in request.body.split(b"\r\n") if line.startswith((b"GET ", b"PATCH ", b"POST "))]
    return [Request(*line.decode().split(" ")[:2]) for line in lines]
