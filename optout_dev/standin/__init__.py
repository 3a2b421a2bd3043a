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
* Typed tables (:mod:`.schema`; docs/dataverse-admin.md): every column has a type, validity for read, create
  and update, a required level, options (choices) or targets and navigation properties (lookups). Microsoft's
  tables (:mod:`.presets`) follow their published table references; tests/contracts/dataverse checks them against
  facts extracted from those pages (tests/contracts/facts/dataverse, each naming its page). A plain
  column set (``tables=``) is still accepted and typed by name. Writes are checked by type: a Boolean must be
  a JSON boolean, a choice one of its options (400 ``0x8004431a`` "... is outside the valid range. Accepted
  Values: ..."), a column not valid for create/update 400 ``0x80040203``, a statuscode that does not belong
  to its statecode 400 (a statecode alone gets its default statuscode). Lookups read as ``_x_value``
  (``...@Microsoft.Dynamics.CRM.lookuplogicalname`` with ``Prefer: odata.include-annotations``) and are set
  only with ``<navigation>@odata.bind: "/<entityset>(<guid>)"`` (``_x_value`` in a body -> 400; an
  undeclared navigation property, case included -> 400; a bind to a missing row -> 404 ``0x80040217``
  "<table> With Id = <guid> Does Not Exist").
* ``GET <entityset>`` (collection): ``$select``, ``$filter`` of ``property eq|ne|gt|ge|lt|le literal`` clauses
  joined by ``and``, one of them possibly a parenthesised group joined by ``or`` (text compared
  case-insensitively, as in Dataverse; a date-time literal unquoted; a literal of the wrong type -> 400; a
  malformed clause, such as a text value sent unquoted -> 400 ``0x80060888`` "Syntax error at position ...") and
  ``$top``; ``{"@odata.context", "value": [...]}`` with the primary key always included. Server-driven paging
  (:mod:`.paging`): pages of ``Prefer: odata.maxpagesize`` rows (``Preference-Applied``; default and limit 5,000)
  in primary key order, ``@odata.nextLink`` with a paging-cookie ``$skiptoken``.
* ``POST <entityset>``: 204 with ``OData-EntityId`` (201 and the row with ``Prefer: return=representation``);
  a client-supplied primary key is honoured (412 ``0x80040237`` when taken); defaults filled (choices with a
  default, statecode/statuscode, the owner = the caller); a missing SystemRequired column -> 400.
  ``DELETE <entityset>(<guid>)``: 204, 404 when missing. Both work inside ``$batch`` and changesets.
* Privileges (docs/dataverse-admin.md §2): the user holds ``privileges=`` (names ``prv<Type><SchemaName>``;
  default every privilege of every table served). Each row operation needs Read, Create, Write or Delete on
  its table (a bind Append on it and AppendTo on the target); without it 403 ``0x80040220`` naming the
  privilege. ``GET systemusers(<UserId>)/Microsoft.Dynamics.CRM.RetrieveUserPrivileges`` lists them
  (Depth Global).
* Users (:mod:`.users`): ``GET systemusers?$filter=applicationid eq <guid>`` finds the application user of a client
  id, as the User (SystemUser) table reference describes ``applicationid``: the stand-in's one user is the
  application user of ``application_id`` (None: a person, the application user of no client id).
* Presets (``presets=``): ``"samples"`` (the samples' campaign log), ``"other"`` (a second campaign-log schema
  with a global choice and a Customer lookup, plus a decoy custom table), ``"journeys"`` (contact point
  consent, two purposes, a topic), ``"registration"`` (service endpoints, SDK messages and filters, steps,
  workflows, seeded).
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
* Features the real service has but the stand-in does not model (``UpdateMultiple``, functions and ``not`` in
  ``$filter``, ``$orderby``, ``$expand`` on rows, PUT, alternate keys, binds to tables it does not serve
  such as ``plugintype``, ``email`` or ``systemuser``, other metadata, other API versions) answer 501
  ``STANDIN_UNSUPPORTED`` (or 404 outside ``/api/data/v9.2/``) instead of guessing.
* The platform enforces only SystemRequired columns on create; a create missing an ApplicationRequired
  (business-required) column is accepted, as there, and appended to :attr:`DataverseStandIn.client_bugs`.
  ``solutionnamespace`` (SystemRequired but derived by the server, unconfirmed) is not enforced.
* ``createdon``/``modifiedon`` are not filled in; privileges have no depth or record-level access; a global
  choice answers ``OptionSet: null`` and its options in ``GlobalOptionSet`` (whether Dataverse fills both is
  unconfirmed); the codes of the validation answers (``0x8004431a``, ``0x80040203``) and the exact texts of the
  PrivilegeDenied and missing-table messages are unconfirmed.
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
versions, changesets), :mod:`.schema` (typed tables), :mod:`.presets` (the tables and seeds it knows),
:mod:`.query` (reading rows), :mod:`.paging` (pages of a query), :mod:`.writes` (checking bodies),
:mod:`.privileges` (privileges), :mod:`.metadata` and :mod:`.attributes` (``EntityDefinitions``), :mod:`.batch`
and :mod:`.multipart` (running and framing ``$batch``), :mod:`.protection` (service protection), :mod:`.faults`
(fault injection), :mod:`.recording` (recorded traffic), :mod:`.responses` (answers and errors), :mod:`.tables`
(tables, columns, identities) and :mod:`.tls` (the certificate, from ``trustme``).
"""

from optout_dev.standin.batch import MAX_BATCH_OPERATIONS
from optout_dev.standin.faults import Fault
from optout_dev.standin.presets import (
    COMMERCIAL_PURPOSE_ID,
    CONCEP_WORKFLOWS,
    CONSENT_TABLE,
    NEWSLETTER_TOPIC_ID,
    OTHER_CAMPAIGN_LOG,
    OTHER_EVENT_OPTIONS,
    OTHER_SURVEY,
    OTHER_WORKFLOWS,
    PRESETS,
    SAMPLES_ACTIVITY_OPTIONS,
    SAMPLES_CAMPAIGN_LOG,
    SDK_MESSAGE_IDS,
    STANDARD_TABLES,
    TRANSACTIONAL_PURPOSE_ID,
    filter_id,
)
from optout_dev.standin.privileges import PRIVILEGE_DENIED, privilege_id
from optout_dev.standin.protection import ServiceProtection, WindowStats
from optout_dev.standin.recording import RecordedRequest
from optout_dev.standin.schema import Column, Option, Table
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
    "COMMERCIAL_PURPOSE_ID",
    "CONCEP_WORKFLOWS",
    "CONSENT_TABLE",
    "DEFAULT_TABLES",
    "ENTITY_SETS",
    "HOST",
    "MAX_BATCH_OPERATIONS",
    "NEWSLETTER_TOPIC_ID",
    "ORGANIZATION_ID",
    "OTHER_CAMPAIGN_LOG",
    "OTHER_EVENT_OPTIONS",
    "OTHER_SURVEY",
    "OTHER_WORKFLOWS",
    "PRESETS",
    "PRIVILEGE_DENIED",
    "SAMPLES_ACTIVITY_OPTIONS",
    "SAMPLES_CAMPAIGN_LOG",
    "SDK_MESSAGE_IDS",
    "STANDARD_TABLES",
    "TRANSACTIONAL_PURPOSE_ID",
    "USER_ID",
    "Column",
    "DataverseStandIn",
    "Fault",
    "Option",
    "Table",
    "filter_id",
    "privilege_id",
    "RecordedRequest",
    "ServiceProtection",
    "WindowStats",
]
