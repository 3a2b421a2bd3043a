"""The $batch wire format (optout_core.dataverse.odata_batch): CRLF multipart requests and responses."""

import pytest

from optout_core.dataverse import odata_batch as batch

CONTACT = "a1000000-0000-4000-8000-000000000001"


def test_a_request_is_crlf_multipart_with_one_part_per_operation_and_no_changeset():
    ops = [
        batch.Request(
            "PATCH",
            f"/api/data/v9.2/contacts({CONTACT})",
            {"Content-Type": "application/json", "If-Match": "*"},
            b'{"donotbulkemail":true}',
        ),
        batch.Request("GET", "/api/data/v9.2/WhoAmI"),
    ]
    content_type, body = batch.build(ops, boundary="batch_x")
    assert content_type == "multipart/mixed; boundary=batch_x"
    assert body.count(b"--batch_x\r\n") == 2 and body.endswith(b"--batch_x--\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")  # CRLF only: Dataverse refuses LF-only bodies
    assert f"PATCH /api/data/v9.2/contacts({CONTACT}) HTTP/1.1\r\n".encode() in body
    assert b"Content-Transfer-Encoding: binary\r\n" in body and b"changeset" not in body
    assert b'If-Match: *\r\n\r\n{"donotbulkemail":true}\r\n' in body


def test_a_batch_holds_1_to_1000_operations():
    op = batch.Request("GET", "/api/data/v9.2/WhoAmI")
    assert batch.build([op] * 1000)
    for count in (0, 1001):
        with pytest.raises(ValueError):
            batch.build([op] * count)


RESPONSE = (
    b"--batchresponse_1d2c\r\n"
    b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n"
    b"OData-EntityId: https://org/api/data/v9.2/contacts(" + CONTACT.encode() + b")\r\n\r\n\r\n"
    b"--batchresponse_1d2c\r\n"
    b"Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n"
    b'{"error":{"code":"0x80040217","message":"contact With Id = x Does Not Exist"}}\r\n'
    b"--batchresponse_1d2c\r\n"
    b"Content-Type: multipart/mixed; boundary=changesetresponse_77\r\n\r\n"
    b"--changesetresponse_77\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    b"Content-ID: 1\r\n\r\nHTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n\r\n\r\n"
    b"--changesetresponse_77--\r\n"
    b"--batchresponse_1d2c--\r\n"
)


def test_a_response_is_read_part_by_part_with_the_boundary_from_its_content_type():
    parts = batch.parse('multipart/mixed; boundary="batchresponse_1d2c"', RESPONSE)
    assert [p.status for p in parts] == [204, 404, 429]
    assert parts[0].headers["odata-entityid"].endswith(f"contacts({CONTACT})")
    assert parts[1].body.startswith(b'{"error":{"code":"0x80040217"')
    assert parts[2].headers["retry-after"] == "3"


def test_lf_only_responses_are_read_too():
    parts = batch.parse("multipart/mixed; boundary=batchresponse_1d2c", RESPONSE.replace(b"\r\n", b"\n"))
    assert [p.status for p in parts] == [204, 404, 429]


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/json", b"{}"),
        ("multipart/mixed; boundary=other", RESPONSE),
        (
            "multipart/mixed; boundary=batchresponse_1d2c",
            b"--batchresponse_1d2c\r\nContent-Type: application/http\r\n\r\nnot http\r\n--batchresponse_1d2c--",
        ),
    ],
)
def test_anything_else_is_a_format_error(content_type, body):
    with pytest.raises(batch.BatchFormatError):
        batch.parse(content_type, body)
