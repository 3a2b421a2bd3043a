"""A loopback stand-in for the Dataverse Web API: a faithful test double of documented behaviour,
for tests, the local demo and benchmarks; never a production default.

It serves ``http://127.0.0.1:<port>/api/data/v9.2/`` (``https://`` with ``tls=True``) over real HTTP/1.1
so that a client is exercised end to end (``requests``, keep-alive, timeouts, retries). What it answers,
and why (see docs/dataverse-webapi.md §1-§8, §10 and §12):

* ``Authorization: Bearer <token>`` is required; a missing, wrong or rotated-out token gets 401 with a
  ``WWW-Authenticate: Bearer authorization_uri=...`` challenge. ``app_user=False`` models an app
  registration without an application user: the token is accepted but every call gets
  403 ``0x80072560``.
* ``PATCH <entityset>(<guid>)`` with ``If-Match: *`` updates an existing row (204, ``OData-EntityId``)
  and answers 404 for a missing one (``error.code`` configurable: ``0x80040217`` or ``""`` as in
  Microsoft's example, so clients cannot come to depend on it).
* Unknown entity set -> 404 ``0x8006088a``; unknown column (body or ``$select``) -> 400 ``0x0``;
  malformed payload -> 400 ``0x80048d19``; stale ``If-Match`` etag -> 412.
* ``GET <entityset>(<guid>)`` (with ``$select``) and ``GET WhoAmI``.
* ``GET EntityDefinitions`` (``$select``; ``$filter`` of ``Property eq 'value'`` clauses joined by
  ``and``), ``GET EntityDefinitions(LogicalName='x')`` / ``(<MetadataId>)`` and
  ``.../Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata`` (empty: the stand-in's columns are
  Boolean and text, and Dataverse types statecode/statuscode as State/Status, not Picklist). These are
  the metadata reads the official Python SDK (PowerPlatform-Dataverse-Client 1.1.0) makes before
  ``records.update``/``records.get``: it resolves the entity set with
  ``EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute&$filter=LogicalName eq 'contact'``
  and, when a value is a string, fetches the table's picklists to turn labels into option values.
* ``POST $batch`` (§5): ``multipart/mixed`` with CRLF line endings only; parts are
  ``application/http`` operations or ``changeset_`` multiparts; inner request lines may hold an absolute
  URL, an absolute path or a path relative to the service root (``$n`` Content-ID references inside a
  changeset). Every inner request goes through the same routing as a direct one (authorised by the
  outer request), sequentially and in order:

  - LF-only line endings, or no CRLF after the closing delimiter -> 400 whose multipart body holds one
    400 ``0x80048d19`` part "... Stream was not readable." (as Microsoft's troubleshooting article
    shows); nothing runs.
  - more than 1,000 operations (changeset contents counted), a GET inside a changeset, a nested
    changeset or a malformed part -> 400 JSON (not multipart), nothing runs. The OData library's own
    messages are used; their ``error.code`` (``0x80048d19``) is unconfirmed.
  - without ``Prefer: odata.continue-on-error`` the first failing part stops the batch: the answer
    carries that part's status (e.g. 400 or 404; a 429 part's ``Retry-After`` is copied onto it) and
    a multipart body with the parts run so far, the failing one last. Writes of earlier parts outside
    a changeset stay committed, as in Dataverse (only a changeset is a transaction).
  - with it the answer is 200 and every part carries its own status.
  - a changeset is atomic: its writes are applied to copies of the rows and committed together once
    every operation succeeded; a failing operation (or a conflicting concurrent change at commit)
    rolls the whole changeset back and the changeset answers with one ``application/http`` error part
    (OData 4.0's rule), not a ``changesetresponse_`` multipart. Operations after the failing one in
    that changeset do not run.
  - the answer's boundary is a fresh ``batchresponse_<guid>`` (``changesetresponse_<guid>`` nested).
* Service protection (``protection=ServiceProtection(...)``, §4), per user (every token the stand-in
  accepts authenticates its one user, so a refreshed token shares the budget, as in Dataverse): a
  sliding window of N requests (429 ``0x80072322``), C requests in flight (429 ``0x80072326``,
  ``Retry-After: 1``, immediately) and, optionally, combined execution time (429 ``0x80072321``). A
  ``$batch`` is one request however many operations it holds, but its whole execution time counts.
  ``latency`` adds a service time per operation (a ``$batch`` takes it once per inner operation, run
  in sequence as Dataverse does), so that concurrency limits and execution time can actually bite.
* Faults (429 with ``Retry-After``, 5xx, dropped connections, slow answers, expired tokens) are injected
  on demand or at a seeded random rate, ahead of authentication and routing, as a throttling or
  failing front end would answer. ``Fault(inner=True)`` applies to one operation inside a ``$batch``
  instead (so part 3 can answer 429 while the others succeed); an inner ``drop`` loses the whole
  batch answer after the operations before it ran, an inner ``after`` runs the operation, then reports
  the fault in its part. ``Fault(cut=True)`` serves the request (a whole ``$batch``), then cuts its answer
  off mid-body (``requests`` raises ``ChunkedEncodingError``); ``retry_after_header`` sends any text as
  ``Retry-After`` (``inf``, ``10000000000``, an HTTP date) to try a client's reading of it.

Deliberate deviations, each one loud rather than silently different:

* The real service upserts on a PATCH without ``If-Match`` (creating a missing row) and creates on
  ``If-None-Match: *``. The stand-in never creates rows: it answers 400 ``STANDIN_UPSERT`` (resp.
  412) and appends a description to :attr:`DataverseStandIn.client_bugs`.
* Features the real service has but the stand-in does not model (``UpdateMultiple``, collection
  queries, POST/DELETE/PUT, ``$expand``, alternate keys, other metadata, other API versions) answer
  501 ``STANDIN_UNSUPPORTED`` (or 404 outside ``/api/data/v9.2/``) instead of guessing.
* Service protection is exact where Dataverse is loose: a windowed limit bites at once (Dataverse may
  let a burst run over for a while), ``Retry-After`` is the time until enough of the window has slid
  by (Dataverse lengthens it for clients that keep sending while throttled: not modelled), and a 429
  does not itself count toward any limit. One web server is modelled.
* An absolute URL inside a ``$batch`` is accepted whatever its host (Dataverse wants its own).
* 204 and 304 answers carry no ``Content-Length`` (RFC 9110 forbids it on 204); every other answer
  has one, so keep-alive framing is always explicit.
* Exact 401 bodies, the code for a wrong ``Content-Type`` and the metadata 404 are unconfirmed
  upstream; clients must branch on the HTTP status, not on these codes.

Modules, each with one reason to change: :mod:`.server` (:class:`DataverseStandIn`: lifecycle, state for tests,
the front end), :mod:`.transport` (HTTP/1.1 server plumbing), :mod:`.webapi` (resources), :mod:`.store` (rows,
versions, changesets), :mod:`.metadata` (``EntityDefinitions``), :mod:`.batch` and :mod:`.multipart` (running
and framing ``$batch``), :mod:`.protection` (service protection), :mod:`.faults` (fault injection),
:mod:`.recording` (recorded traffic), :mod:`.responses` (answers and errors), :mod:`.tables` (tables, columns,
identities) and :mod:`.tls` (the certificate, from ``trustme``).
"""

from optout_dev.standin.batch import MAX_BATCH_OPERATIONS
from optout_dev.standin.faults import Fault
from optout_dev.standin.protection import ServiceProtection, WindowStats
from optout_dev.standin.recording import RecordedRequest
from optout_dev.standin.server import DataverseStandIn
from optout_dev.standin.tables import (
    API_PREFIX,
    BOOLEAN_COLUMNS,
    BUSINESS_UNIT_ID,
    DEFAULT_TABLES,
    ENTITY_SETS,
    HOST,
    ORGANIZATION_ID,
    USER_ID,
)

__all__ = [
    "API_PREFIX",
    "BOOLEAN_COLUMNS",
    "BUSINESS_UNIT_ID",
    "DEFAULT_TABLES",
    "ENTITY_SETS",
    "HOST",
    "MAX_BATCH_OPERATIONS",
    "ORGANIZATION_ID",
    "USER_ID",
    "DataverseStandIn",
    "Fault",
    "RecordedRequest",
    "ServiceProtection",
    "WindowStats",
]
