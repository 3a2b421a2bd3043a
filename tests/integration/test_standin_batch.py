"""The stand-in's $batch, service protection, EntityDefinitions and TLS, specified by example over real HTTP
(dataverse-webapi.md §4, §5, §10, §12). Multipart bodies are built and read by hand here, byte for byte,
so that these tests depend on no project client."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest
import requests

from optout_dev.standin import MAX_BATCH_OPERATIONS, DataverseStandIn, Fault, ServiceProtection
from tests.support.dataverse import stop_during_a_request

A = "a91d3e55-12f0-ef11-be20-6045bd0f2c11"
B = "5b7c9d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e"
C = "c3d4e5f6-0718-4293-a4b5-c6d7e8f90a1b"
MISSING = "00000000-1111-2222-3333-444444444444"
API = "/api/data/v9.2/"
TIMEOUT = 10
CRLF = b"\r\n"
GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


pytestmark = pytest.mark.usefixtures("no_leaked_standin_threads")


@pytest.fixture
def standin() -> Iterator[DataverseStandIn]:
    with DataverseStandIn() as server:
        for row_id in (A, B, C):
            server.add_row("contact", row_id, donotbulkemail=False)
        yield server


# ----- building a batch by hand ---------------------------------------------------------------------------


def operation(
    method: str,
    url: str,
    body: object = None,
    *,
    headers: Sequence[tuple[str, str]] = (),
    content_id: str | None = None,
) -> bytes:
    """One application/http part's content: MIME headers, blank line, the inner request."""
    out = b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id is not None:
        out += f"Content-ID: {content_id}\r\n".encode()
    out += CRLF + f"{method} {url} HTTP/1.1\r\n".encode()
    inner_headers = list(headers)
    if body is not None and not any(name.lower() == "content-type" for name, _ in inner_headers):
        inner_headers.insert(0, ("Content-Type", "application/json; type=entry"))
    for name, value in inner_headers:
        out += f"{name}: {value}\r\n".encode()
    out += CRLF
    if body is not None:
        out += body if isinstance(body, bytes) else json.dumps(body).encode()
    return out


def opt_out(
    row_id: str, url: str | None = None, *, if_match: str = "*", content_id: str | None = None, changes: object = None
) -> bytes:
    return operation(
        "PATCH",
        url or f"{API}contacts({row_id})",
        {"donotbulkemail": True} if changes is None else changes,
        headers=[("If-Match", if_match)],
        content_id=content_id,
    )


def changeset(parts: Sequence[bytes], boundary: str = "changeset_7f1c") -> bytes:
    """A changeset part's content: its own Content-Type, blank line, the nested multipart."""
    body = b"".join(b"--" + boundary.encode() + CRLF + part + CRLF for part in parts)
    return (
        f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
        + body
        + b"--"
        + boundary.encode()
        + b"--"
    )


def multipart(parts: Sequence[bytes], boundary: str = "batch_3a9c") -> bytes:
    body = b"".join(b"--" + boundary.encode() + CRLF + part + CRLF for part in parts)
    return body + b"--" + boundary.encode() + b"--" + CRLF


def post_batch(
    session: requests.Session,
    server: DataverseStandIn,
    body: bytes,
    *,
    boundary: str = "batch_3a9c",
    continue_on_error: bool = False,
    quoted: bool = False,
    **kwargs: object,
) -> requests.Response:
    content_type = f'multipart/mixed; boundary="{boundary}"' if quoted else f"multipart/mixed; boundary={boundary}"
    headers = {"Content-Type": content_type, **dict(kwargs.pop("headers", {}) or {})}  # type: ignore[call-overload]
    if continue_on_error:
        headers["Prefer"] = "odata.continue-on-error"
    return session.post(server.url + API + "$batch", data=body, headers=headers, timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]


# ----- reading a batch answer by hand -----------------------------------------------------------------------


class Part:
    def __init__(self, mime: dict[str, str], status: int, headers: dict[str, str], body: bytes) -> None:
        self.mime, self.status, self.headers, self.body = mime, status, headers, body

    def error(self) -> tuple[str, str]:
        assert self.headers["content-type"].startswith("application/json")
        error = json.loads(self.body)["error"]
        return error["code"], error["message"]


def _head(block: bytes) -> tuple[dict[str, str], bytes]:
    head, separator, rest = block.partition(CRLF + CRLF)
    assert separator, f"no blank line after the headers in {block!r}"
    headers = {}
    for line in head.split(CRLF):
        name, colon, value = line.decode().partition(":")
        assert colon, f"bad header line {line!r}"
        headers[name.strip().lower()] = value.strip()
    return headers, rest


def split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """Strict CRLF multipart: every delimiter on its own CRLF line, closed by --boundary--."""
    delimiter = b"--" + boundary.encode()
    if body == delimiter + b"--" + CRLF:
        return []
    assert body.startswith(delimiter + CRLF), body[:80]
    chunks = body.split(CRLF + delimiter)
    chunks[0] = chunks[0][len(delimiter) :]
    assert chunks[-1] in (b"--", b"--\r\n"), f"not closed: {chunks[-1][-40:]!r}"
    parts = []
    for chunk in chunks[:-1]:
        assert chunk.startswith(CRLF)
        parts.append(chunk[2:])
    return parts


def read_parts(content_type: str, body: bytes) -> list[Part | list[Part]]:
    """The embedded responses, in order; a changeset's responses as a nested list."""
    match = re.fullmatch(r"multipart/mixed; boundary=(\S+)", content_type)
    assert match is not None, content_type
    answer: list[Part | list[Part]] = []
    for raw in split_multipart(body, match.group(1)):
        mime, content = _head(raw)
        if mime["content-type"].startswith("multipart/mixed"):
            nested = read_parts(mime["content-type"], content + CRLF)
            assert all(isinstance(part, Part) for part in nested)
            answer.append(nested)  # type: ignore[arg-type]
            continue
        assert mime["content-type"] == "application/http" and mime["content-transfer-encoding"] == "binary"
        status_line, _, rest = content.partition(CRLF)
        version, status, _ = status_line.decode().split(" ", 2)
        assert version == "HTTP/1.1"
        headers, inner_body = _head(rest)
        answer.append(Part(mime, int(status), headers, inner_body))
    return answer


def parts_of(response: requests.Response) -> list[Part | list[Part]]:
    return read_parts(response.headers["Content-Type"], response.content)


def flat(response: requests.Response) -> list[Part]:
    out: list[Part] = []
    for item in parts_of(response):
        out.extend(item if isinstance(item, list) else [item])
    return out


def error_of(response: requests.Response) -> tuple[str, str]:
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    return error["code"], error["message"]


# ----- $batch: the happy path ----------------------------------------------------------------------------------


@pytest.mark.parametrize("quoted", [False, True])
def test_a_batch_answers_200_with_one_part_per_operation_in_order(standin, http, quoted):
    body = multipart(
        [
            opt_out(A),  # absolute path
            opt_out(B, f"contacts({B})"),  # relative to the service root
            opt_out(C, f"{standin.url}{API}contacts({C})"),
        ]
    )  # absolute URL
    response = post_batch(http, standin, body, quoted=quoted)
    assert response.status_code == 200
    boundary = re.fullmatch(
        r"multipart/mixed; boundary=(batchresponse_" + GUID + ")", response.headers["Content-Type"]
    ).group(1)
    assert boundary != "batch_3a9c"
    parts = parts_of(response)
    assert [part.status for part in parts] == [204, 204, 204]  # type: ignore[union-attr]
    assert [part.headers["odata-entityid"] for part in parts] == [  # type: ignore[union-attr]
        f"{standin.url}{API}contacts({row_id})" for row_id in (A, B, C)
    ]
    assert all(part.body == b"" and part.headers["odata-version"] == "4.0" for part in parts)  # type: ignore[union-attr]
    assert standin.writes == [("contact", row_id, {"donotbulkemail": True}) for row_id in (A, B, C)]
    assert standin.client_bugs == []


def test_each_batch_gets_a_fresh_response_boundary(standin, http):
    first, second = (post_batch(http, standin, multipart([opt_out(A)])) for _ in range(2))
    assert first.headers["Content-Type"] != second.headers["Content-Type"]


def test_a_batch_is_one_request_and_its_operations_are_recorded_separately(standin, http):
    body = multipart([opt_out(A), opt_out(MISSING), operation("GET", f"contacts({B})?$select=donotbulkemail")])
    post_batch(http, standin, body, continue_on_error=True)
    post_batch(http, standin, multipart([opt_out(C)]))
    (first, second) = standin.requests
    assert (first.method, first.path, first.status, first.batch) == ("POST", API + "$batch", 200, 1)
    assert second.batch == 2
    assert [(op.method, op.path, op.status, op.batch) for op in standin.operations] == [
        ("PATCH", f"{API}contacts({A})", 204, 1),
        ("PATCH", f"{API}contacts({MISSING})", 404, 1),
        ("GET", f"{API}contacts({B})?$select=donotbulkemail", 200, 1),
        ("PATCH", f"{API}contacts({C})", 204, 2),
    ]
    assert standin.operations[0].headers["If-Match"] == "*"
    assert standin.operations[0].body == b'{"donotbulkemail": true}'


def test_a_get_outside_a_changeset_returns_the_row(standin, http):
    standin.add_row("contact", B, donotbulkemail=True, emailaddress1="b@example.com")
    response = post_batch(
        http,
        standin,
        multipart(
            [
                operation(
                    "GET",
                    f"{API}contacts({B})?$select=donotbulkemail,emailaddress1",
                    headers=[("Accept", "application/json")],
                ),
                operation("GET", f"{API}contacts({MISSING})"),
                operation("GET", f"{API}WhoAmI"),
            ]
        ),
        continue_on_error=True,
    )
    found, missing, whoami = parts_of(response)
    assert found.status == 200 and found.headers["content-type"].startswith("application/json")  # type: ignore[union-attr]
    row = json.loads(found.body)  # type: ignore[union-attr]
    assert (row["donotbulkemail"], row["emailaddress1"], row["contactid"]) == (True, "b@example.com", B)
    assert missing.status == 404 and whoami.status == 200  # type: ignore[union-attr]
    assert json.loads(whoami.body)["UserId"] == standin.user_id  # type: ignore[union-attr]


def test_inner_patches_keep_every_rule_of_a_direct_patch(standin, http):
    etag = http.get(f"{standin.url}{API}contacts({A})", timeout=TIMEOUT).json()["@odata.etag"]
    response = post_batch(
        http,
        standin,
        multipart(
            [
                opt_out(A, if_match='W/"1"'),  # stale etag
                opt_out(A, changes={"DoNotBulkEmail": True}),  # unknown column
                opt_out(A, changes={"donotbulkemail": "true"}),  # not a boolean
                operation("PATCH", f"{API}contacts({B})", {"donotbulkemail": True}),  # no If-Match: would upsert
                opt_out(A, f"{API}Contacts({A})"),  # unknown entity set
                opt_out(A, if_match=etag),  # current etag
                opt_out(A, f"{API}contacts({A})?$select=donotbulkemail", content_id=None, changes={"donotemail": True}),
            ]
        ),
        continue_on_error=True,
    )
    statuses = [part.status for part in parts_of(response)]  # type: ignore[union-attr]
    assert statuses == [412, 400, 400, 400, 404, 204, 204]
    codes = [part.error()[0] for part in parts_of(response)[:5]]  # type: ignore[union-attr]
    assert codes == ["0x80060882", "0x0", "0x80048d19", "STANDIN_UPSERT", "0x8006088a"]
    assert len(standin.client_bugs) == 1 and "upsert" in standin.client_bugs[0]
    assert standin.row("contact", B)["donotbulkemail"] is False


def test_prefer_return_representation_inside_a_batch(standin, http):
    response = post_batch(
        http,
        standin,
        multipart(
            [
                operation(
                    "PATCH",
                    f"{API}contacts({A})?$select=donotbulkemail",
                    {"donotbulkemail": True},
                    headers=[("If-Match", "*"), ("Prefer", "return=representation")],
                )
            ]
        ),
    )
    (part,) = parts_of(response)
    assert part.status == 200 and json.loads(part.body)["donotbulkemail"] is True  # type: ignore[union-attr]


def test_an_empty_batch_answers_200_with_no_parts(standin, http):
    response = post_batch(http, standin, b"--batch_3a9c--\r\n")
    assert response.status_code == 200 and parts_of(response) == []


# ----- $batch: malformed requests ----------------------------------------------------------------------------


def test_lf_only_line_endings_answer_400_stream_was_not_readable_and_run_nothing(standin, http):
    body = multipart([opt_out(A), opt_out(B)]).replace(CRLF, b"\n")
    response = post_batch(http, standin, body)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    (part,) = parts_of(response)
    assert part.status == 400  # type: ignore[union-attr]
    code, message = part.error()  # type: ignore[union-attr]
    assert code == "0x80048d19"
    assert message.startswith("Error identified in Payload provided by the user for Entity :'contacts'")
    assert message.endswith("Stream was not readable.")
    assert standin.writes == [] and standin.operations == []


def test_a_missing_final_crlf_is_unreadable_too(standin, http):
    body = multipart([opt_out(A)]).removesuffix(CRLF)
    response = post_batch(http, standin, body)
    assert response.status_code == 400
    (part,) = parts_of(response)
    assert part.error()[1].endswith("Stream was not readable.")  # type: ignore[union-attr]
    assert standin.writes == []


def test_lf_inside_a_json_body_is_fine_when_the_framing_is_crlf(standin, http):
    body = multipart(
        [operation("PATCH", f"{API}contacts({A})", b'{\n  "donotbulkemail": true\n}', headers=[("If-Match", "*")])]
    )
    assert post_batch(http, standin, body).status_code == 200
    assert standin.row("contact", A)["donotbulkemail"] is True


def test_more_than_1000_operations_answer_400_and_run_nothing(standin, http):
    assert MAX_BATCH_OPERATIONS == 1000
    response = post_batch(http, standin, multipart([opt_out(A)] * 1001))
    assert response.status_code == 400
    code, message = error_of(response)
    assert code == "0x80048d19" and "maximum number of '1000'" in message
    assert standin.writes == [] and standin.operations == []


def test_changeset_contents_count_toward_the_1000(standin, http):
    body = multipart([changeset([opt_out(A)] * 600), *([opt_out(B)] * 401)])
    response = post_batch(http, standin, body)
    assert response.status_code == 400 and "maximum number of '1000'" in error_of(response)[1]
    oversized = post_batch(http, standin, multipart([changeset([opt_out(A)] * 1001)]))
    assert error_of(oversized)[1] == (
        "The current change set contains too many operations. A maximum number "
        "of '1000' operations are allowed in a change set."
    )
    assert standin.writes == []


def test_exactly_1000_operations_run(standin, http):
    response = post_batch(http, standin, multipart([opt_out(A)] * 1000))
    assert response.status_code == 200 and len(parts_of(response)) == 1000
    assert len(standin.writes) == 1000 and len(standin.requests) == 1


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/mixed", multipart([opt_out(A)])),  # no boundary
    ],
)
def test_a_batch_must_be_multipart_with_a_boundary(standin, http, content_type, body):
    response = http.post(
        standin.url + API + "$batch", data=body, headers={"Content-Type": content_type}, timeout=TIMEOUT
    )
    assert response.status_code == 400 and error_of(response)[0] == "0x80048d19"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (multipart([b"Content-Transfer-Encoding: binary\r\n\r\nPATCH contacts HTTP/1.1\r\n\r\n"]), "'Content-Type'"),
        (
            multipart([b"Content-Type: application/http\r\n\r\nGET WhoAmI HTTP/1.1\r\n\r\n"]),
            "Content-Transfer-Encoding",
        ),
        (multipart([operation("GET", "WhoAmI").replace(b" HTTP/1.1", b"")]), "request line"),
        (multipart([operation("GET", "WhoAmI").replace(b"HTTP/1.1", b"HTTP/1.0")]), "HTTP version"),
        (multipart([changeset([operation("GET", f"contacts({A})")])]), "invalid HTTP method 'GET'"),
        (multipart([changeset([changeset([opt_out(A)], "changeset_inner")])]), "Nested change sets"),
        (b"--batch_3a9c\r\n" + opt_out(A) + CRLF, "unexpected end of input"),  # never closed
    ],
)
def test_a_malformed_batch_answers_400_before_anything_runs(standin, http, body, message):
    response = post_batch(http, standin, multipart([opt_out(B)])[: -len(b"--batch_3a9c--\r\n")] + body)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert message in error_of(response)[1]
    assert standin.writes == [] and standin.operations == []


def test_batches_cannot_nest(standin, http):
    inner = multipart([opt_out(A)], "batch_inner")
    response = post_batch(
        http,
        standin,
        multipart(
            [
                operation(
                    "POST", f"{API}$batch", inner, headers=[("Content-Type", "multipart/mixed; boundary=batch_inner")]
                ),
            ]
        ),
    )
    assert response.status_code == 400
    (part,) = parts_of(response)
    assert part.status == 400 and standin.writes == []  # type: ignore[union-attr]


def test_only_post_runs_a_batch(standin, http):
    response = http.get(standin.url + API + "$batch", timeout=TIMEOUT)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


# ----- $batch: errors, continue-on-error --------------------------------------------------------------------------


def test_without_continue_on_error_the_first_failure_stops_the_batch_and_answers_for_it(standin, http):
    response = post_batch(http, standin, multipart([opt_out(A), opt_out(MISSING), opt_out(B)]))
    assert response.status_code == 404  # the failing part's status, as Microsoft's example shows for a 400
    first, failed = parts_of(response)  # the parts so far, the failing one last; B never ran
    assert first.status == 204 and failed.status == 404  # type: ignore[union-attr]
    assert failed.error() == ("0x80040217", f"contact With Id = {MISSING} Does Not Exist")  # type: ignore[union-attr]
    # No changeset: A's write stays committed, B's never ran.
    assert standin.writes == [("contact", A, {"donotbulkemail": True})]
    assert [op.status for op in standin.operations] == [204, 404]


def test_a_failing_first_part_is_the_only_part(standin, http):
    response = post_batch(http, standin, multipart([opt_out(A, changes={"nosuchcolumn": 1}), opt_out(B)]))
    assert response.status_code == 400
    (part,) = parts_of(response)
    assert part.status == 400 and part.error()[0] == "0x0"  # type: ignore[union-attr]
    assert standin.writes == []


@pytest.mark.parametrize(
    "prefer", ["odata.continue-on-error", "odata.continue-on-error=true", "return=minimal, odata.continue-on-error"]
)
def test_with_continue_on_error_the_batch_answers_200_and_every_part_its_own_status(standin, http, prefer):
    response = post_batch(
        http, standin, multipart([opt_out(MISSING), opt_out(A), opt_out(B)]), headers={"Prefer": prefer}
    )
    assert response.status_code == 200
    parts = parts_of(response)
    assert [part.status for part in parts] == [404, 204, 204]  # type: ignore[union-attr]
    assert parts[0].error()[0] == "0x80040217"  # type: ignore[union-attr]
    assert {row_id for _, row_id, _ in standin.writes} == {A, B}


def test_continue_on_error_false_stops_at_the_first_failure(standin, http):
    response = post_batch(
        http, standin, multipart([opt_out(MISSING), opt_out(A)]), headers={"Prefer": "odata.continue-on-error=false"}
    )
    assert response.status_code == 404 and standin.writes == []


# ----- $batch: changesets -------------------------------------------------------------------------------------------


def test_a_changeset_commits_together_and_answers_in_a_nested_changesetresponse(standin, http):
    body = multipart([changeset([opt_out(A, content_id="1"), opt_out(B, content_id="2")]), opt_out(C)])
    response = post_batch(http, standin, body)
    assert response.status_code == 200
    nested, last = parts_of(response)
    assert isinstance(nested, list) and [part.status for part in nested] == [204, 204]
    assert [part.mime["content-id"] for part in nested] == ["1", "2"]
    raw = response.content.decode()
    assert re.search(r"Content-Type: multipart/mixed; boundary=changesetresponse_" + GUID, raw)
    assert "changeset_7f1c" not in raw
    assert last.status == 204  # type: ignore[union-attr]
    assert [row_id for _, row_id, _ in standin.writes] == [A, B, C]


def test_a_failure_in_a_changeset_rolls_back_that_changeset_only(standin, http):
    body = multipart(
        [
            opt_out(C),
            changeset([opt_out(A, content_id="1"), opt_out(MISSING, content_id="2"), opt_out(B, content_id="3")]),
            opt_out(B),
        ]
    )
    response = post_batch(http, standin, body, continue_on_error=True)
    assert response.status_code == 200
    before, rolled_back, after = parts_of(response)
    # The failed changeset answers with one application/http error part, not a changesetresponse.
    assert isinstance(rolled_back, Part) and rolled_back.status == 404
    assert rolled_back.error()[0] == "0x80040217"
    assert before.status == after.status == 204  # type: ignore[union-attr]
    assert standin.row("contact", A)["donotbulkemail"] is False  # written, then rolled back
    assert standin.row("contact", B)["donotbulkemail"] is True  # by the last part, outside the changeset
    assert standin.writes == [("contact", C, {"donotbulkemail": True}), ("contact", B, {"donotbulkemail": True})]
    # The changeset's third operation never ran; its first answered 204 before the rollback.
    assert [(op.path, op.status) for op in standin.operations][1:3] == [
        (f"{API}contacts({A})", 204),
        (f"{API}contacts({MISSING})", 404),
    ]


def test_a_failed_changeset_without_continue_on_error_stops_the_batch(standin, http):
    body = multipart([changeset([opt_out(A), opt_out(MISSING)]), opt_out(B)])
    response = post_batch(http, standin, body)
    assert response.status_code == 404
    (part,) = parts_of(response)
    assert isinstance(part, Part) and part.status == 404
    assert standin.writes == []
    assert standin.rows("contact")[A]["donotbulkemail"] is False


def test_content_id_references_resolve_within_a_changeset(standin, http):
    body = multipart(
        [
            changeset(
                [
                    opt_out(A, content_id="1"),
                    operation("PATCH", "$1", {"donotemail": True}, headers=[("If-Match", "*")], content_id="2"),
                ]
            )
        ]
    )
    response = post_batch(http, standin, body)
    assert response.status_code == 200
    assert standin.row("contact", A) == {"contactid": A, "donotbulkemail": True, "donotemail": True}
    undeclared = post_batch(
        http,
        standin,
        multipart(
            [changeset([operation("PATCH", "$7", {"donotemail": False}, headers=[("If-Match", "*")], content_id="1")])]
        ),
    )
    assert undeclared.status_code == 400
    (part,) = parts_of(undeclared)
    assert part.error()[1] == "Content-ID Reference: '$7' does not exist in the batch context."  # type: ignore[union-attr]


def test_a_changeset_sees_its_own_writes_and_etags(standin, http):
    etag = http.get(f"{standin.url}{API}contacts({A})", timeout=TIMEOUT).json()["@odata.etag"]
    # The first write changes the row, so the etag read before it is stale for the second one.
    response = post_batch(
        http, standin, multipart([changeset([opt_out(A, content_id="1"), opt_out(A, if_match=etag, content_id="2")])])
    )
    assert response.status_code == 412
    assert standin.writes == [] and standin.row("contact", A)["donotbulkemail"] is False


def test_a_row_deleted_while_its_changeset_runs_fails_the_commit(http):
    with DataverseStandIn(latency=0.2) as server:
        server.add_row("contact", A)
        server.add_row("contact", B)
        answer: list[requests.Response] = []
        thread = threading.Thread(
            target=lambda: answer.append(post_batch(http, server, multipart([changeset([opt_out(A), opt_out(B)])])))
        )
        thread.start()
        time.sleep(0.1)  # A is written to its copy; B's operation waits out its service time
        server.delete_row("contact", A)
        thread.join(timeout=TIMEOUT)
        assert answer[0].status_code == 404
        assert server.writes == [] and server.row("contact", B) == {"contactid": B}


# ----- $batch: faults and authentication ----------------------------------------------------------------------------


def test_an_inner_fault_fails_one_part_while_the_others_succeed(standin, http):
    standin.inject(Fault(status=429, retry_after=2.5, inner=True, path_contains=f"contacts({C})"))
    response = post_batch(
        http, standin, multipart([opt_out(A), opt_out(B), opt_out(C), opt_out(B)]), continue_on_error=True
    )
    assert response.status_code == 200
    parts = parts_of(response)
    assert [part.status for part in parts] == [204, 204, 429, 204]  # type: ignore[union-attr]
    throttled = parts[2]
    assert throttled.headers["retry-after"] == "3"  # type: ignore[union-attr]
    assert throttled.error()[0] == "0x80072322"  # type: ignore[union-attr]
    assert standin.row("contact", C)["donotbulkemail"] is False
    assert standin.pending_faults == 0
    assert [r.status for r in standin.requests] == [200]


def test_an_inner_429_without_continue_on_error_answers_429_with_retry_after(standin, http):
    standin.inject(Fault(status=429, retry_after=4, inner=True, method="PATCH"))
    response = post_batch(http, standin, multipart([opt_out(A), opt_out(B)]))
    assert response.status_code == 429 and response.headers["Retry-After"] == "4"
    (part,) = parts_of(response)
    assert part.status == 429 and standin.writes == []  # type: ignore[union-attr]


def test_inner_faults_do_not_touch_plain_requests_and_outer_faults_take_the_whole_batch(standin, http):
    standin.inject(Fault(status=503, inner=True))
    assert http.get(f"{standin.url}{API}WhoAmI", timeout=TIMEOUT).status_code == 200
    assert standin.pending_faults == 1
    standin.inject(Fault(status=503))  # an outer one: the $batch request itself
    first = post_batch(http, standin, multipart([opt_out(A)]), continue_on_error=True)
    assert first.status_code == 503 and standin.writes == [] and standin.operations == []
    second = post_batch(http, standin, multipart([opt_out(A), opt_out(B)]), continue_on_error=True)
    assert [part.status for part in parts_of(second)] == [503, 204]  # type: ignore[union-attr]


def test_an_inner_after_fault_commits_the_write_but_reports_the_failure(standin, http):
    standin.inject(Fault(status=504, inner=True, after=True))
    response = post_batch(http, standin, multipart([opt_out(A)]), continue_on_error=True)
    (part,) = parts_of(response)
    assert part.status == 504 and standin.row("contact", A)["donotbulkemail"] is True  # type: ignore[union-attr]


def test_an_inner_drop_loses_the_answer_after_the_earlier_operations_ran(standin, http):
    standin.inject(Fault(drop=True, inner=True, path_contains=B))
    with pytest.raises(requests.ConnectionError):
        post_batch(http, standin, multipart([opt_out(A), opt_out(B), opt_out(C)]), continue_on_error=True)
    assert standin.writes == [("contact", A, {"donotbulkemail": True})]
    assert standin.requests[-1].status == 0


def test_a_cut_fault_runs_the_whole_batch_then_cuts_its_answer_off(standin, http):
    standin.inject(Fault(cut=True, path_contains="$batch"))
    body = multipart([opt_out(A), operation("GET", f"{API}contacts({B})"), opt_out(C)])
    response = post_batch(http, standin, body, continue_on_error=True, stream=True)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("multipart/mixed")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = response.content
    assert {row_id for _, row_id, _ in standin.writes} == {A, C}
    assert [(r.status, r.batch) for r in standin.operations] == [(204, 1), (200, 1), (204, 1)]
    (cut,) = standin.requests
    assert cut.status == 200 and cut.cut and cut.batch == 1
    standin.inject(Fault(cut=True))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # without stream=True: raised by send()
        post_batch(http, standin, multipart([opt_out(B)]))
    assert standin.row("contact", B)["donotbulkemail"] is True


def test_an_inner_retry_after_header_reaches_the_part_and_the_batch_as_given(standin, http):
    standin.inject(Fault(status=429, retry_after_header="1e400", inner=True, path_contains=B))
    stopped = post_batch(http, standin, multipart([opt_out(A), opt_out(B), opt_out(C)]))
    assert stopped.status_code == 429 and stopped.headers["Retry-After"] == "1e400"
    assert [part.status for part in parts_of(stopped)] == [204, 429]  # type: ignore[union-attr]
    assert parts_of(stopped)[1].headers["retry-after"] == "1e400"  # type: ignore[union-attr]


def test_inner_faults_can_come_at_a_seeded_rate(http):
    def statuses(seed: int) -> list[int]:
        with DataverseStandIn() as server:
            server.add_row("contact", A)
            server.set_fault_rate(0.5, [Fault(status=503, inner=True)], seed=seed)
            response = post_batch(http, server, multipart([opt_out(A)] * 30), continue_on_error=True)
            assert response.status_code == 200
            return [part.status for part in parts_of(response)]  # type: ignore[union-attr]

    assert statuses(3) == statuses(3) and {204, 503} <= set(statuses(3))


def test_the_outer_request_is_authenticated_and_inner_authorization_headers_are_ignored(standin, http):
    inner_with_token = operation(
        "PATCH",
        f"{API}contacts({A})",
        {"donotbulkemail": True},
        headers=[("If-Match", "*"), ("Authorization", "Bearer local-token")],
    )
    anonymous = requests.post(
        standin.url + API + "$batch",
        data=multipart([inner_with_token]),
        timeout=TIMEOUT,
        headers={"Content-Type": "multipart/mixed; boundary=batch_3a9c"},
    )
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer ")
    assert standin.writes == [] and standin.operations == []
    inner_wrong = operation(
        "PATCH",
        f"{API}contacts({A})",
        {"donotbulkemail": True},
        headers=[("If-Match", "*"), ("Authorization", "Bearer wrong")],
    )
    assert post_batch(http, standin, multipart([inner_wrong])).status_code == 200
    assert "Authorization" not in standin.operations[0].headers


def test_without_an_application_user_a_batch_gets_403(http):
    with DataverseStandIn(app_user=False) as server:
        server.add_row("contact", A)
        response = post_batch(http, server, multipart([opt_out(A)]))
        assert response.status_code == 403 and error_of(response)[0] == "0x80072560"
        assert server.operations == []


# ----- service protection -------------------------------------------------------------------------------------------


def whoami(session: requests.Session, server: DataverseStandIn) -> requests.Response:
    return session.get(f"{server.url}{API}WhoAmI", timeout=TIMEOUT)


def test_the_request_after_n_in_the_window_gets_429_with_retry_after_and_the_window_slides(http):
    with DataverseStandIn(protection=ServiceProtection(requests=3, window=1.5)) as server:
        first_sent = time.monotonic()
        assert whoami(http, server).status_code == 200
        time.sleep(0.6)
        assert [whoami(http, server).status_code for _ in range(2)] == [200, 200]
        throttled = whoami(http, server)
        assert throttled.status_code == 429
        assert error_of(throttled) == (
            "0x80072322",
            "Number of requests exceeded the limit of 3 over time window of 1.5 seconds.",
        )
        assert throttled.headers["Retry-After"] == "1"  # the first request leaves the window in ~0.9 s
        assert server.throttled == 1
        time.sleep(max(0.0, first_sent + 1.55 - time.monotonic()))  # the first request has slid out ...
        assert whoami(http, server).status_code == 200
        assert whoami(http, server).status_code == 429  # ... the two later ones have not
        assert server.throttled == 2 and server.window_stats().in_window == 3


def test_retry_after_is_the_wait_until_the_oldest_request_leaves_the_window(http):
    with DataverseStandIn(protection=ServiceProtection(requests=2, window=3)) as server:
        whoami(http, server)
        time.sleep(1.2)
        whoami(http, server)
        throttled = whoami(http, server)
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"  # ~1.8 s, rounded up


def test_429s_401s_and_injected_faults_do_not_count_toward_the_window(http):
    with DataverseStandIn(protection=ServiceProtection(requests=2, window=60)) as server:
        server.inject(Fault(status=503), Fault(status=429))
        assert whoami(http, server).status_code == 503
        assert whoami(http, server).status_code == 429
        assert requests.get(f"{server.url}{API}WhoAmI", timeout=TIMEOUT).status_code == 401
        assert [whoami(http, server).status_code for _ in range(4)] == [200, 200, 429, 429]
        stats = server.window_stats()
        assert (stats.admitted, stats.in_window, stats.throttled) == (2, 2, 2)
        assert server.throttled == 2  # the injected 429 is not the protection's


def test_a_batch_counts_once_toward_the_request_limit(standin, http):
    with DataverseStandIn(protection=ServiceProtection(requests=2, window=60)) as server:
        for row_id in (A, B, C):
            server.add_row("contact", row_id)
        big = multipart([opt_out(row_id) for row_id in (A, B, C)] * 10)
        assert post_batch(http, server, big).status_code == 200
        assert post_batch(http, server, big).status_code == 200
        refused = post_batch(http, server, big)
        assert refused.status_code == 429 and error_of(refused)[0] == "0x80072322"
        assert len(server.operations) == 60 and len(server.requests) == 3
        assert server.window_stats().admitted == 2


def test_concurrent_requests_beyond_the_limit_get_429_0x80072326_at_once(http):
    with DataverseStandIn(protection=ServiceProtection(requests=100, window=60, concurrent=2), latency=0.4) as server:
        gate = threading.Barrier(4)
        answers: list[tuple[int, float, requests.Response]] = []
        lock = threading.Lock()

        def call() -> None:
            with requests.Session() as session:
                session.headers["Authorization"] = "Bearer local-token"
                session.get(f"{server.url}{API}WhoAmI", timeout=TIMEOUT)  # connect, warm up: 0.4 s each
                gate.wait(timeout=TIMEOUT)
                started = time.monotonic()
                response = whoami(session, server)
                with lock:
                    answers.append((response.status_code, time.monotonic() - started, response))

        # Two at a time for the warm-up (the limit is 2), then all four at once.
        threads = [threading.Thread(target=call) for _ in range(4)]
        for index, thread in enumerate(threads):
            thread.start()
            if index == 1:
                time.sleep(0.5)
        for thread in threads:
            thread.join(timeout=TIMEOUT)
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200, 200, 429, 429]
        for status, elapsed, response in answers:
            if status == 429:
                assert error_of(response) == ("0x80072326", "Number of concurrent requests exceeded the limit of 2.")
                assert response.headers["Retry-After"] == "1"
            else:
                assert elapsed >= 0.4  # the service time
        # Answered at once, before the admitted requests' service time was over.
        assert max(e for s_, e, _ in answers if s_ == 429) < min(e for s_, e, _ in answers if s_ == 200)
        stats = server.window_stats()
        assert stats.peak_in_flight == 2 and stats.throttled_by_code == {"0x80072326": 2}


def test_combined_execution_time_beyond_the_limit_gets_429_0x80072321(http):
    protection = ServiceProtection(requests=100, window=2, concurrent=10, execution_ms=150)
    with DataverseStandIn(protection=protection, latency=0.1) as server:
        assert whoami(http, server).status_code == 200  # ~100 ms
        assert whoami(http, server).status_code == 200  # ~200 ms: over the limit now
        throttled = whoami(http, server)
        assert throttled.status_code == 429
        assert error_of(throttled) == (
            "0x80072321",
            "Combined execution time of incoming requests exceeded "
            "limit of 150 milliseconds over time window of 2 seconds. "
            "Decrease number of concurrent requests or reduce the "
            "duration of requests and try again later.",
        )
        assert throttled.headers["Retry-After"] == "2"
        assert server.window_stats().execution_ms_in_window >= 200


def test_a_batch_takes_the_service_time_once_per_operation_and_its_whole_time_counts(http):
    protection = ServiceProtection(requests=100, window=5, execution_ms=10_000)
    with DataverseStandIn(protection=protection, latency=0.05) as server:
        server.add_row("contact", A)
        started = time.monotonic()
        assert post_batch(http, server, multipart([opt_out(A)] * 6)).status_code == 200
        assert time.monotonic() - started >= 0.3
        stats = server.window_stats()
        assert stats.admitted == 1 and stats.execution_ms_in_window >= 300


def test_window_stats_give_the_allowed_and_the_achieved_rate(http):
    with DataverseStandIn(protection=ServiceProtection(requests=5, window=2)) as server:
        before = server.window_stats()
        assert before.admitted == 0 and before.achieved_rate == 0.0 and before.allowed_rate == 2.5
        for _ in range(8):
            whoami(http, server)
            time.sleep(0.02)
        stats = server.window_stats()
        assert stats.allowed_rate == 2.5 and stats.protection == ServiceProtection(requests=5, window=2)
        assert (stats.admitted, stats.throttled, stats.in_window) == (5, 3, 5)
        assert stats.throttled_by_code == {"0x80072322": 3}
        assert stats.achieved_rate > stats.allowed_rate  # a burst: all five at the start of the window
        assert stats.in_flight == 0 and stats.peak_in_flight == 1


def test_without_protection_nothing_is_throttled_but_requests_are_counted(standin, http):
    for _ in range(3):
        assert whoami(http, standin).status_code == 200
    stats = standin.window_stats()
    assert (stats.admitted, stats.throttled, stats.in_window, stats.allowed_rate) == (3, 0, 0, None)
    assert standin.throttled == 0 and "x-ms-ratelimit-burst-remaining-xrm-requests" not in whoami(http, standin).headers


def test_protected_answers_carry_the_rate_limit_debugging_headers(http):
    with DataverseStandIn(protection=ServiceProtection(requests=4, window=60, execution_ms=60_000)) as server:
        first = whoami(http, server)
        assert first.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "3"
        assert int(first.headers["x-ms-ratelimit-time-remaining-xrm-requests"]) <= 60_000


def test_a_refreshed_token_shares_the_users_budget(http):
    with DataverseStandIn(protection=ServiceProtection(requests=1, window=60)) as server:
        assert whoami(http, server).status_code == 200
        server.rotate_token("fresh-token")
        http.headers["Authorization"] = "Bearer fresh-token"
        assert whoami(http, server).status_code == 429


def test_latency_alone_slows_every_request(http):
    with DataverseStandIn(latency=0.15) as server:
        started = time.monotonic()
        assert whoami(http, server).status_code == 200
        assert time.monotonic() - started >= 0.15


def test_stop_does_not_wait_out_the_service_time():
    server = DataverseStandIn(latency=60).start()
    stopped, outcome = stop_during_a_request(server, headers={"Authorization": "Bearer local-token"})
    assert stopped and outcome == [requests.ConnectionError]


@pytest.mark.parametrize(
    "kwargs",
    [{"requests": 0}, {"requests": 1.5}, {"window": 0}, {"concurrent": 0}, {"execution_ms": 0}, {"requests": True}],
)
def test_invalid_protection_is_refused(kwargs):
    with pytest.raises(ValueError):
        ServiceProtection(**kwargs)


def test_invalid_latency_and_protection_types_are_refused():
    with pytest.raises(ValueError):
        DataverseStandIn(latency=-1)
    with pytest.raises(TypeError):
        DataverseStandIn(protection={"requests": 5})  # type: ignore[arg-type]


# ----- EntityDefinitions, as the official Python SDK reads them --------------------------------------------------

SDK_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "User-Agent": "DataverseSvcPythonClient:1.1.0",
    "x-ms-client-request-id": str(uuid.uuid4()),
}


def sdk_get(session: requests.Session, server: DataverseStandIn, path: str, **params: str) -> requests.Response:
    return session.get(
        f"{server.url}/api/data/v9.2/{path}", params=params or None, headers=SDK_HEADERS, timeout=TIMEOUT
    )


def test_the_sdks_entity_set_lookup_gets_a_collection_with_the_entity_set(standin, http):
    # PowerPlatform-Dataverse-Client 1.1.0, _entity_set_from_schema_name(): exactly these params.
    response = sdk_get(
        http,
        standin,
        "EntityDefinitions",
        **{"$select": "LogicalName,EntitySetName,PrimaryIdAttribute", "$filter": "LogicalName eq 'contact'"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"] == (
        f"{standin.url}{API}$metadata#EntityDefinitions(LogicalName,EntitySetName,PrimaryIdAttribute)"
    )
    (entity,) = body["value"]
    assert re.fullmatch(GUID, entity.pop("MetadataId"))  # always there: it is the key
    assert entity == {"LogicalName": "contact", "EntitySetName": "contacts", "PrimaryIdAttribute": "contactid"}


def test_the_sdks_table_lookup_gets_schema_and_primary_names(standin, http):
    # _get_entity_by_table_schema_name() / tables.get()
    response = sdk_get(
        http,
        standin,
        "EntityDefinitions",
        **{
            "$select": "MetadataId,LogicalName,SchemaName,EntitySetName,PrimaryNameAttribute,PrimaryIdAttribute",
            "$filter": "LogicalName eq 'lead'",
        },
    )
    (entity,) = response.json()["value"]
    assert entity["SchemaName"] == "Lead" and entity["EntitySetName"] == "leads"
    assert entity["PrimaryNameAttribute"] == "fullname" and entity["PrimaryIdAttribute"] == "leadid"
    assert list(entity) == [
        "MetadataId",
        "LogicalName",
        "SchemaName",
        "EntitySetName",
        "PrimaryNameAttribute",
        "PrimaryIdAttribute",
    ]


def test_an_unknown_table_gives_an_empty_collection(standin, http):
    response = sdk_get(
        http,
        standin,
        "EntityDefinitions",
        **{"$select": "LogicalName,EntitySetName,PrimaryIdAttribute", "$filter": "LogicalName eq 'contacts'"},
    )
    assert response.status_code == 200 and response.json()["value"] == []


def test_the_sdks_picklist_lookup_for_string_values_finds_none(standin, http):
    # _bulk_fetch_picklists(): the stand-in's columns are Boolean and text, so no picklists.
    response = http.get(
        f"{standin.url}{API}EntityDefinitions(LogicalName='contact')/Attributes/"
        "Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName"
        "&$expand=OptionSet($select=Options)",
        headers=SDK_HEADERS,
        timeout=TIMEOUT,
    )
    assert response.status_code == 200 and response.json()["value"] == []


def test_the_sdk_flow_for_records_update(standin, http):
    lookup = sdk_get(
        http,
        standin,
        "EntityDefinitions",
        **{"$select": "LogicalName,EntitySetName,PrimaryIdAttribute", "$filter": "LogicalName eq 'contact'"},
    )
    entity_set = lookup.json()["value"][0]["EntitySetName"]
    update = http.patch(
        f"{standin.url}/api/data/v9.2/{entity_set}({A})",
        data=b'{"donotbulkemail": true}',
        headers={**SDK_HEADERS, "If-Match": "*"},
        timeout=TIMEOUT,
    )
    assert update.status_code == 204 and standin.row("contact", A)["donotbulkemail"] is True
    assert standin.client_bugs == []


def test_one_table_by_logical_name_or_metadata_id(standin, http):
    single = sdk_get(
        http, standin, "EntityDefinitions(LogicalName='account')", **{"$select": "LogicalName,EntitySetName"}
    )
    body = single.json()
    assert body["@odata.context"].endswith("#EntityDefinitions(LogicalName,EntitySetName)/$entity")
    assert (body["LogicalName"], body["EntitySetName"]) == ("account", "accounts")
    by_id = sdk_get(http, standin, f"EntityDefinitions({body['MetadataId']})")
    assert by_id.json()["LogicalName"] == "account" and by_id.json()["ObjectTypeCode"] == 1
    assert sdk_get(http, standin, "EntityDefinitions(LogicalName='nosuchtable')").status_code == 404


def test_every_table_without_a_filter_and_extra_tables_included(http):
    with DataverseStandIn(
        tables={"contact": ["donotbulkemail"], "concep_emailcampaignlog": ["concep_activitytype"]},
        entity_sets={"concep_emailcampaignlog": "concep_emailcampaignlogs"},
    ) as server:
        items = sdk_get(http, server, "EntityDefinitions", **{"$select": "LogicalName,EntitySetName"}).json()["value"]
        assert {(item["LogicalName"], item["EntitySetName"]) for item in items} == {
            ("contact", "contacts"),
            ("concep_emailcampaignlog", "concep_emailcampaignlogs"),
        }
        custom = sdk_get(
            http,
            server,
            "EntityDefinitions",
            **{"$filter": "EntitySetName eq 'concep_emailcampaignlogs' and IsCustomEntity eq true"},
        ).json()["value"]
        assert [item["PrimaryIdAttribute"] for item in custom] == ["concep_emailcampaignlogid"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"$select": "LogicalName,Nope"}, 400),
        ({"$filter": "Nope eq 'x'"}, 400),
        ({"$filter": "startswith(LogicalName,'con')"}, 501),
        ({"$expand": "Attributes"}, 501),
    ],
)
def test_metadata_queries_outside_the_model_are_refused_loudly(standin, http, params, status):
    assert sdk_get(http, standin, "EntityDefinitions", **params).status_code == status


def test_metadata_needs_the_bearer_token(standin):
    response = requests.get(f"{standin.url}{API}EntityDefinitions", timeout=TIMEOUT)
    assert response.status_code == 401


# ----- TLS, for clients that refuse http:// (the official SDK does) --------------------------------------------


def test_tls_serves_https_with_a_certificate_the_client_can_trust(http):
    with DataverseStandIn(tls=True) as server:
        assert server.url.startswith("https://127.0.0.1:")
        ca_file = server.ca_file
        response = http.get(f"{server.url}{API}WhoAmI", verify=ca_file, timeout=TIMEOUT)
        assert response.status_code == 200 and response.json()["UserId"] == server.user_id
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{server.url}{API}WhoAmI", timeout=TIMEOUT)  # the system's CAs do not know it
        localhost = server.url.replace("127.0.0.1", "localhost")
        assert http.get(f"{localhost}{API}WhoAmI", verify=ca_file, timeout=TIMEOUT).status_code == 200
    assert not os.path.exists(ca_file)  # removed by stop(), the idle keep-alive connection closed
    with pytest.raises(RuntimeError):
        _ = server.ca_file
    with pytest.raises(RuntimeError):
        _ = DataverseStandIn().ca_file
