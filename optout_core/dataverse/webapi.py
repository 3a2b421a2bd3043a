"""The Dataverse Web API as any table's rows and resources: get, query (with paging), create, patch, delete and
WhoAmI, for the administrator's commands (``check``, ``discover``, ``setup``, ``audit``).

Follows the Azure SDK shape: it takes the environment URL and a ``TokenCredential``. How requests are sent,
retried and judged lives in :mod:`optout_core.dataverse.transport`. Each call raises its error: a
:class:`~optout_core.dataverse.errors.DataverseRejected` (permanent) or
:class:`~optout_core.dataverse.errors.DataverseUnavailable` (transient). The functions' recipient writes, which
end as values, are :class:`optout_core.dataverse.client.DataverseClient`'s.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from optout_core.dataverse.auth import TokenCredentialLike
from optout_core.dataverse.errors import DataverseRejected
from optout_core.dataverse.odata_batch import Request, Response
from optout_core.dataverse.pacing import Pacing
from optout_core.dataverse.sender import HttpSender
from optout_core.dataverse.throttle import ThrottleGate
from optout_core.dataverse.transport import API, Operation, ReadBack, Transport
from optout_core.domain.policy import FailurePolicy
from optout_core.domain.retry import RetryPolicy

_DEFAULT_RETRY = RetryPolicy()
_SAFE = "'()=,$@/:%"  # readable quotes, parentheses, paths; string values come escaped (domain/odata.py)
ANNOTATIONS = 'odata.include-annotations="*"'  # formatted values (labels) and lookup tables with each row


class WebApi:
    """Rows and resources of any table through the Dataverse Web API (v9.2)."""

    def __init__(  # noqa: PLR0913 - the SDK shape: URL and credential, then keyword-only tuning
        self,
        url: str,
        credential: TokenCredentialLike,
        *,
        retry: RetryPolicy = _DEFAULT_RETRY,
        retry_after_cap: float = 300.0,
        timeout: float = 30.0,
        max_concurrency: int = 8,
        protection_window: float = 300.0,  # Dataverse's sliding window: what the gate paces over after a 429
        sleep: Callable[[float], None] = time.sleep,
        gate: ThrottleGate | None = None,
        sender: HttpSender | None = None,  # the wire; None: the requests sender (tests pass a scripted one)
    ) -> None:
        self._transport = Transport(
            url,
            credential,
            policy=FailurePolicy(retry=retry, retry_after_cap=retry_after_cap),
            timeout=timeout,
            gate=gate or ThrottleGate(max_concurrency, sleep=sleep, pacing=Pacing(window=protection_window)),
            sleep=sleep,
            sender=sender,
        )
        self.url = self._transport.url

    def get(self, path: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
        """GET a JSON resource under the API root (``EntityDefinitions(...)``, a bound function); None for a 404
        when ``missing_ok``."""
        response = self._one(Operation(Request("GET", f"{API}/{path}"), missing_ok=missing_ok))
        if response.status == 404:
            return None
        found: dict[str, Any] = json.loads(response.body)
        return found

    def query(
        self, entity_set: str, *, select: Sequence[str], where: str | None = None, top: int | None = None
    ) -> list[dict[str, Any]]:
        """The rows of ``entity_set`` matching the OData ``where`` ($filter), following ``@odata.nextLink``."""
        path: str | None = query_path(entity_set, select, where, top)
        rows: list[dict[str, Any]] = []
        while path is not None:
            page = json.loads(self._one(Operation(Request("GET", path, {"Prefer": ANNOTATIONS}))).body)
            rows.extend(page.get("value", []))
            link = page.get("@odata.nextLink")
            path = link[len(self.url) :] if isinstance(link, str) and link.startswith(self.url) else None
        return rows

    def pages(
        self,
        entity_set: str,
        *,
        select: Sequence[str],
        where: str | None,
        page_size: int = 5000,
        annotations: bool = True,
    ) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """The rows matching ``where`` one page at a time (``Prefer: odata.maxpagesize``), each with the requests it
        took: ``@odata.nextLink`` is followed exactly as given, and a retried page (a 429) asks the same link again.
        ``annotations=False``: the values alone, without formatted values and lookup tables.
        """
        prefer = {"Prefer": f"odata.maxpagesize={page_size}" + (f",{ANNOTATIONS}" if annotations else "")}
        options = [f"$select={','.join(select)}"] if select else []  # no $select: every column
        options += [f"$filter={quote(where, safe=_SAFE)}"] if where else []
        path: str | None = f"{API}/{entity_set}" + (f"?{'&'.join(options)}" if options else "")
        while path is not None:
            done = self._transport.perform([Operation(Request("GET", path, prefer))], batch=False)
            response = done.items[0].get()
            assert response is not None
            page = json.loads(response.body)
            yield list(page.get("value", [])), done.requests
            link = page.get("@odata.nextLink")
            if link is None:
                return
            if not (isinstance(link, str) and link.startswith(self.url + "/")):
                raise DataverseRejected(f"Dataverse's @odata.nextLink is not under {self.url}: {str(link)[:200]!r}")
            path = link[len(self.url) :]

    def create(self, entity_set: str, values: Mapping[str, Any]) -> str:
        """POST a new row; its id (from ``OData-EntityId``). An unanswered create is never sent again (it could
        make two rows): it raises :class:`~optout_core.dataverse.errors.Undetermined`, for the caller to look."""
        response = self._one(post_operation(entity_set, values))
        return entity_id(response.headers.get("OData-EntityId", ""))

    def patch(
        self, entity_set: str, row_id: str, changes: Mapping[str, Any], *, unreadable: Collection[str] = ()
    ) -> bool:
        """Update an existing row of any table (``If-Match: *``: never creates one); False when it is missing.
        ``unreadable``: columns Dataverse never returns (a SAS key), left out of a read-back's ``$select``."""
        operation = patch_operation(f"{API}/{entity_set}({row_id})", changes, unreadable=unreadable)
        return self._one(operation).status != 404

    def delete(self, entity_set: str, row_id: str) -> bool:
        """Delete a row; False when it was already gone."""
        response = self._one(Operation(Request("DELETE", f"{API}/{entity_set}({row_id})"), missing_ok=True))
        return response.status != 404

    def whoami(self) -> dict[str, Any]:
        """The ``WhoAmI`` function: proves the URL, the token and the application user in one call."""
        who: dict[str, Any] = json.loads(self._one(Operation(Request("GET", f"{API}/WhoAmI"))).body)
        return who

    def close(self) -> None:
        self._transport.close()

    def _one(self, operation: Operation, deadline: float | None = None) -> Response:
        response = self._transport.perform([operation], batch=False, deadline=deadline).items[0].get()
        assert response is not None
        return response


def entity_id(header: str) -> str:
    """The row id at the end of an ``OData-EntityId`` URL (``…/accounts(<id>)``)."""
    match = re.search(r"\(([0-9a-fA-F-]{36})\)\s*$", header)
    if match is None:
        raise DataverseRejected(f"Dataverse's answer named no created row (OData-EntityId {header!r})")
    return match.group(1).lower()


def patch_operation(
    path: str, changes: Mapping[str, Any], returning: Sequence[str] = (), unreadable: Collection[str] = ()
) -> Operation:
    body = json.dumps(dict(changes), separators=(",", ":")).encode("utf-8")
    headers = {"If-Match": "*", "Content-Type": "application/json"}
    target = path
    if returning:  # the row as written comes back with the answer: 200 and the columns instead of 204
        headers["Prefer"] = "return=representation"
        target = f"{path}?$select={','.join(returning)}"
    request = Request("PATCH", target, headers, body)
    # Lookup bindings (``x@odata.bind``) cannot be checked by reading the column back: such writes are resent.
    checkable = all("@" not in column for column in changes)
    readable = {column: value for column, value in changes.items() if column not in unreadable}
    read_back = ReadBack(path, readable) if checkable and readable else None
    return Operation(request, missing_ok=True, read_back=read_back)


def post_operation(entity_set: str, values: Mapping[str, Any]) -> Operation:
    body = json.dumps(dict(values), separators=(",", ":")).encode("utf-8")
    request = Request("POST", f"{API}/{entity_set}", {"Content-Type": "application/json"}, body)
    return Operation(request, resend_when_lost=False)


def query_path(entity_set: str, select: Sequence[str], where: str | None, top: int | None = None) -> str:
    options = [f"$select={','.join(select)}"]
    if where:
        options.append(f"$filter={quote(where, safe=_SAFE)}")
    if top is not None:
        options.append(f"$top={top}")
    return f"{API}/{entity_set}?{'&'.join(options)}"
