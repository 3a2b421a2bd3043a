"""Running a ``$batch`` (docs/dataverse-webapi.md §5): its operations in order, each routed as a direct request
would be; changesets atomic; stopping at the first failure unless ``Prefer: odata.continue-on-error``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Protocol
from urllib.parse import urlsplit

from optout_dev.standin.faults import Fault
from optout_dev.standin.multipart import (
    CRLF,
    ChangesetPart,
    Malformed,
    Operation,
    Unreadable,
    boundary,
    embedded,
    entity_of,
    lf_framed,
    multipart_body,
    parse_batch,
    prefers_continue_on_error,
)
from optout_dev.standin.recording import RecordedRequest, Traffic, kept_headers
from optout_dev.standin.responses import Headers, Response, error, method_not_allowed
from optout_dev.standin.store import Changeset, RowStore
from optout_dev.standin.tables import API_PREFIX

MAX_BATCH_OPERATIONS = 1000
_PAYLOAD_CODE = "0x80048d19"  # ODataClientPayloadError (unconfirmed for the OData library's messages)
_UNREADABLE_MESSAGE = (
    "Error identified in Payload provided by the user for Entity :'{entity}', For more information on this error "
    "please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : "
    "System.ArgumentException: Stream was not readable."
)
_TOO_MANY_PARTS = (
    "The current batch message contains too many parts. A maximum number of '{limit}' query operations and change "
    "sets are allowed in a batch message."
)
_TOO_MANY_IN_CHANGESET = (
    "The current change set contains too many operations. A maximum number of '{limit}' operations are allowed in "
    "a change set."
)


class Dispatch(Protocol):
    """Routes one request (or, ``inner``, one operation of a batch) of an authenticated, admitted user."""

    def __call__(
        self,
        method: str,
        raw_path: str,
        headers: Message,
        body: bytes,
        changeset: Changeset | None = None,
        inner: bool = False,
    ) -> Response: ...


@dataclass(frozen=True)
class OperationHooks:
    """What the front end does around each operation of a batch, as it would around a direct request."""

    service_time: Callable[[], bool]  # wait the per-operation latency; False when the stand-in is stopping
    pick_fault: Callable[[str, str], Fault | None]  # an inner fault for (method, path), if any
    fault_response: Callable[[Fault], Response]


class Batches:
    """Answers ``POST $batch`` and records the operations it runs."""

    def __init__(self, dispatch: Dispatch, store: RowStore, traffic: Traffic, hooks: OperationHooks) -> None:
        self._dispatch = dispatch
        self._store = store
        self._traffic = traffic
        self._hooks = hooks

    def serve(self, method: str, headers: Message, body: bytes) -> Response:
        if method != "POST":
            return method_not_allowed(method, "POST")
        content_type = headers.get("Content-Type") or ""
        batch_boundary = boundary(content_type)
        if content_type.split(";")[0].strip().lower() != "multipart/mixed" or not batch_boundary:
            return error(
                400,
                _PAYLOAD_CODE,
                f"The content type '{content_type}' is not valid for a batch request: "
                "send multipart/mixed with a boundary parameter.",
            )
        try:
            items = parse_batch(body, batch_boundary)
        except Unreadable:
            return self._unreadable(body)
        except Malformed as exc:
            if lf_framed(body, batch_boundary):  # LF line endings broke the framing: unreadable too
                return self._unreadable(body)
            return error(400, _PAYLOAD_CODE, exc.message)
        total = sum(len(item.operations) if isinstance(item, ChangesetPart) else 1 for item in items)
        if total > MAX_BATCH_OPERATIONS:
            oversized = any(
                isinstance(item, ChangesetPart) and len(item.operations) > MAX_BATCH_OPERATIONS for item in items
            )
            template = _TOO_MANY_IN_CHANGESET if oversized else _TOO_MANY_PARTS
            return error(400, _PAYLOAD_CODE, template.format(limit=MAX_BATCH_OPERATIONS))

        continue_on_error = prefers_continue_on_error(headers.get("Prefer"))
        number = self._traffic.next_batch()
        parts: list[bytes] = []
        for item in items:  # sequentially, in order
            failure: Response | None
            if isinstance(item, ChangesetPart):
                failure, part = self._run_changeset(item, number)
            else:
                response = self._run_operation(item, number, None, {})
                failure = response if response.drop or response.status >= 400 else None
                part = embedded(response)
            if failure is not None and failure.drop:
                return Response(0, drop=True, batch=number)  # the answer is lost; what ran, ran
            parts.append(part)
            if failure is not None and not continue_on_error:
                # The batch answers with the first failure's status, its parts so far ending with it.
                retry_after = tuple((name, value) for name, value in failure.headers if name == "Retry-After")
                return self._answer(failure.status, parts, retry_after, number)
        return self._answer(200, parts, (), number)

    def _unreadable(self, body: bytes) -> Response:
        # As Microsoft's troubleshooting article shows: a 400 batch answer holding one 400 part.
        part = error(400, _PAYLOAD_CODE, _UNREADABLE_MESSAGE.format(entity=entity_of(body)))
        return self._answer(400, [embedded(part)], ())

    @staticmethod
    def _answer(status: int, parts: Sequence[bytes], headers: Headers, number: int | None = None) -> Response:
        batch_boundary = f"batchresponse_{uuid.uuid4()}"  # never the request's boundary
        return Response(
            status,
            multipart_body(batch_boundary, parts),
            (("Content-Type", f"multipart/mixed; boundary={batch_boundary}"), *headers),
            batch=number,
        )

    def _run_changeset(self, changeset: ChangesetPart, number: int) -> tuple[Response | None, bytes]:
        """Run a changeset's operations against copies of the rows; commit them all, or none. Returns
        the failure (None on success) and the batch-response part."""
        working = Changeset()
        references: dict[str, str] = {}
        answered: list[tuple[str | None, Response]] = []
        for operation in changeset.operations:
            response = self._run_operation(operation, number, working, references)
            if response.drop:
                return response, b""
            if response.status >= 400:
                # Rolled back: nothing of the changeset is committed, and one error part answers for it.
                return response, embedded(response)
            answered.append((operation.content_id, response))
            entity_id = dict(response.headers).get("OData-EntityId")
            if operation.content_id and entity_id:
                references[operation.content_id] = urlsplit(entity_id).path
        failure = self._store.commit(working)
        if failure is not None:
            return failure, embedded(failure)
        changeset_boundary = f"changesetresponse_{uuid.uuid4()}"
        inner = multipart_body(
            changeset_boundary, [embedded(response, content_id) for content_id, response in answered]
        )
        header = f"Content-Type: multipart/mixed; boundary={changeset_boundary}\r\n\r\n".encode("latin-1")
        return None, header + inner.removesuffix(CRLF)

    def _run_operation(
        self, operation: Operation, number: int, changeset: Changeset | None, references: Mapping[str, str]
    ) -> Response:
        """One operation of a batch: routed as a direct request would be, under the outer request's
        authorisation; an inner fault may answer instead."""
        target = operation.target
        reference = re.fullmatch(r"\$([^/?]+)(.*)", target)
        if reference is not None:  # $n: the entity an earlier operation of this changeset wrote
            if reference.group(1) not in references:
                response = error(
                    400,
                    _PAYLOAD_CODE,
                    f"Content-ID Reference: '${reference.group(1)}' does not exist in the batch context.",
                )
                return self._record(operation, target, number, response)
            path = references[reference.group(1)] + reference.group(2)
        elif "://" in target:
            split = urlsplit(target)  # any host: see the deviations in the package docstring
            path = split.path + (f"?{split.query}" if split.query else "")
        elif target.startswith("/"):
            path = target
        else:
            path = API_PREFIX + target  # relative to the service root
        fault = self._hooks.pick_fault(operation.method, path)
        response = Response(0, drop=True)
        if (fault is None or fault.after) and self._hooks.service_time():
            try:
                response = self._dispatch(
                    operation.method, path, operation.headers, operation.body, changeset, inner=True
                )
            except Exception as exc:  # noqa: BLE001 - a stand-in bug must surface as a loud 500, not a hang
                response = error(500, "STANDIN_INTERNAL", f"stand-in failure: {exc!r}")
        if fault is not None:
            response = self._hooks.fault_response(fault)
        return self._record(operation, path, number, response)

    def _record(self, operation: Operation, path: str, number: int, response: Response) -> Response:
        status = 0 if response.drop else response.status
        headers = kept_headers(operation.headers.items())
        self._traffic.record_operation(RecordedRequest(operation.method, path, headers, operation.body, status, number))
        return response
