"""The audit's rules (optout_core.domain.audit): the window, the filter, reading a log with the router's rule, the
honoured test, and the report's verdict and shape."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optout_core.domain import audit as audit_rules
from optout_core.domain.audit import (
    CSV_HEADER,
    Finding,
    LogReader,
    OptOutLog,
    Report,
    Status,
    UnresolvedLog,
    Window,
    any_id,
    choice_options,
    evidence_row,
    honoured,
    id_groups,
    log_filter,
    log_select,
    opt_out_codes,
    parse_when,
)
from optout_core.domain.model import Recipient
from optout_core.domain.settings import Settings

LOG = "5c1e8a72-4f10-f011-998a-6045bd0f2c11"
CONTACT = "a1000000-0000-4000-8000-000000000001"
LEAD = "b2000000-0000-4000-8000-000000000001"
FORMATTED = "@OData.Community.Display.V1.FormattedValue"
LOOKUP = "@Microsoft.Dynamics.CRM.lookuplogicalname"
COLUMNS = {"RECIPIENT_COLUMNS": "concep_contactid;concep_leadid"}
WINDOW = Window(datetime(2025, 11, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC))


def _row(label: str | None = "Spam Report", code: int = 100000003, **columns: object) -> dict[str, object]:
    row: dict[str, object] = {"concep_emailcampaignlogid": LOG, "concep_activitytype": code, **columns}
    row["createdon"] = "2025-11-03T10:00:00Z"
    if label is not None:
        row[f"concep_activitytype{FORMATTED}"] = label
    return row


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-11-01", datetime(2025, 11, 1, tzinfo=UTC)),
        ("2025-11-01T09:30", datetime(2025, 11, 1, 9, 30, tzinfo=UTC)),  # no offset: UTC
        ("2025-11-01T09:30Z", datetime(2025, 11, 1, 9, 30, tzinfo=UTC)),
        ("2025-11-01T09:30+02:00", datetime(2025, 11, 1, 7, 30, tzinfo=UTC)),
    ],
)
def test_when_is_an_iso_date_or_date_time_in_utc_unless_it_names_an_offset(text, expected) -> None:
    assert parse_when(text) == expected and parse_when(text).utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["November", "2025-13-01", "01/11/2025", ""])
def test_anything_else_is_refused_with_an_example(text) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when(text)


def test_a_window_must_not_be_empty_and_its_ends_carry_a_zone() -> None:
    moment = datetime(2025, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="empty"):
        Window(moment, moment)
    with pytest.raises(ValueError, match="time zone"):
        Window(datetime(2025, 11, 1), moment + timedelta(days=1))  # noqa: DTZ001 - the naive end is the point
    assert Window(moment.astimezone(timezone(timedelta(hours=2))), moment + timedelta(seconds=1))


def test_the_filter_is_the_window_and_the_opt_out_codes() -> None:
    settings = Settings.from_env({})
    assert log_filter(settings, WINDOW, {100000004, 100000003}) == (
        "createdon ge 2025-11-01T00:00:00Z and createdon lt 2025-12-01T00:00:00Z and "
        "(concep_activitytype eq 100000003 or concep_activitytype eq 100000004)"
    )
    # A text or lookup column cannot be matched as the router matches it: the window alone, the rule decides.
    assert (
        log_filter(settings, WINDOW, None) == "createdon ge 2025-11-01T00:00:00Z and createdon lt 2025-12-01T00:00:00Z"
    )


def test_the_codes_are_the_options_the_router_sends_to_bulk_email_opt_out() -> None:
    settings = Settings.from_env({"OPT_OUT_ACTIVITY_TYPES": "spam-report;GROUP OPT OUT;42"})
    options = [(1, "Spam Report"), (2, "Group Opt out"), (3, "User Opt Out"), (4, "Hard Bounce"), (42, "Other")]
    assert opt_out_codes(options, settings) == {1, 2, 42}


def test_every_label_of_an_option_is_read_from_its_local_or_global_option_set() -> None:
    def label(*texts: str) -> dict[str, object]:
        return {"LocalizedLabels": [{"Label": t, "LanguageCode": 1033 + n} for n, t in enumerate(texts)]}

    local = {
        "OptionSet": {"Options": [{"Value": 7, "Label": label("Spam Report", "Signalé")}]},
        "GlobalOptionSet": None,
    }
    shared = {"OptionSet": None, "GlobalOptionSet": {"Options": [{"Value": 8, "Label": label("Client Opt Out")}]}}
    assert choice_options(local) == [(7, "Signalé"), (7, "Spam Report")]
    assert choice_options(shared) == [(8, "Client Opt Out")]


def test_only_the_columns_the_router_reads_are_selected() -> None:
    assert log_select(Settings.from_env(COLUMNS)) == (
        "concep_activitytype",
        "createdon",
        "_concep_contactid_value",
        "_concep_leadid_value",
    )
    assert log_select(Settings.from_env({})) == ()  # the one-lookup default looks at every lookup


def test_a_log_is_read_with_the_routers_rule() -> None:
    reader = LogReader(Settings.from_env(COLUMNS))
    found = reader.read(_row(_concep_leadid_value=LEAD, **{f"_concep_leadid_value{LOOKUP}": "lead"}))
    assert found == OptOutLog(LOG, "2025-11-03T10:00:00Z", "Spam Report", Recipient("lead", LEAD))
    # Labels and codes as the router reads them: the code alone is enough when the list names it.
    by_code = LogReader(Settings.from_env({**COLUMNS, "OPT_OUT_ACTIVITY_TYPES": "100000003"}))
    contact = {"_concep_contactid_value": CONTACT, f"_concep_contactid_value{LOOKUP}": "contact"}
    assert isinstance(by_code.read(_row(None, **contact)), OptOutLog)


@pytest.mark.parametrize(("label", "code"), [("User Opt Out", 100000006), ("Hard Bounce", 100000007), ("Open", 1)])
def test_user_level_opt_outs_bounces_and_other_types_are_not_opt_outs(label, code) -> None:
    reader = LogReader(Settings.from_env(COLUMNS))
    contact = {"_concep_contactid_value": CONTACT, f"_concep_contactid_value{LOOKUP}": "contact"}
    assert isinstance(reader.read(_row(**contact)), OptOutLog)
    assert reader.read(_row(label, code, **contact)) is None


def test_an_opt_out_logged_while_the_function_was_off_is_still_an_opt_out() -> None:
    settings = Settings.from_env({**COLUMNS, "AzureWebJobs.BulkEmailOptOut.Disabled": "true"})
    contact = {"_concep_contactid_value": CONTACT, f"_concep_contactid_value{LOOKUP}": "contact"}
    assert isinstance(LogReader(settings).read(_row(**contact)), OptOutLog)


def test_a_log_without_a_recipient_or_with_an_ambiguous_one_is_unresolved_with_the_routers_reason() -> None:
    none = LogReader(Settings.from_env(COLUMNS)).read(_row())
    assert isinstance(none, UnresolvedLog) and none.reason.startswith("no recipient: none of RECIPIENT_COLUMNS")
    two = _row(
        _concep_contactid_value=CONTACT,
        _concep_leadid_value=LEAD,
        **{f"_concep_contactid_value{LOOKUP}": "contact", f"_concep_leadid_value{LOOKUP}": "lead"},
    )
    ambiguous = LogReader(Settings.from_env({})).read(two)
    assert isinstance(ambiguous, UnresolvedLog) and ambiguous.reason.startswith("ambiguous recipient")


def test_honoured_means_every_readable_column_of_the_update_already_holds_its_value() -> None:
    settings = Settings.from_env({"OPT_OUT_UPDATE": '{"donotbulkemail": true, "donotemail": true}'})
    assert honoured({"donotbulkemail": True, "donotemail": True}, settings)
    assert not honoured({"donotbulkemail": True, "donotemail": False}, settings)
    assert not honoured({"donotbulkemail": True}, settings)


def _report(**changes: object) -> Report:
    values: dict[str, object] = {
        "window": WINDOW,
        "opt_outs": 3,
        "recipients": 2,
        "honoured": 1,
        "not_honoured": (Finding(Recipient("contact", CONTACT), (LOG,)),),
        "recipient_missing": (),
        "unresolved": (),
        "fixed": 0,
        "failed": (),
        "requests": 4,
        "dry_run": True,
        "left": 1,
    }
    return Report(**{**values, **changes})  # type: ignore[arg-type]


def test_the_report_is_clean_only_when_nothing_is_left_failed_or_unresolved() -> None:
    assert not _report().clean
    assert _report(fixed=1, left=0, dry_run=False).clean
    assert not _report(left=0, unresolved=(UnresolvedLog(LOG, None, "Spam Report", "no recipient"),)).clean
    assert _report(left=0, not_honoured=(), recipient_missing=(Finding(Recipient("lead", LEAD), (LOG,)),)).clean


def test_the_report_as_json_has_the_documented_shape() -> None:
    assert _report().as_json() == {
        "since": "2025-11-01T00:00:00Z",
        "until": "2025-12-01T00:00:00Z",
        "opt_outs": 3,
        "recipients": 2,
        "honoured": 1,
        "not_honoured": [{"table": "contact", "id": CONTACT, "log_ids": [LOG]}],
        "recipient_missing": [],
        "unresolved": [],
        "fixed": 0,
        "failed": [],
        "requests": 4,
        "dry_run": True,
    }


def test_evidence_holds_ids_times_the_type_and_the_finding() -> None:
    log = OptOutLog(LOG, "2025-11-03T10:00:00Z", "Spam Report", Recipient("contact", CONTACT))
    assert len(CSV_HEADER) == 6
    assert evidence_row(log, Status.FIXED) == (LOG, "2025-11-03T10:00:00Z", "Spam Report", "contact", CONTACT, "fixed")
    unresolved = UnresolvedLog(LOG, None, "Spam Report", "no recipient")
    assert evidence_row(unresolved, Status.HONOURED)[-1] == "unresolved"


# --- the fast path: the router's answers, cheaper ---------------------------------------------------------------

_TYPE_VALUES = st.one_of(
    st.sampled_from([100000003, 100000001, 100000006, 100000007, 1, 0, -5, True, False, None, [100000003]]),
    st.sampled_from(["Spam Report", " spam-report ", "Group Opt out", "Hard Bounce", "User Opt Out", "", "  "]),
    st.integers(),
    st.text(max_size=12),
    st.just({"LogicalName": "concep_activitytype", "Id": CONTACT, "Name": "Spam Report"}),
)
_LABELS = st.one_of(st.none(), st.sampled_from(["Spam Report", "Client Opt Out", "Hard Bounce", "", " "]), st.text())
_IDS = st.one_of(
    st.sampled_from([CONTACT, LEAD, CONTACT.upper(), "{" + LEAD + "}", "{" + LEAD, "", "not-a-guid", None]),
    st.integers(),
    st.text(max_size=8),
)
_TABLES = st.one_of(st.sampled_from(["contact", "lead", "account", "Contact", "systemuser", "", None]), st.integers())
_MISSING = object()


@st.composite
def _log_rows(draw: st.DrawFn) -> dict[str, object]:
    row: dict[str, object] = {"concep_emailcampaignlogid": LOG, "createdon": "2025-11-03T10:00:00Z"}
    value = draw(st.one_of(st.just(_MISSING), _TYPE_VALUES))
    if value is not _MISSING:
        row["concep_activitytype"] = value
    label = draw(st.one_of(st.just(_MISSING), _LABELS))
    if label is not _MISSING:
        row[f"concep_activitytype{FORMATTED}"] = label
    for column in ("concep_contactid", "concep_leadid", "concep_recipientid"):
        if draw(st.booleans()):
            row[f"_{column}_value"] = draw(_IDS)
            table = draw(st.one_of(st.just(_MISSING), _TABLES))
            if table is not _MISSING:
                row[f"_{column}_value{LOOKUP}"] = table
    return row


_READERS = [
    LogReader(Settings.from_env(COLUMNS)),
    LogReader(Settings.from_env({"RECIPIENT_COLUMNS": "concep_recipientid;concep_contactid"})),
    LogReader(
        Settings.from_env({**COLUMNS, "OPT_OUT_ACTIVITY_TYPES": "100000003;Hard Bounce", "BOUNCE_ACTIVITY_TYPES": "X"})
    ),
    LogReader(Settings.from_env({})),  # the one-lookup default: always the router's whole decision
]


@hypothesis.settings(max_examples=400, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow])
@given(rows=st.lists(_log_rows(), min_size=1, max_size=8), reader=st.sampled_from(_READERS))
def test_the_fast_path_reads_every_log_as_the_routers_whole_decision_does(rows, reader) -> None:
    # The readers are shared across examples, so remembered activity types are exercised too.
    for row in rows:
        assert reader.read(row) == reader.decide(row), row


def test_the_fast_path_remembers_a_bounded_number_of_activity_types() -> None:
    reader = LogReader(Settings.from_env(COLUMNS))
    for code in range(1000):
        assert reader.read(_row(None, code, _concep_contactid_value=CONTACT)) is None
    assert len(reader._types) <= 256


def test_a_remembered_recipient_is_the_one_its_lookup_names_as_read() -> None:
    reader = LogReader(Settings.from_env(COLUMNS))
    as_contact = _row(_concep_contactid_value=CONTACT.upper(), **{f"_concep_contactid_value{LOOKUP}": "contact"})
    as_lead = _row(_concep_contactid_value=CONTACT.upper(), **{f"_concep_contactid_value{LOOKUP}": "lead"})
    stranger = _row(_concep_contactid_value=CONTACT.upper(), **{f"_concep_contactid_value{LOOKUP}": "systemuser"})

    for row in (as_contact, as_lead, stranger, as_contact, as_lead, stranger):
        assert reader.read(row) == reader.decide(row)
    first, again = reader.read(as_contact), reader.read(as_contact)
    assert isinstance(first, OptOutLog) and isinstance(again, OptOutLog)
    assert first.recipient == Recipient("contact", CONTACT) and again.recipient is first.recipient
    assert isinstance(reader.read(stranger), UnresolvedLog)


def test_the_fast_path_remembers_a_bounded_number_of_recipients(monkeypatch) -> None:
    monkeypatch.setattr(audit_rules, "_RECIPIENT_CACHE_MAX", 10)
    reader = LogReader(Settings.from_env(COLUMNS))
    lookup = {f"_concep_contactid_value{LOOKUP}": "contact"}
    rows = [_row(_concep_contactid_value=str(uuid.UUID(int=n)), **lookup) for n in range(30)]

    found = reader.read_all(rows * 2)

    assert [f.recipient.id for f in found if isinstance(f, OptOutLog)] == [str(uuid.UUID(int=n)) for n in range(30)] * 2
    assert len(reader._recipients) == 10


def test_a_first_recipient_column_with_an_empty_id_is_left_to_the_router_not_skipped() -> None:
    # The router reads an empty id under a lookup name as that column's (malformed) value: the first listed column
    # holding a value decides, so a later column never stands in for it.
    reader = LogReader(Settings.from_env(COLUMNS))
    row = _row(
        _concep_contactid_value="",
        _concep_leadid_value=LEAD,
        **{f"_concep_contactid_value{LOOKUP}": "contact", f"_concep_leadid_value{LOOKUP}": "lead"},
    )
    found = reader.read(row)
    assert found == reader.decide(row)
    assert isinstance(found, UnresolvedLog) and "not a GUID" in found.reason


def test_any_id_is_the_in_query_function_over_the_ids_as_strings() -> None:
    expected = "Microsoft.Dynamics.CRM.In(PropertyName='contactid',PropertyValues=['a','b'])"
    assert any_id("contactid", ["a", "b"]) == expected


@given(count=st.integers(0, 400), room=st.integers(111, 4000))
def test_id_groups_name_every_id_once_in_order_and_each_filter_fits_its_room_url_encoded(count, room) -> None:
    ids = [str(uuid.UUID(int=n)) for n in range(count)]

    groups = id_groups("contactid", ids, room)

    assert [row_id for group in groups for row_id in group] == ids
    # encoded as the client sends a $filter (its safe characters: quotes, parentheses, '=', ',', '$', '@', '/', ':')
    sizes = [len(quote(any_id("contactid", group), safe="'()=,$@/:%")) for group in groups]
    assert all(size <= room for size in sizes)
    # no group could have taken the next group's first id
    assert all(
        len(quote(any_id("contactid", (*group, following[0])), safe="'()=,$@/:%")) > room
        for group, following in zip(groups, groups[1:], strict=False)
    )


def test_a_room_too_small_for_one_id_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="hold no id"):
        id_groups("contactid", [str(uuid.UUID(int=1))], 100)
