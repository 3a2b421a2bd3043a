"""Answers as the stand-in builds them before writing them out, and the Web API's JSON error shape."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: Headers = ()
    drop: bool = False  # close the connection without writing a byte
    close: bool = False  # answer, then close (the request body could not be consumed)
    batch: int | None = None  # the serial number of the $batch this answers
    cut: bool = False  # status line and headers, then only part of the body announced, then close


def json_response(status: int, payload: Mapping[str, Any], headers: Headers = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, (("Content-Type", "application/json; odata.metadata=minimal"), *headers))


def error(status: int, code: str, message: str, headers: Headers = (), close: bool = False) -> Response:
    """``{"error": {"code": ..., "message": ...}}`` with the given status."""
    response = json_response(status, {"error": {"code": code, "message": message}}, headers)
    return Response(response.status, response.body, response.headers, close=close)


def unsupported(what: str) -> Response:
    """501 for something the real Web API has but the stand-in does not model (rather than a guess)."""
    return error(501, "STANDIN_UNSUPPORTED", f"{what} exists in the real Web API but is not modelled by the stand-in.")


def method_not_allowed(method: str, allow: str) -> Response:
    return error(405, "", f"The requested resource does not support http method '{method}'.", (("Allow", allow),))


def phrase(status: int) -> str:
    """The reason phrase of a status ("Error" for one HTTP does not define)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
