"""The consent write of BulkEmailOptOut: after the recipients' ``donotbulkemail`` write, each address is recorded
as opted out in Customer Insights – Journeys' contact point consent (``CONSENT_PURPOSE_IDS``/``CONSENT_TOPIC_IDS``).

A whole batch takes at most three requests more: the addresses come back with the recipient write itself
(``Prefer: return=representation``); one ``$batch`` lists the existing records of every address of the batch;
one ``$batch`` creates the missing records and sets the others to Opted Out. Only after a redelivery, when the
read-back found the recipient already written (no answer with columns), is the recipient read once more.

What to write is decided by :mod:`optout_core.domain.consent`; failures are not retried here: each ends as the
error of its recipient's opt-outs, which the one failure policy turns into a put-back or a rejection. A put-back
lists again before writing, so a create whose answer was lost is never made twice.

A created record's id is derived from its purpose (or topic) and address (``domain.consent.record_id``). When
another worker created that record between this one's listing and its create, the create meets Dataverse's
duplicate-key refusal and becomes an update of that record (one request more, only then); a create resent after a
lost answer meets the same refusal instead of making a second record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optout_core.dataverse.errors import DataverseError, DataverseRejected, DataverseUnavailable
from optout_core.dataverse.result import Attempt
from optout_core.domain.consent import (
    DUPLICATE_RECORD,
    ENTITY_SET,
    QUERY_SELECT,
    Existing,
    Plan,
    Scope,
    Tally,
    address_key,
    addresses,
    new_record,
    opted_out,
    plan,
    query_filter,
    record_id,
    scopes,
)
from optout_core.domain.consent_settings import ConsentSettings
from optout_core.domain.model import ENTITY_SETS, Recipient
from optout_core.domain.redact import mask_emails

if TYPE_CHECKING:
    from optout_core.app.services import Dataverse
    from optout_core.dataverse.client import Written

Failed = Attempt[Any]  # an operation that ended with its error (its tries with it, for the failure policy)


@dataclass(frozen=True)
class ConsentResult:
    """Per recipient: what was written (a :class:`Tally`) or the attempt whose error ended its consent write."""

    by_recipient: dict[Recipient, Tally | Failed]
    requests: int


def write_consent(
    rows: Mapping[Recipient, Mapping[str, Any] | None],
    log_ids: Mapping[Recipient, str],
    settings: ConsentSettings,
    client: Dataverse,
    *,
    deadline: float | None = None,
) -> ConsentResult:
    """Opt every address of the written recipients out of each configured purpose and topic.

    ``rows``: each recipient's row as written (its address columns), or None when the write answered without it;
    ``log_ids``: the campaign log each recipient's record names in its Reason Description."""
    outcome: dict[Recipient, Tally | Failed] = {}
    known, requests = _rows(rows, settings, client, deadline, outcome)
    # Each address once per batch, whichever recipients share it: one listing, one plan, no second record.
    shared: dict[str, tuple[str, Recipient]] = {}
    for recipient, row in known.items():
        for address in addresses(row, settings.address_columns):
            shared.setdefault(address_key(address), (address, recipient))
    results: dict[str, Tally | Failed] = {}
    if shared:
        keys = list(shared)
        listed = client.query_many(
            ENTITY_SET, [query_filter(shared[k][0]) for k in keys], QUERY_SELECT, deadline=deadline
        )
        requests += listed.requests
        plans: dict[str, Plan] = {}
        for key, found in zip(keys, listed.items, strict=True):
            if found.error is not None:
                results[key] = found
            else:
                plans[key] = plan(shared[key][0], scopes(settings), [Existing.from_row(r) for r in found.value or ()])
        descriptions = {key: settings.description_for(log_ids[shared[key][1]]) for key in plans}
        written, sent = _write(plans, descriptions, client, deadline)
        requests += sent
        results.update(written)
    for recipient, row in known.items():
        outcome[recipient] = _tally(row, settings, results)
    return ConsentResult(outcome, requests)


def _rows(
    rows: Mapping[Recipient, Mapping[str, Any] | None],
    settings: ConsentSettings,
    client: Dataverse,
    deadline: float | None,
    outcome: dict[Recipient, Tally | Failed],
) -> tuple[dict[Recipient, Mapping[str, Any]], int]:
    """Each recipient's address columns: from the write's answer, or read (one $batch per table) when the write
    answered without them (a read-back found it already written)."""
    known = {r: row for r, row in rows.items() if row is not None}
    missing: dict[str, list[Recipient]] = {}
    for recipient, row in rows.items():
        if row is None:
            missing.setdefault(recipient.table, []).append(recipient)
    requests = 0
    for table, recipients in missing.items():
        read = client.read_rows(
            ENTITY_SETS[table], [r.id for r in recipients], settings.address_columns, deadline=deadline
        )
        requests += read.requests
        for recipient, found in zip(recipients, read.items, strict=True):
            if found.error is not None:
                outcome[recipient] = found
            else:
                known[recipient] = found.value or {}  # gone since its write: no address to opt out
    return known, requests


def _write(
    plans: Mapping[str, Plan], descriptions: Mapping[str, str], client: Dataverse, deadline: float | None
) -> tuple[dict[str, Tally | Failed], int]:
    """Every create and update of the batch in one $batch; per address key, its tally or its first error (a
    permanent one first: a put-back cannot mend it)."""
    creates: list[tuple[str, Scope]] = [(key, scope) for key, p in plans.items() for scope in p.create]
    updates: list[tuple[str, str]] = [(key, record) for key, p in plans.items() for record in p.update]
    errors: dict[str, list[Failed]] = {}
    taken: list[tuple[str, str]] = []  # (address key, record id) whose create met a record made meanwhile
    requests = 0
    if creates or updates:
        done = client.write_rows(
            ENTITY_SET,
            [new_record(plans[key].address, scope, descriptions[key]) for key, scope in creates],
            [(record, opted_out(descriptions[key])) for key, record in updates],
            deadline=deadline,
        )
        requests = done.requests
        for (key, scope), created in zip(creates, done.items[: len(creates)], strict=True):
            if _duplicate(created.error):
                taken.append((key, record_id(plans[key].address, scope)))
            elif created.error is not None:
                errors.setdefault(key, []).append(created)
        _updated(updates, done.items[len(creates) :], errors)
    if taken:
        # Another worker (or this create, resent) made the record since the listing: opt that record out.
        again = client.write_rows(
            ENTITY_SET, [], [(r, opted_out(descriptions[k])) for k, r in taken], deadline=deadline
        )
        requests += again.requests
        _updated(taken, again.items, errors)
    moved = {key: sum(1 for k, _ in taken if k == key) for key in plans}
    results: dict[str, Tally | Failed] = {}
    for key, p in plans.items():
        failed = errors.get(key)
        if failed:
            results[key] = _first(failed)
        else:
            results[key] = Tally(
                addresses=1, created=len(p.create) - moved[key], updated=len(p.update) + moved[key], kept=len(p.kept)
            )
    return results, requests


def _duplicate(error: DataverseError | None) -> bool:
    """The create met a record with its id: recognised by Dataverse's error code, whatever the status."""
    return error is not None and error.code == DUPLICATE_RECORD


def _updated(
    updates: Sequence[tuple[str, str]], items: Sequence[Attempt[str | Written]], errors: dict[str, list[Failed]]
) -> None:
    """Each update's error, if any, under its address key; a record deleted since it was listed is a transient
    error (the put-back lists again, then creates)."""
    for (key, record), updated in zip(updates, items, strict=True):
        if updated.error is not None:
            errors.setdefault(key, []).append(updated)
        elif isinstance(updated.value, str) or not (updated.value and updated.value.found):
            gone = DataverseUnavailable(f"consent record {record} was deleted while being opted out")
            errors.setdefault(key, []).append(Attempt(error=gone))


def _tally(row: Mapping[str, Any], settings: ConsentSettings, results: Mapping[str, Tally | Failed]) -> Tally | Failed:
    """One recipient's tally over its addresses, or the first error among them (a permanent one first)."""
    found = addresses(row, settings.address_columns)
    if not found:
        return Tally(empty=settings.address_columns)
    each = [results[address_key(a)] for a in found]
    failed = [r for r in each if isinstance(r, Attempt)]
    if failed:
        return _first(failed)
    tallies = [r for r in each if isinstance(r, Tally)]
    return Tally(
        addresses=len(tallies),
        created=sum(t.created for t in tallies),
        updated=sum(t.updated for t in tallies),
        kept=sum(t.kept for t in tallies),
    )


def _first(failed: Sequence[Failed]) -> Failed:
    """The failure to report of several: a permanent one first (a put-back cannot mend it)."""
    return next((f for f in failed if isinstance(f.error, DataverseRejected)), failed[0])


def restated(error: DataverseError, text: str) -> DataverseError:
    """``error`` (same kind, status and Retry-After) with ``text`` as its reason, email addresses masked: a
    Dataverse message may quote the value it refused, and reasons reach the rejected queue."""
    return type(error)(mask_emails(text), **{**error.details(), "message": None})
