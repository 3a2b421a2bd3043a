"""Malformed and hostile message bodies: the router never crashes and always says why.

The corpus below is a list of named message bodies, each of which Dataverse would never post (or posts
only through a misconfigured service endpoint), built from the exact wire shape in
``optout_dev/messages.py``: truncated JSON, wrong JSON types in every field the router reads, a missing or
mistyped ``Target``, bodies over the size limit and one just under Dataverse's 192 KB, deeply nested JSON,
invalid UTF-8, BOMs, NUL bytes, wrong ``__type`` tags, injection-shaped ids, the wrong table, message or
organisation, .NET Binary and XML bodies, duplicate keys, ``NaN``/``Infinity``, lone surrogates and very
long strings.

What it proves, for each item:

* ``decide`` never raises: it returns a Decision with the expected outcome, and an ignored or rejected
  decision carries a reason naming the specific defect, so an administrator can act on it (a context
  without ``Target`` is the one exception by design: it returns a RowRequest for the trimmed-context
  re-read, and the pipeline, whose stub Dataverse answers "row gone", then rejects it);
* ``route`` (optout_core.app.router) keeps every rejected message on the rejected queue with its original
  body bytes and a ``rejected_reason`` property, sends nothing for an ignored one, forwards one readable
  work item for a routed one, reads Dataverse only for a context without ``Target``, and raises for none of
  them (a raise would mean redelivery until the message is dead-lettered).

Items that are normalised rather than rejected say so in their id (``…-normalised``): braced or uppercase
GUIDs and an uppercase table name. Everything else that is not a well-formed GUID — path traversal, OData
injection, URL-encoding, other .NET GUID formats — is rejected before it can reach a Web API URL.

Every item asserts what an administrator needs. When this corpus was written, 16 items found defects
(a raise on a 5,000-digit number, an out-of-range ISO date or a lone surrogate; a missing MessageName or a
foreign Update merely ignored; conflicting duplicate keys resolved silently; vague reasons); all are fixed.
A future defect can be recorded with ``decide_bug``/``route_bug`` (a strict xfail) until it is fixed.

The hypothesis tests then show that no input at all crashes the router: arbitrary bytes, arbitrary JSON
values, and random structural mutations of a valid campaign log context.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optout_core.app import router
from optout_core.app.services import Services
from optout_core.dataverse.result import Attempt
from optout_core.domain.execution_context import MAX_BODY_BYTES
from optout_core.domain.model import ENTITY_SETS, Outcome, Recipient, Route
from optout_core.domain.routing import Decision, RowRequest, decide
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_core.servicebus.envelopes import InboundMessage
from optout_dev.messages import (
    ACTIVITY,
    CONTACTS,
    CONTRACTS,
    CORRELATION_ID,
    FOREIGN_ORG_ID,
    LEADS,
    LOG_ID,
    MSBIN1_BODY,
    OMIT,
    OPERATION_ID,
    ORG_ID,
    XML_BODY,
    campaign_log,
    option,
    options,
    reference,
    wire,
)
from optout_dev.queues import InMemoryQueues

LOWER_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
JSON = "application/json"
MARK = "@@MARK@@"
STRICT_ORG = {"EXPECTED_ORGANIZATION_ID": ORG_ID}
CONTACT = Recipient("contact", CONTACTS[0])  # the default recipient of campaign_log()
OK = wire(campaign_log())


@functools.cache
def _settings(env_items: frozenset) -> Settings:
    return Settings.from_env(dict(env_items))


def settings_for(env: dict) -> Settings:
    return _settings(frozenset(env.items()))


# --- body builders ---------------------------------------------------------------------------------


def target_of(context: dict) -> dict:
    """The Target entity of the stage-40 context (not the ParentContext's)."""
    return next(p["value"] for p in context["InputParameters"] if p["key"] == "Target")


def edited(mutate, **log) -> bytes:
    """A campaign log, changed in place by ``mutate(context)``, in wire form."""
    context = campaign_log(**log)
    mutate(context)
    return wire(context)


def set_target(**members):
    def mutate(context):
        target_of(context).update(members)

    return mutate


def set_input_parameters(value):
    def mutate(context):
        context["InputParameters"] = value

    return mutate


def spliced(raw: bytes, *, count: int = -1, quoted: bool = True, **log) -> bytes:
    """A campaign log whose ``MARK`` string (or its quoted JSON form) is replaced by raw bytes.

    This is how bytes that no JSON writer produces (NaN, lone surrogates, invalid UTF-8, raw NUL) get into
    an otherwise exact Dataverse body."""
    body = wire(campaign_log(**log))
    needle = f'"{MARK}"'.encode() if quoted else MARK.encode()
    assert needle in body
    return body.replace(needle, raw, count)


def mark_offset(**log) -> int:
    """The byte offset of the first ``MARK`` in the wire body (where a splice lands)."""
    return wire(campaign_log(**log)).index(MARK.encode())


def padded_to(size: int) -> bytes:
    """A valid routed body of exactly ``size`` bytes, padded with an unknown top-level key."""
    base = len(wire(campaign_log(ZzPadding="")))
    body = wire(campaign_log(ZzPadding="x" * (size - base)))
    assert len(body) == size
    return body


def legal_190kb() -> bytes:
    """A campaign log carrying a long (HTML-ish, non-ASCII) text column: ~190 KB, under Dataverse's 192 KB."""
    chunk = "<p>Liebe Kundin, lieber Kunde – €/£ Grüße</p>"
    base = len(wire(campaign_log(extra_attributes={"concep_emailbody": ""})))
    per_chunk = 2 * len(
        json.dumps(chunk, ensure_ascii=False).encode()[1:-1].replace(b"/", b"\\/")
    )  # Target + ParentContext
    body = wire(campaign_log(extra_attributes={"concep_emailbody": chunk * ((190_000 - base) // per_chunk)}))
    assert 185_000 < len(body) < 192 * 1024
    return body


def cut_after(marker: bytes) -> bytes:
    """The exact body, cut just after the first ``marker``."""
    return OK[: OK.index(marker) + len(marker)]


def string_start(cut: bytes) -> int:
    """The 1-based column of the string a truncated body ends inside (its opening quote)."""
    return cut.rindex(b'"') + 1


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- the corpus ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    body: bytes
    outcome: Outcome
    expect: tuple = ()  # each str must be in the reason; a tuple of str: at least one of them
    absent: tuple = ()  # strings the reason must not contain
    content_type: str | None = JSON
    env: dict = field(default_factory=dict)
    recipient: Recipient | None = None  # for routed items
    route: Route | None = None
    log_id: str | None = None
    occurred_on: object = ...  # for routed items: the work item's occurred_on (... = not checked)
    max_reason: int | None = None
    row_request: bool = False  # no Target: decide asks for the row; the pipeline reads it (here: gone)
    decide_bug: str | None = None  # xfail reason for the decision test (and, by default, the pipeline test)
    route_bug: str | None = None  # xfail reason for the pipeline test, when it differs

    @property
    def pipeline_bug(self) -> str | None:
        return self.route_bug or self.decide_bug


R, I, X = Outcome.ROUTED, Outcome.IGNORED, Outcome.REJECTED  # noqa: E741 (one letter each, for the corpus table)
NOT_JSON = "body is not valid JSON ("
NOT_UTF8 = "body is not UTF-8 text (invalid byte at offset "
NOT_GUID_RECIPIENT = "the recipient id in concep_recipientid is not a GUID"
NO_RECIPIENT = "no recipient: the campaign log references no contact, lead or account"
NOT_ACTIVITY = "the campaign log's concep_activitytype is neither a choice, text nor a lookup"
UNSUPPORTED_KIND = "yes/no and multi-select choice columns are not supported"
SUPPORTED_KINDS = "set ACTIVITY_TYPE_COLUMN to a choice, text or lookup column"
ROW_GONE = f"the context was trimmed and campaign log {LOG_ID} no longer exists in Dataverse"
NOT_ENTITY = "InputParameters.Target is not an Entity"
MSBIN = "body is .NET Binary (application/msbin1)"
XML = "body is XML: set the service endpoint's message format to JSON"
TOO_DEEP = "body is JSON nested too deeply to be a Dataverse context"
NOT_CONTEXT = "not a Dataverse RemoteExecutionContext object"
OPTION = f"OptionSetValue:{CONTRACTS}"


def _cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # -- truncated JSON, at several cut points ----------------------------------------------------
    add(
        Case(
            "truncated-after-opening-brace",
            OK[:1],
            X,
            (NOT_JSON + "Expecting property name enclosed in double quotes at line 1 column 2)",),
        )
    )
    cut = cut_after(b'"MessageName":')
    add(Case("truncated-after-key-colon", cut, X, (NOT_JSON + f"Expecting value at line 1 column {len(cut) + 1})",)))
    cut = cut_after(b'"MessageName":"Cre')
    add(
        Case(
            "truncated-inside-string-value",
            cut,
            X,
            (NOT_JSON + "Unterminated string starting at", f"line 1 column {string_start(cut)})"),
        )
    )
    cut = cut_after(b'"createdon","value":"\\')
    add(
        Case(
            "truncated-inside-escaped-slash",
            cut,
            X,
            (NOT_JSON + "Unterminated string starting at", f"line 1 column {string_start(cut)})"),
        )
    )
    add(
        Case(
            "truncated-before-final-brace",
            OK[:-1],
            X,
            (NOT_JSON + f"Expecting ',' delimiter at line 1 column {len(OK)})",),
        )
    )
    add(Case("trailing-second-document", OK + b"{}", X, (NOT_JSON + f"Extra data at line 1 column {len(OK) + 1})",)))

    # -- wrong JSON types in every field the router reads -----------------------------------------
    add(
        Case(
            "MessageName-number",
            wire(campaign_log(MessageName=5)),
            X,
            (("MessageName is a JSON int", "MessageName is a JSON number"), "not a string"),
        )
    )
    add(
        Case(
            "MessageName-object",
            wire(campaign_log(MessageName={"Value": "Create"})),
            X,
            (("MessageName is a JSON dict", "MessageName is a JSON object"), "not a string"),
        )
    )
    add(
        Case(
            "PrimaryEntityName-array",
            wire(campaign_log(PrimaryEntityName=["concep_emailcampaignlog"])),
            X,
            (("PrimaryEntityName is a JSON list", "PrimaryEntityName is a JSON array"), "not a string"),
        )
    )
    add(
        Case(
            "PrimaryEntityName-boolean",
            wire(campaign_log(PrimaryEntityName=False)),
            X,
            (("PrimaryEntityName is a JSON bool", "PrimaryEntityName is a JSON boolean"), "not a string"),
        )
    )
    add(
        Case("PrimaryEntityId-number", wire(campaign_log(PrimaryEntityId=12345)), X, ("PrimaryEntityId is not a GUID",))
    )
    add(
        Case(
            "PrimaryEntityId-null",
            wire(campaign_log(PrimaryEntityId=None)),
            X,
            ("PrimaryEntityId (the campaign log id) is missing",),
        )
    )
    add(
        Case(
            "OrganizationId-object",
            wire(campaign_log(OrganizationId={"Id": ORG_ID})),
            X,
            ("OrganizationId is not a GUID",),
        )
    )
    add(Case("OperationId-boolean", wire(campaign_log(OperationId=True)), X, ("OperationId is not a GUID",)))
    add(Case("CorrelationId-number", wire(campaign_log(CorrelationId=1.5)), X, ("CorrelationId is not a GUID",)))
    target = target_of(campaign_log())
    add(
        Case(
            "InputParameters-object",
            edited(set_input_parameters({"Target": target})),
            X,
            ("InputParameters is not a key/value array",),
        )
    )
    add(
        Case(
            "InputParameters-string",
            edited(set_input_parameters("Target")),
            X,
            ("InputParameters is not a key/value array",),
        )
    )
    add(
        Case(
            "InputParameters-entry-is-array",
            edited(set_input_parameters([["Target", target]])),
            X,
            ("InputParameters holds an entry that is not a {key, value} pair",),
        )
    )
    add(
        Case(
            "InputParameters-entry-key-number",
            edited(set_input_parameters([{"key": 7, "value": target}])),
            X,
            ("InputParameters holds an entry that is not a {key, value} pair",),
        )
    )
    add(
        Case(
            "Target-string",
            edited(set_input_parameters([{"key": "Target", "value": "concep_emailcampaignlog"}])),
            X,
            (NOT_ENTITY,),
        )
    )
    add(Case("Target-array", edited(set_input_parameters([{"key": "Target", "value": [target]}])), X, (NOT_ENTITY,)))
    add(
        Case(
            "Target.Attributes-object",
            edited(set_target(Attributes={"concep_activitytype": option(100000004)})),
            X,
            ("Target.Attributes is not a key/value array",),
        )
    )
    add(
        Case(
            "Target.Attributes-entry-string",
            edited(set_target(Attributes=["concep_activitytype"])),
            X,
            ("Target.Attributes holds an entry that is not a {key, value} pair",),
        )
    )
    add(
        Case(
            "Target.Attributes-entry-key-null",
            edited(set_target(Attributes=[{"key": None, "value": 1}])),
            X,
            ("Target.Attributes holds an entry that is not a {key, value} pair",),
        )
    )
    add(
        Case(
            "Target.Attributes-null",
            edited(set_target(Attributes=None)),
            X,
            ("the campaign log has no column 'concep_activitytype'", "ACTIVITY_TYPE_COLUMN"),
        )
    )
    add(
        Case(
            "Target.FormattedValues-string",
            edited(set_target(FormattedValues="Group Opt out")),
            X,
            ("Target.FormattedValues is not a key/value array",),
        )
    )
    add(
        Case(
            "Target.FormattedValues-entry-number",
            edited(set_target(FormattedValues=[100000004])),
            X,
            ("Target.FormattedValues holds an entry that is not a {key, value} pair",),
        )
    )
    add(
        Case(
            "FormattedValues-label-number-is-no-label",
            spliced(b"5", activity=ACTIVITY["Group Opt out"], activity_label=MARK),
            I,
            (
                "activity type option 100000004 is not an opt-out or bounce type",
                "(the message carries no label: list its option code)",
            ),
        )
    )
    add(
        Case(
            "activity-type-boolean",
            wire(campaign_log(activity=None, extra_attributes={"concep_activitytype": True})),
            X,
            ("the campaign log's concep_activitytype is a yes/no column", UNSUPPORTED_KIND, SUPPORTED_KINDS),
        )
    )
    add(
        Case(
            "activity-type-boolean-labelled",
            wire(campaign_log(activity=False)),
            X,
            ("the campaign log's concep_activitytype is a yes/no column", UNSUPPORTED_KIND, SUPPORTED_KINDS),
            absent=(NOT_ACTIVITY,),
        )
    )
    add(
        Case(
            "activity-type-array-multiselect",
            wire(campaign_log(activity=options(100000003, 100000004))),
            X,
            ("the campaign log's concep_activitytype is a multi-select choice column", UNSUPPORTED_KIND),
            absent=(NOT_ACTIVITY,),
        )
    )
    add(
        Case(
            "activity-type-array-of-strings",
            wire(campaign_log(activity=["Spam Report"], activity_label=None)),
            X,
            (NOT_ACTIVITY,),
        )
    )
    add(
        Case(
            "activity-type-option-value-string",
            wire(campaign_log(activity={"__type": OPTION, "Value": "100000003"}, activity_label="Spam Report")),
            X,
            (NOT_ACTIVITY,),
        )
    )
    add(
        Case(
            "activity-type-float",
            wire(campaign_log(activity={"__type": OPTION, "Value": 100000003.0})),
            X,
            (NOT_ACTIVITY,),
        )
    )
    add(
        Case(
            "recipient-LogicalName-number",
            wire(
                campaign_log(
                    recipient=None,
                    lookups={"concep_recipientid": {**reference("contact", CONTACTS[0]), "LogicalName": 42}},
                )
            ),
            X,
            (NO_RECIPIENT,),
        )
    )
    add(
        Case(
            "recipient-LogicalName-null",
            wire(
                campaign_log(
                    recipient=None,
                    lookups={"concep_recipientid": {**reference("contact", CONTACTS[0]), "LogicalName": None}},
                )
            ),
            X,
            (NO_RECIPIENT,),
        )
    )
    add(
        Case(
            "recipient-Id-number",
            wire(
                campaign_log(
                    recipient=None, lookups={"concep_recipientid": {**reference("contact", CONTACTS[0]), "Id": 42}}
                )
            ),
            X,
            (NOT_GUID_RECIPIENT,),
        )
    )
    add(
        Case(
            "recipient-Id-null",
            wire(
                campaign_log(
                    recipient=None, lookups={"concep_recipientid": {**reference("contact", CONTACTS[0]), "Id": None}}
                )
            ),
            X,
            (NOT_GUID_RECIPIENT,),
        )
    )
    add(
        Case(
            "recipient-Id-guid-wrapper-unwrapped",
            wire(
                campaign_log(
                    recipient=None,
                    lookups={
                        "concep_recipientid": {
                            **reference("contact", CONTACTS[0]),
                            "Id": {"__type": "Guid:#System", "__value": CONTACTS[0]},
                        }
                    },
                )
            ),
            R,
            recipient=CONTACT,
        )
    )

    # -- missing Target, Target with a wrong __type -------------------------------------------------
    add(Case("InputParameters-empty-no-Target", edited(set_input_parameters([])), X, (ROW_GONE,), row_request=True))
    add(
        Case(
            "Target-null",
            edited(set_input_parameters([{"key": "Target", "value": None}])),
            X,
            (ROW_GONE,),
            row_request=True,
        )
    )
    add(
        Case(
            "Target-tagged-EntityReference", edited(set_target(__type=f"EntityReference:{CONTRACTS}")), X, (NOT_ENTITY,)
        )
    )
    add(Case("Target-tagged-OptionSetValue", edited(set_target(__type=OPTION)), X, (NOT_ENTITY,)))
    add(
        Case(
            "Create-with-EntityReference-Target",
            wire(campaign_log(message_name="Delete", MessageName="Create")),
            X,
            (NOT_ENTITY,),
        )
    )

    # -- messages that name the log by EntityReference: the header decides before the Target is read --
    for name in ("Delete", "Assign", "SetState"):
        add(
            Case(
                f"message-{name}-EntityReference",
                wire(campaign_log(message_name=name)),
                I,
                (f"message '{name}' is not Create", "register the step on Create"),
                absent=(NOT_ENTITY,),
            )
        )
    add(
        Case(
            "message-Delete-foreign-table",
            wire(campaign_log(message_name="Delete", entity="contact")),
            X,
            ("table 'contact' is not the campaign log table", "CAMPAIGN_LOG_TABLE"),
        )
    )
    add(
        Case(
            "message-Delete-foreign-organisation",
            wire(campaign_log(message_name="Delete", organization_id=FOREIGN_ORG_ID)),
            X,
            (f"organisation {FOREIGN_ORG_ID} is not EXPECTED_ORGANIZATION_ID",),
            env=STRICT_ORG,
        )
    )
    add(
        Case(
            "message-Update-InputParameters-string",
            wire(campaign_log(message_name="Update", InputParameters="Target")),
            I,
            ("message 'Update' is not Create",),
        )
    )

    # -- other wrong __type tags --------------------------------------------------------------------
    add(
        Case(
            "recipient-tagged-OptionSetValue",
            wire(
                campaign_log(
                    recipient=None,
                    lookups={"concep_recipientid": {**reference("contact", CONTACTS[0]), "__type": OPTION}},
                )
            ),
            X,
            (NO_RECIPIENT,),
        )
    )
    add(
        Case(
            "activity-type-tagged-Money",
            wire(
                campaign_log(
                    activity={"__type": f"Money:{CONTRACTS}", "Value": 100000003}, activity_label="Spam Report"
                )
            ),
            X,
            (NOT_ACTIVITY,),
        )
    )
    add(
        Case(
            "PrimaryEntityId-guid-wrapper-junk",
            wire(campaign_log(PrimaryEntityId={"__type": "Guid:#System", "__value": "../concep_emailcampaignlogs"})),
            X,
            ("PrimaryEntityId is not a GUID",),
        )
    )
    add(
        Case(
            "PrimaryEntityId-guid-wrapper-normalised",
            wire(campaign_log(PrimaryEntityId={"__type": "Guid:#System", "__value": LOG_ID.upper()})),
            R,
            recipient=CONTACT,
            log_id=LOG_ID,
        )
    )

    # -- size -------------------------------------------------------------------------------------
    big = padded_to(600 * 1024)
    add(Case("over-512KiB", big, X, (f"body is {len(big)} bytes; Dataverse never posts more than 192 KB",)))
    add(
        Case(
            "one-byte-over-limit",
            padded_to(MAX_BODY_BYTES + 1),
            X,
            (f"body is {MAX_BODY_BYTES + 1} bytes; Dataverse never posts more than 192 KB",),
        )
    )
    add(Case("exactly-at-limit-routes", padded_to(MAX_BODY_BYTES), R, recipient=CONTACT))
    add(Case("legal-190KB-routes", legal_190kb(), R, recipient=CONTACT, route=Route.OPT_OUT))

    # -- deeply nested JSON -----------------------------------------------------------------------
    add(
        Case(
            "100k-nested-arrays-in-attribute-value",
            spliced(nested_arrays(100_000), count=1, extra_attributes={"concep_payload": MARK}),
            X,
            (TOO_DEEP,),
        )
    )
    add(Case("100k-nested-arrays-top-level", nested_arrays(100_000), X, (TOO_DEEP,)))
    add(Case("50k-nested-objects-top-level", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, X, (TOO_DEEP,)))
    add(Case("100k-unclosed-arrays-top-level", b"[" * 100_000, X, (TOO_DEEP,)))

    # -- invalid UTF-8 ----------------------------------------------------------------------------
    at = mark_offset(name=f"Spring {MARK}")
    for case_id, raw in [
        ("utf8-lone-continuation-byte", b"\x80"),
        ("utf8-overlong-slash", b"\xc0\xaf"),
        ("utf8-encoded-surrogate-cesu", b"\xed\xa0\x80"),
        ("cp1252-e-acute", b"Caf\xe9 au lait"),
        ("utf8-ff-byte", b"\xff"),
    ]:
        offset = at + raw.index(next(b for b in raw if b >= 0x80).to_bytes())
        add(
            Case(
                case_id,
                spliced(raw, quoted=False, name=f"Spring {MARK}"),
                X,
                (f"{NOT_UTF8}{offset})", "message charset to UTF8"),
            )
        )
    accented = wire(campaign_log(name="Frühjahrs-Newsletter"))
    cut = accented.index("ü".encode()) + 1
    add(Case("utf8-truncated-inside-multibyte-char", accented[:cut], X, (f"{NOT_UTF8}{cut - 1})",)))
    add(Case("utf16-le-with-bom", OK.decode().encode("utf-16"), X, (f"{NOT_UTF8}0)",)))
    add(
        Case(
            "utf16-le-without-bom",
            OK.decode().encode("utf-16-le"),
            X,
            (NOT_JSON + "Expecting property name enclosed in double quotes at line 1 column 2)",),
        )
    )

    # -- byte order marks -------------------------------------------------------------------------
    add(Case("utf8-bom-routes", wire(campaign_log(), bom=True), R, recipient=CONTACT))
    add(
        Case(
            "double-utf8-bom",
            b"\xef\xbb\xbf" + wire(campaign_log(), bom=True),
            X,
            (NOT_JSON + "Unexpected UTF-8 BOM (decode using utf-8-sig) at line 1 column 1)",),
        )
    )

    # -- NUL bytes, raw and escaped ---------------------------------------------------------------
    at = mark_offset(name=f"Spring{MARK}newsletter")
    add(
        Case(
            "raw-nul-inside-string",
            spliced(b"\x00", quoted=False, name=f"Spring{MARK}newsletter"),
            X,
            (NOT_JSON + f"Invalid control character at line 1 column {at + 1})",),
        )
    )
    add(Case("raw-nul-before-document", b"\x00" + OK, X, (NOT_JSON + "Expecting value at line 1 column 1)",)))
    add(Case("raw-nul-after-document", OK + b"\x00", X, (NOT_JSON + f"Extra data at line 1 column {len(OK) + 1})",)))
    add(
        Case(
            "escaped-nul-in-PrimaryEntityId",
            wire(campaign_log(PrimaryEntityId=LOG_ID + "\x00")),
            X,
            ("PrimaryEntityId is not a GUID",),
        )
    )
    add(
        Case(
            "escaped-nul-in-activity-label",
            wire(campaign_log(activity="Spam Report\x00", activity_label=None)),
            I,
            ("activity type 'Spam Report\\x00' is not an opt-out or bounce type",),
        )
    )
    add(
        Case(
            "escaped-nul-in-recipient-table",
            wire(campaign_log(recipient=("contact\x00", CONTACTS[0]))),
            X,
            (NO_RECIPIENT,),
        )
    )
    add(
        Case(
            "escaped-nul-in-PrimaryEntityName",
            wire(campaign_log(PrimaryEntityName="concep_emailcampaignlog\x00")),
            X,
            ("table 'concep_emailcampaignlog\\x00' is not the campaign log table", "CAMPAIGN_LOG_TABLE"),
        )
    )

    # -- non-GUID and injection-shaped ids --------------------------------------------------------
    for case_id, bad in [
        ("recipient-id-path-traversal", f"../../accounts({CONTACTS[0]})"),
        ("recipient-id-odata-injection", "') or true or ('"),
        ("recipient-id-guid-then-odata-injection", f"{CONTACTS[0]}') or true or ('"),
        ("recipient-id-url-encoded-braces", f"%7B{CONTACTS[0]}%7D"),
        ("recipient-id-url-encoded-hyphens", CONTACTS[0].replace("-", "%2D")),
        ("recipient-id-unbalanced-brace", "{" + CONTACTS[0]),
        ("recipient-id-dotnet-N-format", CONTACTS[0].replace("-", "")),
        ("recipient-id-dotnet-P-format", f"({CONTACTS[0]})"),
        ("recipient-id-trailing-newline", CONTACTS[0] + "\n"),
        ("recipient-id-fullwidth-digit", "\uff11" + CONTACTS[0][1:]),
    ]:
        add(Case(case_id, wire(campaign_log(recipient=("contact", bad))), X, (NOT_GUID_RECIPIENT,)))
    add(
        Case(
            "recipient-id-braced-uppercase-normalised",
            wire(campaign_log(recipient=("contact", "{" + CONTACTS[0].upper() + "}"))),
            R,
            recipient=CONTACT,
        )
    )
    add(
        Case(
            "recipient-table-uppercase-normalised",
            wire(campaign_log(recipient=("LEAD", LEADS[0].upper()))),
            R,
            recipient=Recipient("lead", LEADS[0]),
        )
    )
    add(
        Case(
            "PrimaryEntityId-path-traversal",
            wire(campaign_log(PrimaryEntityId="../concep_emailcampaignlogs")),
            X,
            ("PrimaryEntityId is not a GUID",),
        )
    )
    add(
        Case(
            "PrimaryEntityId-odata-injection",
            wire(campaign_log(PrimaryEntityId=f"{LOG_ID}') or true or ('")),
            X,
            ("PrimaryEntityId is not a GUID",),
        )
    )
    add(
        Case(
            "PrimaryEntityId-braced-uppercase-normalised",
            wire(campaign_log(PrimaryEntityId="{" + LOG_ID.upper() + "}")),
            R,
            recipient=CONTACT,
            log_id=LOG_ID,
        )
    )
    add(
        Case(
            "OrganizationId-odata-injection",
            wire(campaign_log(OrganizationId=f"{ORG_ID}' or '1'='1")),
            X,
            ("OrganizationId is not a GUID",),
            env=STRICT_ORG,
        )
    )
    add(
        Case(
            "OperationId-path-traversal",
            wire(campaign_log(OperationId=f"{OPERATION_ID}/../x")),
            X,
            ("OperationId is not a GUID",),
        )
    )
    add(
        Case(
            "CorrelationId-url-encoded",
            wire(campaign_log(CorrelationId=CORRELATION_ID.replace("-", "%2d"))),
            X,
            ("CorrelationId is not a GUID",),
        )
    )

    # -- wrong table, message or organisation -------------------------------------------------------
    add(
        Case(
            "table-contact",
            wire(campaign_log(entity="contact")),
            X,
            ("table 'contact' is not the campaign log table 'concep_emailcampaignlog' (CAMPAIGN_LOG_TABLE)",),
        )
    )
    add(
        Case(
            "table-uppercase-normalised",
            wire(campaign_log(PrimaryEntityName="CONCEP_EmailCampaignLog")),
            R,
            recipient=CONTACT,
        )
    )
    add(
        Case(
            "table-missing",
            wire(campaign_log(PrimaryEntityName=OMIT)),
            X,
            ("PrimaryEntityName", "CAMPAIGN_LOG_TABLE"),
            absent=("None",),
        )
    )
    add(
        Case(
            "message-Update",
            wire(campaign_log(message_name="Update")),
            I,
            ("message 'Update' is not Create", "register the step on Create"),
        )
    )
    add(
        Case(
            "message-lowercase-create", wire(campaign_log(MessageName="create")), I, ("message 'create' is not Create",)
        )
    )
    add(Case("message-missing", wire(campaign_log(MessageName=OMIT)), X, ("MessageName",), absent=("None",)))
    add(
        Case(
            "organisation-foreign",
            wire(campaign_log(organization_id=FOREIGN_ORG_ID)),
            X,
            (f"organisation {FOREIGN_ORG_ID} is not EXPECTED_ORGANIZATION_ID {ORG_ID}",),
            env=STRICT_ORG,
        )
    )
    add(
        Case(
            "organisation-braced-uppercase-normalised",
            wire(campaign_log(OrganizationId="{" + ORG_ID.upper() + "}")),
            R,
            recipient=CONTACT,
            env=STRICT_ORG,
        )
    )
    add(
        Case(
            "organisation-missing",
            wire(campaign_log(OrganizationId=OMIT)),
            X,
            ("OrganizationId", "EXPECTED_ORGANIZATION_ID"),
            absent=("None",),
            env=STRICT_ORG,
        )
    )
    add(
        Case(
            "organisation-foreign-on-Update",
            wire(campaign_log(organization_id=FOREIGN_ORG_ID, message_name="Update")),
            X,
            (f"organisation {FOREIGN_ORG_ID} is not EXPECTED_ORGANIZATION_ID",),
            env=STRICT_ORG,
        )
    )

    # -- other formats: .NET Binary, XML, other content types ---------------------------------------
    add(
        Case(
            "msbin1-by-content-type",
            MSBIN1_BODY,
            X,
            (MSBIN, "message format to JSON"),
            content_type="application/msbin1",
        )
    )
    add(Case("msbin1-content-type-with-json-body", OK, X, (MSBIN,), content_type="application/msbin1"))
    add(Case("msbin1-sniffed-under-json-content-type", MSBIN1_BODY, X, (MSBIN,)))
    add(Case("msbin1-sniffed-without-content-type", MSBIN1_BODY, X, (MSBIN,), content_type=None))
    add(Case("xml-by-content-type", XML_BODY, X, (XML,), content_type="application/xml"))
    add(Case("xml-sniffed-under-json-content-type", XML_BODY, X, (XML,)))
    add(Case("xml-sniffed-after-bom-and-whitespace", b"\xef\xbb\xbf \r\n" + XML_BODY, X, (XML,), content_type=None))
    add(Case("text-xml-content-type-with-json-body", OK, X, (XML,), content_type="text/xml; charset=utf-8"))
    add(
        Case(
            "content-type-text-plain",
            OK,
            X,
            ("content type 'text/plain' is not application/json",),
            content_type="text/plain",
        )
    )
    add(
        Case(
            "content-type-octet-stream",
            OK,
            X,
            ("content type 'application/octet-stream' is not application/json",),
            content_type="application/octet-stream",
        )
    )

    # -- empty, blank, and JSON that is not an object ----------------------------------------------
    add(Case("empty-body", b"", X, ("body is empty",)))
    add(Case("whitespace-only-body", b" \r\n\t ", X, (NOT_JSON + "Expecting value at line 2 column 3)",)))
    add(Case("bom-only-body", b"\xef\xbb\xbf", X, (NOT_JSON + "Expecting value at line 1 column 1)",)))
    add(
        Case(
            "top-level-array",
            json.dumps([campaign_log()]).encode(),
            X,
            (("body is a JSON list", "body is a JSON array"), NOT_CONTEXT),
        )
    )
    add(
        Case(
            "top-level-string",
            json.dumps(OK.decode()).encode(),
            X,
            (("body is a JSON str", "body is a JSON string"), NOT_CONTEXT),
        )
    )
    add(Case("top-level-number", b"40", X, (("body is a JSON int", "body is a JSON number"), NOT_CONTEXT)))
    add(Case("top-level-true", b"true", X, (("body is a JSON bool", "body is a JSON true"), NOT_CONTEXT)))
    add(Case("top-level-null", b"null", X, ("body is a JSON null", NOT_CONTEXT), absent=("NoneType",)))

    # -- duplicate keys: the router reads one value (the last), consistently ------------------------
    add(
        Case(
            "duplicate-MessageName-last-Update",
            OK[:-1] + b',"MessageName":"Update"}',
            I,
            ("message 'Update' is not Create",),
        )
    )
    add(Case("duplicate-MessageName-last-Create", b'{"MessageName":"Update",' + OK[1:], R, recipient=CONTACT))

    def second_recipient(context):
        target_of(context)["Attributes"].append({"key": "concep_recipientid", "value": reference("lead", LEADS[0])})

    add(
        Case(
            "duplicate-recipient-column-different-rows",
            edited(second_recipient),
            X,
            ("concep_recipientid", ("ambiguous", "duplicate")),
        )
    )

    # -- NaN / Infinity literals --------------------------------------------------------------------
    add(
        Case(
            "NaN-activity-option-value",
            spliced(b"NaN", activity={"__type": OPTION, "Value": MARK}, activity_label="Spam Report"),
            X,
            (NOT_ACTIVITY,),
        )
    )
    add(
        Case(
            "Infinity-PrimaryEntityId",
            spliced(b"Infinity", PrimaryEntityId=MARK),
            X,
            ("PrimaryEntityId is not a GUID",),
        )
    )
    add(
        Case(
            "minus-Infinity-top-level",
            b"-Infinity",
            X,
            (("body is a JSON float", "body is a JSON number"), NOT_CONTEXT),
        )
    )
    add(Case("NaN-in-unread-Depth-tolerated", spliced(b"NaN", Depth=MARK), R, recipient=CONTACT))

    # -- surrogate escapes ------------------------------------------------------------------------
    add(
        Case(
            "lone-surrogate-activity-text",
            spliced(b'"\\ud800"', activity=MARK, activity_label=None),
            I,
            ("activity type '\\ud800' is not an opt-out or bounce type",),
        )
    )
    add(
        Case(
            "lone-low-surrogate-PrimaryEntityId",
            spliced(b'"\\udc00"', PrimaryEntityId=MARK),
            X,
            ("PrimaryEntityId is not a GUID",),
        )
    )
    add(
        Case(
            "lone-surrogate-in-bounce-detail",
            spliced(b'"550 \\ud800 mailbox unavailable"', activity="Hard Bounce", bounce_reason=MARK),
            R,
            recipient=CONTACT,
            route=Route.BOUNCE,
        )
    )
    add(
        Case(
            "lone-surrogate-in-activity-label-routed-by-code",
            spliced(b'"Spam \\udfff Report"', activity=ACTIVITY["Spam Report"], activity_label=MARK),
            R,
            recipient=CONTACT,
            route=Route.OPT_OUT,
            env={"OPT_OUT_ACTIVITY_TYPES": "Spam Report;100000003"},
        )
    )
    add(
        Case(
            "surrogate-pair-emoji-routes",
            spliced(b'"Spring \\ud83c\\udf38 newsletter"', name=MARK),
            R,
            recipient=CONTACT,
        )
    )

    # -- very long strings and numbers ------------------------------------------------------------
    long_label = "Newsletter Open " * 9_000  # 144,000 characters, twice in the body (Target and ParentContext)
    add(
        Case(
            "activity-type-144k-chars",
            wire(campaign_log(activity=long_label, activity_label=None)),
            I,
            ("is not an opt-out or bounce type",),
            max_reason=1000,
        )
    )
    add(
        Case(
            "activity-type-label-padded-100k-spaces",
            wire(campaign_log(activity="Spam Report" + " " * 100_000, activity_label=None)),
            R,
            recipient=CONTACT,
            route=Route.OPT_OUT,
        )
    )
    add(
        Case(
            "activity-option-code-4000-digits",
            spliced(b"9" * 4000, activity={"__type": OPTION, "Value": MARK}, activity_label=None),
            I,
            ("activity type option 9999", "is not an opt-out or bounce type (the message carries no label"),
        )
    )
    # An unknown member is skipped unread (Dataverse keeps adding members); one the router reads is not.
    add(
        Case(
            "integer-5000-digits-in-unknown-member",
            spliced(b"1" * 5000, ZzCounter=MARK),
            R,
            (),
            recipient=CONTACT,
            route=Route.OPT_OUT,
        )
    )
    add(
        Case(
            "integer-5000-digits-in-target",
            spliced(b"1" * 5000, extra_attributes={"concep_score": MARK}),
            X,
            (("digits", "number"),),
        )
    )

    # -- empty or unreadable activity types ----------------------------------------------------------
    add(
        Case(
            "activity-type-empty-string",
            wire(campaign_log(activity="", activity_label=None)),
            I,
            ("concep_activitytype is empty",),
            absent=("option None",),
        )
    )
    add(
        Case(
            "activity-type-whitespace-only",
            wire(campaign_log(activity=" \t ", activity_label=None)),
            I,
            ("concep_activitytype is empty",),
            absent=("option None",),
        )
    )
    add(
        Case(
            "activity-type-lookup-without-name",
            wire(campaign_log(activity=reference("concep_activitytype", CONTACTS[2], None), activity_label=None)),
            I,
            ("concep_activitytype",),
            absent=("option None", "list its option code"),
        )
    )
    add(
        Case(
            "activity-type-null",
            wire(campaign_log(extra_attributes={"concep_activitytype": None})),
            I,
            ("the campaign log's concep_activitytype is empty",),
        )
    )
    add(
        Case(
            "activity-type-column-missing",
            wire(campaign_log(activity=None)),
            X,
            ("the campaign log has no column 'concep_activitytype'", "ACTIVITY_TYPE_COLUMN"),
        )
    )

    # -- createdon out of range (informational only: the message still routes) ----------------------
    add(
        Case(
            "createdon-typed-DateTime-wrapper-unwrapped",
            wire(campaign_log(wrap_dates=True)),
            R,
            recipient=CONTACT,
            occurred_on="2025-03-14T09:26:53Z",
        )
    )
    add(
        Case(
            "createdon-date-ms-out-of-range",
            wire(campaign_log(extra_attributes={"createdon": "/Date(999999999999999)/"})),
            R,
            recipient=CONTACT,
            occurred_on=None,
        )
    )
    add(
        Case(
            "createdon-iso-out-of-range",
            wire(campaign_log(extra_attributes={"createdon": "9999-12-31T23:59:59-01:00"})),
            R,
            recipient=CONTACT,
            occurred_on=None,
        )
    )
    return cases


CORPUS = _cases()


def _param(case: Case, bug: str | None):
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(case, id=case.id, marks=marks)


def _matches(reason: str, expected) -> bool:
    return any(e in reason for e in expected) if isinstance(expected, tuple) else expected in reason


def test_the_corpus_has_at_least_30_distinct_named_inputs():
    ids = [case.id for case in CORPUS]
    assert len(ids) == len(set(ids))
    inputs = {(case.body, case.content_type, tuple(sorted(case.env.items()))) for case in CORPUS}
    assert len(inputs) == len(CORPUS) >= 30


def assert_reason(reason: str | None, case: Case) -> None:
    assert isinstance(reason, str) and reason.strip()
    for expected in case.expect:
        assert _matches(reason, expected), f"{expected!r} not in {reason[:500]!r}"
    for unwanted in case.absent:
        assert unwanted not in reason, reason[:500]
    if case.max_reason is not None:
        assert len(reason) <= case.max_reason, f"reason is {len(reason)} characters"


@pytest.mark.parametrize("case", [_param(c, c.decide_bug) for c in CORPUS])
def test_the_router_decides_every_bad_input_with_a_specific_reason(case: Case):
    settings = settings_for(case.env)
    decision = decide(case.body, settings, content_type=case.content_type)

    if case.row_request:  # no Target: nothing to decide from until the shell reads the row
        assert isinstance(decision, RowRequest)
        assert decision.log_id == LOG_ID and decision.entity_set == settings.campaign_log_entity_set
        return
    assert isinstance(decision, Decision)
    assert decision.outcome is case.outcome, decision.reason
    if case.outcome is Outcome.ROUTED:
        assert not decision.reason and decision.work_item is not None
        assert decision.recipient.table in ENTITY_SETS and LOWER_GUID.fullmatch(decision.recipient.id)
        assert LOWER_GUID.fullmatch(decision.log_id)
        if case.recipient is not None:
            assert decision.recipient == case.recipient
        if case.route is not None:
            assert decision.route is case.route
        if case.log_id is not None:
            assert decision.log_id == case.log_id
        if case.occurred_on is not ...:
            assert decision.work_item.occurred_on == case.occurred_on
        return
    assert decision.work_item is None
    assert_reason(decision.reason, case)


class RowGone:
    """A Dataverse client for the router's one read (a trimmed context): the row no longer exists."""

    def __init__(self) -> None:
        self.reads: list[tuple] = []

    def read_row(self, entity_set: str, log_id: str, select=(), *, deadline=None) -> Attempt:
        self.reads.append((entity_set, log_id))
        return Attempt(None, requests=1)


QUEUE_SETTINGS = ("campaign_log_queue", "opt_out_queue", "bounce_queue", "rejected_queue")


@pytest.mark.parametrize("case", [_param(c, c.pipeline_bug) for c in CORPUS])
def test_the_router_function_keeps_rejects_drops_ignores_and_never_raises(case: Case):
    settings = settings_for(case.env)
    queues, dataverse = InMemoryQueues(), RowGone()
    properties = {"x-corpus-item": case.id}
    message = InboundMessage(
        body=case.body,
        content_type=case.content_type,
        message_id=f"sb-{case.id}",
        delivery_count=1,
        correlation_id="bad-input",
        application_properties=properties,
    )

    handled = router.route(message, Services(settings, sender=queues, dataverse=dataverse))

    assert handled.outcome is case.outcome, handled.reason
    assert dataverse.reads == ([(settings.campaign_log_entity_set, LOG_ID)] if case.row_request else [])
    sent = {getattr(settings, name): queues.messages(getattr(settings, name)) for name in QUEUE_SETTINGS}
    if case.outcome is Outcome.REJECTED:
        assert_reason(handled.reason, case)
        [kept] = sent.pop(settings.rejected_queue)
        assert type(kept.body) is bytes and kept.body == case.body  # the original bytes, untouched
        assert kept.application_properties["rejected_reason"] == handled.reason[:1000]
        assert kept.application_properties["rejected_by"] == "CampaignLogRouter"
        assert kept.application_properties["x-corpus-item"] == case.id
        assert kept.content_type == case.content_type
    elif case.outcome is Outcome.IGNORED:
        assert_reason(handled.reason, case)
    else:
        queue = settings.bounce_queue if handled.route == "bounce" else settings.opt_out_queue
        [forwarded] = sent.pop(queue)
        item = WorkItem.from_json(forwarded.body)
        assert str(item.recipient) == handled.recipient
        assert LOWER_GUID.fullmatch(item.recipient.id)
    assert all(not messages for messages in sent.values()), sent


# --- property-based: nothing crashes the router ------------------------------------------------------

DEFAULTS = settings_for({})
FAST = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DOMAIN_STRINGS = [
    "Create",
    "Update",
    "concep_emailcampaignlog",
    "contact",
    "lead",
    "account",
    "systemuser",
    CONTACTS[0],
    CONTACTS[0].upper(),
    "{" + LEADS[0] + "}",
    ORG_ID,
    LOG_ID,
    "Spam Report",
    "Hard Bounce",
    "User Opt Out",
    "Group Opt out",
    "/Date(1741944413000)/",
    "/Date(-62135596800000+0300)/",
    "9999-12-31T23:59:59+00:00",
    f"Entity:{CONTRACTS}",
    f"EntityReference:{CONTRACTS}",
    OPTION,
    "Guid:#System",
    "",
    " ",
    "\x00",
    "\ud800",
    "../",
    "') or true or ('",
    "%7B",
]
DOMAIN_KEYS = [
    "key",
    "value",
    "__type",
    "__value",
    "Id",
    "LogicalName",
    "Name",
    "Value",
    "Attributes",
    "FormattedValues",
    "Target",
    "MessageName",
    "PrimaryEntityName",
    "PrimaryEntityId",
    "OrganizationId",
    "InputParameters",
    "concep_activitytype",
    "concep_recipientid",
    "createdon",
]
text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
    | st.sampled_from(DOMAIN_STRINGS)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(text | st.sampled_from(DOMAIN_KEYS), children, max_size=5)
    ),
    max_leaves=20,
)


def encode(value, style: str) -> bytes:
    """JSON text the ways a sender might produce it; lone surrogates stay escapes or become CESU bytes."""
    if style == "ascii":
        return json.dumps(value).encode()
    if style == "escaped-slashes":
        return json.dumps(value).replace("/", "\\/").encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


styles = st.sampled_from(["ascii", "escaped-slashes", "raw-utf8"])


def assert_sound(decision: Decision | RowRequest) -> None:
    if isinstance(decision, RowRequest):  # no Target: the row is read by id, so the id must be a clean GUID
        assert LOWER_GUID.fullmatch(decision.log_id), decision.log_id
        assert decision.entity_set
        return
    assert isinstance(decision, Decision)
    assert decision.outcome in (Outcome.ROUTED, Outcome.IGNORED, Outcome.REJECTED)
    if decision.outcome is Outcome.ROUTED:
        assert decision.work_item is not None and decision.recipient is not None
        assert decision.recipient.table in ENTITY_SETS
        assert LOWER_GUID.fullmatch(decision.recipient.id), decision.recipient
        assert LOWER_GUID.fullmatch(decision.log_id), decision.log_id
    else:
        assert isinstance(decision.reason, str) and decision.reason.strip()
        assert decision.work_item is None


@FAST
@given(body=st.binary(max_size=2048), content_type=st.sampled_from([JSON, None, "application/msbin1", "text/plain"]))
def test_arbitrary_bytes_never_crash_the_router(body, content_type):
    assert_sound(decide(body, DEFAULTS, content_type=content_type))


@FAST
@given(value=json_values, style=styles, bom=st.booleans())
def test_arbitrary_json_never_crashes_the_router(value, style, bom):
    body = (b"\xef\xbb\xbf" if bom else b"") + encode(value, style)
    assert_sound(decide(body, DEFAULTS))


BASES = [
    campaign_log(),
    campaign_log(activity="Hard Bounce", bounce_reason="550 5.1.1 mailbox unavailable"),
    campaign_log(activity=ACTIVITY["Spam Report"], recipient=("lead", LEADS[0].upper())),
    campaign_log(
        recipient=None, lookups={"concep_contactid": reference("contact", CONTACTS[1]), "concep_accountid": None}
    ),
]
MUTATION_SETTINGS = [
    DEFAULTS,
    settings_for(
        {
            "RECIPIENT_COLUMNS": "concep_contactid;concep_recipientid",
            "OPT_OUT_ACTIVITY_TYPES": "Spam Report;100000003;100000004",
            "EXPECTED_ORGANIZATION_ID": ORG_ID,
        }
    ),
]


def paths(value, prefix=()) -> list[tuple]:
    """Every path (dict keys and list indexes) to a value inside ``value``, the root excluded."""
    found = []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found.append(prefix + (key,))
        found.extend(paths(child, prefix + (key,)))
    return found


BASE_PATHS = [paths(base) for base in BASES]
# Paths the router reads (InputParameters and the top-level ids), so mutations mostly land where they matter.
HOT_PATHS = [
    [
        p
        for p in ps
        if p[0]
        in (
            "InputParameters",
            "MessageName",
            "PrimaryEntityName",
            "PrimaryEntityId",
            "OrganizationId",
            "OperationId",
            "CorrelationId",
        )
    ]
    for ps in BASE_PATHS
]


def mutate(document, path: tuple, operation: str, replacement) -> None:
    """Replace, delete or wrap the value at ``path``; a path the earlier mutations removed is skipped."""
    parent = document
    for step in path[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    if (
        not isinstance(parent, (dict, list))
        or (isinstance(parent, dict) and last not in parent)
        or (isinstance(parent, list) and not (isinstance(last, int) and last < len(parent)))
    ):
        return
    if operation == "delete":
        del parent[last]
    elif operation == "wrap":
        parent[last] = {"__type": "Guid:#System", "__value": parent[last]}
    else:
        parent[last] = replacement


@st.composite
def mutated_contexts(draw):
    index = draw(st.integers(0, len(BASES) - 1))
    document = copy.deepcopy(BASES[index])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(HOT_PATHS[index]) | st.sampled_from(BASE_PATHS[index]))
        operation = draw(st.sampled_from(["replace", "replace", "delete", "wrap"]))
        mutate(document, path, operation, draw(json_values) if operation == "replace" else None)
    return document


@FAST
@given(document=mutated_contexts(), style=styles, strict=st.booleans())
def test_mutated_campaign_logs_never_crash_the_router(document, style, strict):
    decision = decide(encode(document, style), MUTATION_SETTINGS[strict])
    assert_sound(decision)
