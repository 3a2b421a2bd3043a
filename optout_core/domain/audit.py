"""The compliance audit's rules, as pure functions: which campaign logs a window holds, what each one asks of its
recipient, whether the recipient honours it, and the report and evidence that prove it.

The audit reads campaign logs as the router reads them: the same activity type lists (labels and codes) and the
same recipient rule (``RECIPIENT_COLUMNS`` or the one-lookup default), through
:func:`~optout_core.domain.routing.decide_row`. Only the toggles are left out: an opt-out logged while
``BulkEmailOptOut`` was switched off is exactly what the audit must find.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Any

from optout_core.domain.execution_context import TrimmedContext
from optout_core.domain.ids import normalise_guid
from optout_core.domain.model import ENTITY_SETS, Outcome, Recipient, Route
from optout_core.domain.routing import Decision, RowRequest, decide_row, type_route
from optout_core.domain.settings import Settings

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_NOT_DECIDED = frozenset({"createdon", "@odata.etag"})


def parse_when(text: str) -> datetime:
    """An ISO 8601 date (midnight) or date-time, as an aware UTC datetime; UTC when it names no offset."""
    value = text.strip()
    try:
        if _DATE_ONLY.fullmatch(value):
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or date-time (e.g. 2025-11-01 or 2025-11-01T09:30Z)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 UTC with a ``Z``: how the window is written in a ``$filter`` and in the report."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Window:
    """The campaign logs ``since <= createdon < until``."""

    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("the window's ends must carry a time zone")
        if self.since >= self.until:
            raise ValueError(f"the window is empty: since {iso(self.since)} is not before until {iso(self.until)}")


def opt_out_codes(options: Iterable[tuple[int, str]], settings: Settings) -> frozenset[int]:
    """The codes of a choice column's options (code, label) that the router sends to BulkEmailOptOut."""
    return frozenset(code for code, label in options if type_route(label, code, settings) == Route.OPT_OUT.value)


def choice_options(attribute: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(code, label) of each option in a choice column's metadata (``PicklistAttributeMetadata`` with its local
    ``OptionSet`` or its ``GlobalOptionSet`` expanded), every label of each option: the router matches any."""
    found: list[tuple[int, str]] = []
    for key in ("OptionSet", "GlobalOptionSet"):
        option_set = attribute.get(key)
        for option in option_set.get("Options") or () if isinstance(option_set, Mapping) else ():
            if not isinstance(option, Mapping) or not isinstance(option.get("Value"), int):
                continue
            label = option.get("Label")
            texts = (
                [label.get("UserLocalizedLabel")] + list(label.get("LocalizedLabels") or ())
                if isinstance(label, Mapping)
                else []
            )
            labels = {str(t["Label"]) for t in texts if isinstance(t, Mapping) and t.get("Label")}
            found += [(option["Value"], text) for text in sorted(labels)] or [(option["Value"], "")]
    return found


def log_filter(settings: Settings, window: Window, codes: Iterable[int] | None) -> str:
    """The ``$filter`` of the window's campaign logs; with ``codes`` (a choice column) only those activity types.
    Without them (a text or lookup column, whose values a filter cannot match as the router does: ignoring case,
    spaces and hyphens) every log of the window is read and the router's rule picks the opt-outs."""
    where = f"createdon ge {iso(window.since)} and createdon lt {iso(window.until)}"
    if codes is None:
        return where
    column = settings.activity_type_column
    return f"{where} and ({' or '.join(f'{column} eq {code}' for code in sorted(codes))})"


def log_select(settings: Settings) -> tuple[str, ...]:
    """The columns a campaign log is read with: its type, creation time and recipient lookups. Without
    RECIPIENT_COLUMNS every column is read (the one-lookup default looks at every lookup), as the router does."""
    if not settings.recipient_columns:
        return ()
    return (
        settings.activity_type_column,
        "createdon",
        *(f"_{column}_value" for column in settings.recipient_columns),
    )


def update_select(settings: Settings) -> tuple[str, ...]:
    """The OPT_OUT_UPDATE columns a recipient is read with. A lookup bind (``x@odata.bind``) cannot be read back
    under its name, so it is left out of the honoured test, as it is of the writer's read-back."""
    return tuple(column for column in settings.opt_out_update if "@" not in column)


# The Web API accepts URLs of up to 32,768 characters (Microsoft Learn, "Compose HTTP requests and handle errors",
# Maximum URL length: MicrosoftDocs/powerapps-docs powerapps-docs/developer/data-platform/webapi/
# compose-http-requests-handle-errors.md); docs/dataverse-webapi.md §8.
MAX_URL = 32_768


def any_id(key: str, ids: Iterable[str]) -> str:
    """The ``$filter`` matching any of ``ids``: the Web API's ``In`` query function, whose values are strings
    (Microsoft Learn, "In Function": learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/in;
    docs/dataverse-webapi.md §8). Ids are GUIDs: nothing in them needs quoting."""
    values = ",".join(f"'{row_id}'" for row_id in ids)
    return f"Microsoft.Dynamics.CRM.In(PropertyName='{key}',PropertyValues=[{values}])"


def id_groups(key: str, ids: Sequence[str], room: int) -> list[tuple[str, ...]]:
    """``ids`` in order, cut into groups whose :func:`any_id` is at most ``room`` characters once URL-encoded (its
    brackets as ``%5B`` and ``%5D``; GUIDs, names, quotes, commas and parentheses as written)."""
    groups: list[tuple[str, ...]] = []
    group: list[str] = []
    empty = len(any_id(key, ())) + 4  # the brackets encoded
    size = empty
    for row_id in ids:
        grown = len(row_id) + 2 + (1 if group else 0)  # quoted; a comma before all but the first
        if group and size + grown > room:
            groups.append(tuple(group))
            group, size, grown = [], empty, len(row_id) + 2
        if size + grown > room:
            raise ValueError(f"{room} characters hold no id")
        group.append(row_id)
        size += grown
    if group:
        groups.append(tuple(group))
    return groups


def honoured(row: Mapping[str, Any], settings: Settings) -> bool:
    """Every readable column of OPT_OUT_UPDATE already holds its value."""
    update = settings.opt_out_update
    return all(row.get(column) == update[column] for column in update_select(settings))


@dataclass(frozen=True, slots=True)
class OptOutLog:
    """A campaign log the router sends to BulkEmailOptOut, with its recipient."""

    log_id: str
    created_on: str | None
    activity_type: str | None
    recipient: Recipient


@dataclass(frozen=True, slots=True)
class UnresolvedLog:
    """An opt-out log without a recipient the router can name, with the router's reason."""

    log_id: str
    created_on: str | None
    activity_type: str | None
    reason: str


_LOOKUP_TABLE = "@Microsoft.Dynamics.CRM.lookuplogicalname"
_FORMATTED = "@OData.Community.Display.V1.FormattedValue"
_TYPE_CACHE_MAX = 256  # distinct activity type values remembered; a log has a handful, a forged window no more
_RECIPIENT_CACHE_MAX = 65_536  # recipients remembered by their lookup as read: a window's repeats cost a lookup


@dataclass(frozen=True)
class LogReader:
    """Reads campaign log rows (from a collection query with annotations) with the router's rule.

    A window holds up to millions of logs, and rebuilding the router's full context for each costs more than
    reading it. So each log is read on a fast path that decides nothing of its own: the activity type's route
    and name come from :func:`~optout_core.domain.routing.decide_row` itself, asked once per distinct type value
    (a row holding only that column), and the recipient is taken only in the one case the router's rule is
    plain: the first ``RECIPIENT_COLUMNS`` lookup that holds a value names a contact, lead or account by a
    well-formed id. Any other row (no recipient, a stranger table, a malformed id, the one-lookup default)
    goes through ``decide_row`` whole. tests/unit/test_audit.py holds both paths to the same answers.

    A recipient is named by many logs of a window (a week's campaigns, several lists each), so the plain case's
    answer is remembered by the lookup's value and table as read (up to a bound), sparing each repeat the id's
    validation and a new :class:`~optout_core.domain.model.Recipient`.
    """

    settings: Settings
    _router: Settings = field(init=False, repr=False)
    _types: dict[tuple[type, Any, Any], tuple[bool, str | None]] = field(init=False, repr=False)
    _recipients: dict[tuple[str, str], Recipient] = field(init=False, repr=False)
    _lookups: tuple[tuple[str, str], ...] = field(init=False, repr=False)  # (value key, table key) per column
    _type_keys: tuple[str, str] = field(init=False, repr=False)  # the activity type column, its formatted value
    _key: str = field(init=False, repr=False)  # the primary key

    def __post_init__(self) -> None:
        object.__setattr__(self, "_router", replace(self.settings, disabled=frozenset()))
        object.__setattr__(self, "_types", {})
        object.__setattr__(self, "_recipients", {})
        keys = tuple(
            (f"_{column}_value", f"_{column}_value{_LOOKUP_TABLE}") for column in self.settings.recipient_columns
        )
        object.__setattr__(self, "_lookups", keys)
        column = self.settings.activity_type_column
        object.__setattr__(self, "_type_keys", (column, column + _FORMATTED))
        object.__setattr__(self, "_key", f"{self.settings.campaign_log_table}id")

    @property
    def primary_key(self) -> str:
        return self._key

    def read_all(self, rows: Iterable[Mapping[str, Any]]) -> list[OptOutLog | UnresolvedLog]:
        """:meth:`read` of each row, in order, without the rows that record no opt-out."""
        read = self.read
        return [found for row in rows if (found := read(row)) is not None]

    def read(self, row: Mapping[str, Any]) -> OptOutLog | UnresolvedLog | None:
        """The opt-out a row records, an opt-out whose recipient is unresolved, or None for any other type."""
        kind = self._type(row)
        if kind is None:
            return self.decide(row)
        opt_out, label = kind
        if not opt_out:
            return None
        recipient = self._recipient(row)
        if recipient is None:
            return self.decide(row)
        log_id = row.get(self._key)
        created = row.get("createdon")
        return OptOutLog(
            log_id.lower() if type(log_id) is str else str(log_id or "").lower(),
            created if type(created) is str else str(created) if created is not None else None,
            label,
            recipient,
        )

    def decide(self, row: Mapping[str, Any]) -> OptOutLog | UnresolvedLog | None:
        """:meth:`read` through the router's whole decision (the slow path, and the reference of the fast one)."""
        log_id = str(row.get(self.primary_key) or "").lower()
        decision = self._decide(log_id, {k: v for k, v in row.items() if k not in _NOT_DECIDED})
        if decision.route is not Route.OPT_OUT:
            return None
        label = decision.activity_type.name if decision.activity_type else None
        created = row.get("createdon")
        created_on = str(created) if created is not None else None
        if decision.outcome is Outcome.ROUTED and decision.recipient is not None:
            return OptOutLog(log_id, created_on, label, decision.recipient)
        return UnresolvedLog(log_id, created_on, label, decision.reason or "the router could not name a recipient")

    def _decide(self, log_id: str, row: Mapping[str, Any]) -> Decision:
        context = TrimmedContext("Create", self.settings.campaign_log_table, log_id, None, None, None)
        request = RowRequest(self.settings.campaign_log_entity_set, log_id, (), context)
        # The Web API answers createdon in ISO 8601 UTC already: the decision need not convert it again.
        return decide_row(request, row, self._router)

    def _type(self, row: Mapping[str, Any]) -> tuple[bool, str | None] | None:
        """(is an opt-out, the type's name) as the router decides it for this row's activity type; None when
        the value cannot be remembered (a lookup, an unknown shape): then the whole row is decided."""
        column, formatted_key = self._type_keys
        if column not in row:
            return None
        value, formatted = row[column], row.get(formatted_key)
        if type(value) not in (int, str) or type(formatted) not in (str, type(None)):
            return None
        key = (type(value), value, formatted)
        known = self._types.get(key)
        if known is None:
            only_type = {column: value} if formatted is None else {column: value, formatted_key: formatted}
            decision = self._decide("", only_type)
            activity = decision.activity_type
            known = (decision.route is Route.OPT_OUT, activity.name if activity else None)
            if len(self._types) < _TYPE_CACHE_MAX:
                self._types[key] = known
        return known

    def _recipient(self, row: Mapping[str, Any]) -> Recipient | None:
        """The recipient when the router's rule is plain for this row, else None (decide the whole row)."""
        for value_key, table_key in self._lookups:
            value = row.get(value_key)
            if value is None:
                continue
            table = row.get(table_key)
            known = self._recipients.get((table, value)) if type(value) is str and type(table) is str else None
            if known is not None:
                return known
            row_id = normalise_guid(value)
            if table not in ENTITY_SETS or row_id is None:
                return None
            recipient = Recipient(table, row_id)
            if len(self._recipients) < _RECIPIENT_CACHE_MAX and type(value) is str:
                self._recipients[(table, value)] = recipient
            return recipient
        return None


class Status(StrEnum):
    """What the audit found for a recipient (and so for each of its opt-out logs)."""

    HONOURED = "honoured"  # every OPT_OUT_UPDATE column already held its value
    FIXED = "fixed"  # not honoured when read; written by --fix
    NOT_HONOURED = "not_honoured"  # not honoured, and not written (no --fix)
    MISSING = "recipient_missing"  # the row no longer exists: nothing to mail
    FAILED = "failed"  # could not be read, or its repair failed
    UNRESOLVED = "unresolved"  # the log names no recipient the router can resolve


CSV_HEADER = ("log_id", "created_on", "activity_type", "recipient_table", "recipient_id", "status")


def evidence_row(log: OptOutLog | UnresolvedLog, status: Status) -> tuple[str, ...]:
    """One CSV line of evidence for an auditor: ids, times, the type and the finding; never a name or an address."""
    if isinstance(log, UnresolvedLog):
        return (log.log_id, log.created_on or "", log.activity_type or "", "", "", str(Status.UNRESOLVED))
    recipient = log.recipient
    return (log.log_id, log.created_on or "", log.activity_type or "", recipient.table, recipient.id, str(status))


@dataclass(frozen=True)
class Finding:
    """A recipient with the opt-out logs of the window that name it."""

    recipient: Recipient
    log_ids: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"table": self.recipient.table, "id": self.recipient.id, "log_ids": list(self.log_ids)}


@dataclass(frozen=True)
class Failure:
    recipient: Recipient
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"table": self.recipient.table, "id": self.recipient.id, "reason": self.reason}


@dataclass(frozen=True)
class Report:
    """The audit of one window. ``not_honoured`` is what was found when read, before any repair."""

    window: Window
    opt_outs: int
    recipients: int
    honoured: int
    not_honoured: tuple[Finding, ...]
    recipient_missing: tuple[Finding, ...]
    unresolved: tuple[UnresolvedLog, ...]
    fixed: int
    failed: tuple[Failure, ...]
    requests: int
    dry_run: bool
    left: int = 0  # recipients still not honoured at the end of the run (found so, and not written)

    @property
    def clean(self) -> bool:
        """Every opt-out of the window is honoured at the end of the run: nothing left unwritten, failed, or
        without a recipient to check (a log the audit cannot resolve proves nothing)."""
        return self.left == 0 and not self.failed and not self.unresolved

    def as_json(self) -> dict[str, Any]:
        return {
            "since": iso(self.window.since),
            "until": iso(self.window.until),
            "opt_outs": self.opt_outs,
            "recipients": self.recipients,
            "honoured": self.honoured,
            "not_honoured": [f.as_json() for f in self.not_honoured],
            "recipient_missing": [f.as_json() for f in self.recipient_missing],
            "unresolved": [{"log_id": u.log_id, "reason": u.reason} for u in self.unresolved],
            "fixed": self.fixed,
            "failed": [f.as_json() for f in self.failed],
            "requests": self.requests,
            "dry_run": self.dry_run,
        }


def findings(log_ids: Mapping[Recipient, Sequence[str]], recipients: Iterable[Recipient]) -> tuple[Finding, ...]:
    """Each of ``recipients`` with its log ids, in the order given."""
    return tuple(Finding(r, tuple(log_ids.get(r, ()))) for r in recipients)
