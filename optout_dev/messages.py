"""Build Service Bus bodies in the exact shape Dataverse posts for an "Email Campaign Log" Create.

The body is a ``RemoteExecutionContext`` written by .NET ``DataContractJsonSerializer``, as described in
``docs/dataverse-messages.md`` (§3 serializer rules, §4 top-level keys, §5 Create specifics,
§6 trimming, §7 value shapes, §11 full example):

* every dictionary is a JSON array of ``{"key": ..., "value": ...}`` pairs;
* complex values carry ``"__type": "Name:Namespace"`` as their **first** member (the Target entity,
  EntityReferences, OptionSetValues); images, ``OwningExtension`` and primitives carry none;
* members are in alphabetical (ordinal) order, so the context's top-level keys come out sorted;
* dates are ``/Date(<ms>)/`` strings, guids plain lowercase strings;
* on the wire the JSON is one line, UTF-8, and every ``/`` is escaped as ``\\/``.

``campaign_log()`` returns the readable form (a dict, slashes unescaped, as after ``json.loads``);
``wire()`` turns it into the bytes Dataverse puts on the queue.  Standard library only.

The ``concep_*`` schema is a placeholder (the real Concep schema is unconfirmed, §12 of the doc).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from types import EllipsisType
from typing import Any

__all__ = [
    "ORG_ID",
    "FOREIGN_ORG_ID",
    "ACTIVITY",
    "CONTRACTS",
    "ENTITY",
    "PRIMARY_NAME",
    "ACTIVITY_COLUMN",
    "RECIPIENT_COLUMN",
    "BOUNCE_REASON_COLUMN",
    "CONTACTS",
    "LEADS",
    "ACCOUNTS",
    "DELETED_CONTACT",
    "LOG_ID",
    "OPERATION_ID",
    "CORRELATION_ID",
    "STEP_ID",
    "USER_ID",
    "BUSINESS_UNIT_ID",
    "OMIT",
    "reference",
    "option",
    "options",
    "typed",
    "campaign_log",
    "wire",
    "MSBIN1_BODY",
    "XML_BODY",
]

# --- fixed facts of the demo schema ---------------------------------------------------------------

ORG_ID = "99d8114f-583c-44d5-9a40-2634f42fc1fa"
FOREIGN_ORG_ID = "0f0e0d0c-0b0a-4909-8807-060504030201"

ENTITY = "concep_emailcampaignlog"
PRIMARY_NAME = "concep_name"
ACTIVITY_COLUMN = "concep_activitytype"
RECIPIENT_COLUMN = "concep_recipientid"
BOUNCE_REASON_COLUMN = "concep_bouncereason"

ACTIVITY = {
    "Sent": 100000000,
    "Open": 100000001,
    "Click": 100000002,
    "Spam Report": 100000003,
    "Group Opt out": 100000004,
    "Client Opt Out": 100000005,
    "User Opt Out": 100000006,
    "Hard Bounce": 100000007,
    "Soft Bounce": 100000008,
}

# Recipients seeded in the demo Dataverse.
CONTACTS = (
    "a1000000-0000-4000-8000-000000000001",
    "a1000000-0000-4000-8000-000000000002",
    "a1000000-0000-4000-8000-000000000003",
)
LEADS = ("b2000000-0000-4000-8000-000000000001", "b2000000-0000-4000-8000-000000000002")
ACCOUNTS = ("c3000000-0000-4000-8000-000000000001", "c3000000-0000-4000-8000-000000000002")
DELETED_CONTACT = "d4000000-0000-4000-8000-000000000004"  # never seeded: ends as recipient_missing

# --- fixed ids of the default message (taken from §11 of the doc) ----------------------------------

LOG_ID = "5c1e8a72-4f10-f011-998a-6045bd0f2c11"
OPERATION_ID = "6d1e8a72-4f10-f011-998a-6045bd0f2c11"
CORRELATION_ID = "87b86356-9b2a-4e69-b3c5-955deb686797"
STEP_ID = "bd0e17f3-6ed1-4706-a715-98e1bb48bda8"  # sdkmessageprocessingstep (OwningExtension.Id)
USER_ID = "c4d1f0a9-7e2b-ef11-8ee7-000d3a4c7b21"  # systemuser (UserId, InitiatingUserId, owner)
USER_AAD_ID = "3a67166a-2e91-4fb4-ba00-8f915a45358b"
BUSINESS_UNIT_ID = "0b6f4a3e-21c9-ef11-b8e8-000d3a4c7b21"
USER_AGENT = "ExampleConnector/2.1"

CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
_KVP_STRING_STRING = "KeyValuePairOfstringstring:#System.Collections.Generic"
_REQUEST_NS = uuid.UUID("1b0c6f0e-5d8a-4c1e-9a52-6f0d3c2b7e41")  # namespace for derived RequestIds

OMIT = ...  # pass as a top-level override value to delete that key, e.g. campaign_log(InitiatingUserAgent=OMIT)


# --- value shapes (§7) ------------------------------------------------------------------------------


def reference(table: str, row_id: str, name: str | None = None) -> dict[str, Any]:
    """An EntityReference (lookup/owner/customer value), ``__type`` first."""
    return {
        "__type": f"EntityReference:{CONTRACTS}",
        "Id": row_id,
        "KeyAttributes": [],
        "LogicalName": table,
        "Name": name,
        "RowVersion": None,
    }


def option(code: int) -> dict[str, Any]:
    """An OptionSetValue (choice, statecode, statuscode), ``__type`` first."""
    return {"__type": f"OptionSetValue:{CONTRACTS}", "Value": code}


def options(*codes: int) -> list[dict[str, Any]]:
    """A multi-select choice value (OptionSetValueCollection): a bare array of tagged OptionSetValues.

    An array cannot carry a ``__type`` member, so the collection itself is untagged; its items are tagged
    (observed [CAPTURE-AX]: ``"shko_choices": [{"__type": "OptionSetValue:…", "Value": …}, …]``)."""
    return [option(code) for code in codes]


def typed(type_name: str, value: Any) -> dict[str, Any]:
    """A typed wrapper, ``{"__type": "DateTime:#System", "__value": …}``: a primitive written with its type
    hint, as some senders do for dates and GUIDs (§7 "typed wrapper"). ``__type`` first."""
    return {"__type": type_name, "__value": value}


def _kv(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": value}


def _date(ms: int, offset: str | None = None) -> str:
    return f"/Date({ms}{offset or ''})/"


def _formatted_date(ms: int) -> str:
    # FormattedValues render dates in the user's zone; the demo user is on UTC (as in §11).
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S-00:00")


def _entity(
    table: str, row_id: str, attributes: list[dict[str, Any]], formatted: list[dict[str, Any]], *, typed: bool
) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "Attributes": attributes,
        "EntityState": None,
        "FormattedValues": formatted,
        "Id": row_id,
        "KeyAttributes": [],
        "LogicalName": table,
        "RelatedEntities": [],
        "RowVersion": None,
    }
    if typed:  # only where the slot is declared `object` (InputParameters.Target); images carry no tag
        entity = {"__type": f"Entity:{CONTRACTS}", **entity}
    return entity


def _set(pairs: list[dict[str, Any]], key: str, value: Any) -> None:
    """Replace the value of `key` in a key/value array in place, or append it."""
    for pair in pairs:
        if pair["key"] == key:
            pair["value"] = value
            return
    pairs.append(_kv(key, value))


def _reference_parameters(message_name: str, entity: str, log_id: str) -> list[dict[str, Any]] | None:
    """The InputParameters of a message that names the row by EntityReference (SDK request members), else None."""
    row = reference(entity, log_id)
    if message_name == "Delete":
        return [_kv("Target", row)]
    if message_name == "Assign":
        return [_kv("Target", row), _kv("Assignee", reference("systemuser", USER_ID))]
    if message_name == "SetState":
        return [_kv("EntityMoniker", row), _kv("State", option(1)), _kv("Status", option(2))]
    return None


def _organization_name(organization_id: str) -> str:
    # Online orgs often show "unq" + the first 29 hex digits of the org id (§4: the format varies).
    return "unq" + organization_id.replace("-", "")[:29]


# --- the context ---------------------------------------------------------------------------------


def campaign_log(
    *,
    activity: str | int | bool | list[dict[str, Any]] | dict[str, Any] | None = "Group Opt out",
    activity_label: str | None | EllipsisType = ...,
    recipient: tuple[str, str] | None = ("contact", CONTACTS[0]),
    lookups: dict[str, dict[str, Any] | None] | None = None,
    log_id: str = LOG_ID,
    operation_id: str = OPERATION_ID,
    correlation_id: str = CORRELATION_ID,
    organization_id: str = ORG_ID,
    message_name: str = "Create",
    entity: str = ENTITY,
    created_on_ms: int = 1741944413000,
    wrap_dates: bool = False,
    bounce_reason: str | None = None,
    name: str = "Spring newsletter",
    extra_attributes: dict[str, Any] | None = None,
    trimmed: bool = False,
    **top_level_overrides: Any,
) -> dict[str, Any]:
    """The full RemoteExecutionContext of an async post-operation Create (readable form, unescaped ``/``).

    activity        a label from ACTIVITY -> OptionSetValue + FormattedValues label;
                    an int -> OptionSetValue without a label; True/False -> a yes/no column (a plain JSON
                    boolean, labelled "Yes"/"No"); a list such as ``options(…)`` -> a multi-select choice
                    (OptionSetValueCollection: a bare array of OptionSetValues, labelled "A; B" when every
                    code is in ACTIVITY); any other str or a dict -> the value as-is;
                    None -> no activity-type column at all.
    activity_label  ``...`` = default (the label described above, else none);
                    None = no formatted value; a str = that formatted value.
    recipient       (table, id[, name]) for concep_recipientid, or None to leave the column out.
    lookups         extra/alternative lookup columns: {column: reference(...) or None (= null value)};
                    they come after concep_recipientid and replace it if they name it.
    extra_attributes  {column: value} added to the Target (replacing a column of the same name in place);
                    caller-supplied, so they also appear in the ParentContext Target.
    trimmed         drop InputParameters, ParentContext, PreEntityImages and PostEntityImages, as Dataverse
                    does over 192 KB (§6). The `MessageMaxSizeExceeded` flag is a message property, not body.
    message_name    "Create" (default) or e.g. "Update": an Update's Target holds only the caller's columns
                    plus the key and modified* columns, and OutputParameters is empty.
                    "Delete" and "Assign" carry the row as an EntityReference Target (Assign adds an
                    ``Assignee``), "SetState" as an ``EntityMoniker`` with ``State``/``Status`` options, as
                    their SDK requests declare them; the column arguments are then unused.
    wrap_dates      write the Target's ``createdon``/``modifiedon`` as typed wrappers
                    ``{"__type": "DateTime:#System", "__value": "/Date(ms)/"}`` instead of bare date strings.
    top_level_overrides  PascalCase top-level keys to set/replace after building (e.g. Stage=30, Mode=0,
                    OrganizationName="x", PrimaryEntityId="..."); a value of OMIT (``...``) deletes the key.
                    Keys stay sorted.
    """
    is_create = message_name == "Create"
    primary_key = f"{entity}id"
    modified_ms = created_on_ms if is_create else created_on_ms + 60000
    operation_ms = modified_ms + 2000  # the post job is queued ~2 s after the change

    # activity value and its formatted label
    activity_value: Any
    label: str | None
    if activity is None:
        activity_value, label = None, None
    elif isinstance(activity, bool):  # a yes/no column: a plain boolean, its label Yes/No (observed)
        activity_value, label = activity, "Yes" if activity else "No"
    elif isinstance(activity, int):
        activity_value, label = option(activity), None
    elif isinstance(activity, list):  # a multi-select choice: labels joined with "; " (observed)
        names = {code: known for known, code in ACTIVITY.items()}
        labels = [names.get(item.get("Value", 0), "") if isinstance(item, dict) else "" for item in activity]
        activity_value, label = activity, "; ".join(labels) if labels and all(labels) else None
    elif isinstance(activity, str) and activity in ACTIVITY:
        activity_value, label = option(ACTIVITY[activity]), activity
    else:
        activity_value, label = activity, None  # raw value used as-is
    if activity_label is not ...:
        label = activity_label

    # the columns the caller (Concep) sent: they appear in both the Target and the ParentContext Target
    caller: list[dict[str, Any]] = [_kv(PRIMARY_NAME, name)]
    if activity is not None:
        caller.append(_kv(ACTIVITY_COLUMN, activity_value))
    if recipient is not None:
        caller.append(_kv(RECIPIENT_COLUMN, reference(*recipient)))
    for column, value in (lookups or {}).items():
        _set(caller, column, value)
    if bounce_reason is not None:
        caller.append(_kv(BOUNCE_REASON_COLUMN, bounce_reason))
    for column, value in (extra_attributes or {}).items():
        _set(caller, column, value)

    def caller_columns() -> list[dict[str, Any]]:
        return copy.deepcopy(caller)  # the two Targets must not share objects

    def merged(first: list[dict[str, Any]], then: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # caller columns win over the platform's: a column named by the caller is never duplicated
        out = copy.deepcopy(first)
        for pair in then:
            if all(p["key"] != pair["key"] for p in out):
                out.append(pair)
        return out

    def date(ms: int) -> str | dict[str, Any]:
        return typed("DateTime:#System", _date(ms)) if wrap_dates else _date(ms)

    owner = ("systemuser", USER_ID)
    if is_create:
        # full row after platform defaults (§5): key first, then caller columns, then system columns
        attributes = [_kv(primary_key, log_id)]
        for pair in caller_columns():
            _set(attributes, pair["key"], pair["value"])
        attributes = merged(
            attributes,
            [
                _kv("createdon", date(created_on_ms)),
                _kv("createdby", reference(*owner)),
                _kv("modifiedon", date(modified_ms)),
                _kv("modifiedby", reference(*owner)),
                _kv("ownerid", reference(*owner)),
                _kv("owningbusinessunit", reference("businessunit", BUSINESS_UNIT_ID)),
                _kv("statecode", option(0)),
                _kv("statuscode", option(1)),
                _kv("createdonbehalfby", None),
                _kv("modifiedonbehalfby", None),
            ],
        )
        formatted = [
            _kv("createdon", _formatted_date(created_on_ms)),
            _kv("modifiedon", _formatted_date(modified_ms)),
            _kv("statecode", "Active"),
            _kv("statuscode", "Active"),
        ]
    else:
        # an Update's Target carries only the changed columns plus the key and modified* columns
        attributes = merged(
            caller_columns(),
            [
                _kv(primary_key, log_id),
                _kv("modifiedon", date(modified_ms)),
                _kv("modifiedby", reference(*owner)),
                _kv("modifiedonbehalfby", None),
            ],
        )
        formatted = [_kv("modifiedon", _formatted_date(modified_ms))]
    if label is not None:
        formatted.insert(0, _kv(ACTIVITY_COLUMN, label))

    target = _entity(entity, log_id, attributes, formatted, typed=True)

    request_id = str(uuid.uuid5(_REQUEST_NS, operation_id))
    owning_extension: dict[str, Any] = {
        "Id": STEP_ID,
        "KeyAttributes": [],
        "LogicalName": "sdkmessageprocessingstep",
        "Name": None,
        "RowVersion": None,
    }

    def context(
        *,
        stage: int,
        input_parameters: list[dict[str, Any]],
        output_parameters: list[dict[str, Any]],
        post_images: list[dict[str, Any]],
        shared: list[dict[str, Any]],
        parent: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "BusinessUnitId": BUSINESS_UNIT_ID,
            "CorrelationId": correlation_id,
            "Depth": 1,
            "InitiatingUserAgent": USER_AGENT,
            "InitiatingUserAzureActiveDirectoryObjectId": USER_AAD_ID,
            "InitiatingUserId": USER_ID,
            "InputParameters": input_parameters,
            "IsExecutingOffline": False,
            "IsInTransaction": False,
            "IsOfflinePlayback": False,
            "IsolationMode": 1,
            "MessageName": message_name,
            "Mode": 1,
            "OperationCreatedOn": _date(operation_ms, "+0000"),
            "OperationId": operation_id,
            "OrganizationId": organization_id,
            "OrganizationName": _organization_name(organization_id),
            "OutputParameters": output_parameters,
            "OwningExtension": dict(owning_extension),
            "ParentContext": parent,
            "PostEntityImages": post_images,
            "PreEntityImages": [],
            "PrimaryEntityId": log_id,
            "PrimaryEntityName": entity,
            "RequestId": request_id,
            "SecondaryEntityName": "none",
            "SharedVariables": shared,
            "Stage": stage,
            "UserAzureActiveDirectoryObjectId": USER_AAD_ID,
            "UserId": USER_ID,
        }

    if is_create:
        parent_target = _entity(entity, log_id, caller_columns(), [], typed=True)
        parent_shared = [_kv("IsAutoTransact", True), _kv("DefaultsAddedFlag", True)]
        shared = [_kv("IsAutoTransact", True), _kv("DefaultsAddedFlag", True)]
        output = [_kv("id", log_id)]
    else:
        parent_target = _entity(entity, log_id, merged(caller_columns(), [_kv(primary_key, log_id)]), [], typed=True)
        parent_shared = [
            _kv("ChangedEntityTypes", [{"__type": _KVP_STRING_STRING, "key": entity, "value": message_name}])
        ]
        shared = []
        output = []

    parent = context(
        stage=30,
        input_parameters=[_kv("Target", parent_target), _kv("SuppressDuplicateDetection", False)],
        output_parameters=[],
        post_images=[],
        shared=parent_shared,
        parent=None,
    )
    primary_name_image = _entity(entity, log_id, [_kv(PRIMARY_NAME, name), _kv(primary_key, log_id)], [], typed=False)
    ctx = context(
        stage=40,
        input_parameters=[_kv("Target", target)],
        output_parameters=output,
        post_images=[_kv("AsynchronousStepPrimaryName", primary_name_image)],
        shared=shared,
        parent=parent,
    )
    by_reference = _reference_parameters(message_name, entity, log_id)
    if by_reference is not None:  # the row travels as an EntityReference: no Entity, no output, no images
        for each in (ctx, parent):
            each["InputParameters"] = copy.deepcopy(by_reference)
            each["SharedVariables"] = []
        ctx["OutputParameters"], ctx["PostEntityImages"] = [], []

    if trimmed:
        for key in ("InputParameters", "ParentContext", "PreEntityImages", "PostEntityImages"):
            del ctx[key]
    for key, value in top_level_overrides.items():
        if value is OMIT:
            ctx.pop(key, None)
        else:
            ctx[key] = value
    return {key: ctx[key] for key in sorted(ctx)}


# --- wire form ---------------------------------------------------------------------------------------

# .NET writes control characters as \u00XX (e.g. "\u000a"), never the short forms \n \t ...
_SHORT_ESCAPES = {"b": "\\u0008", "t": "\\u0009", "n": "\\u000a", "f": "\\u000c", "r": "\\u000d"}
_ESCAPE_RE = re.compile(r"\\(.)")


def _dump(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):  # keeps the .NET scale, e.g. 1.0000000000
        if not value.is_finite():
            raise ValueError(f"not representable in JSON: {value!r}")
        return str(value)
    if isinstance(value, float):
        return json.dumps(value, allow_nan=False)
    if isinstance(value, str):
        return _ESCAPE_RE.sub(
            lambda m: _SHORT_ESCAPES.get(m.group(1), m.group(0)), json.dumps(value, ensure_ascii=False)
        )
    if isinstance(value, dict):
        return "{" + ",".join(_dump(str(k)) + ":" + _dump(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    raise TypeError(f"cannot serialise {type(value).__name__}")


def wire(context: dict[str, Any], *, escape_slashes: bool = True, bom: bool = False) -> bytes:
    """The body bytes as Dataverse sends them: one line, no spaces, UTF-8 (non-ASCII kept raw),
    member order preserved, every ``/`` escaped as ``\\/`` (a ``/`` can only occur inside JSON strings,
    so the plain replacement is safe), optionally prefixed with a UTF-8 BOM."""
    text = _dump(context)
    if escape_slashes:
        text = text.replace("/", "\\/")
    body = text.encode("utf-8")
    return b"\xef\xbb\xbf" + body if bom else body


# --- bodies in the formats the app must reject (§2) ----------------------------------------------

# Start of a WCF .NET Binary XML (application/msbin1) body, as Service Bus Explorer shows it:
# "@" (short element) + len 22 + "RemoteExecutionContext", 0x08 (xmlns record) + the contracts namespace,
# then binary records (xmlns:i, a BusinessUnitId element with a 16-byte guid) and raw noise 0x00..0xff.
MSBIN1_BODY: bytes = (
    b"@\x16RemoteExecutionContext\x08"
    + CONTRACTS.encode("ascii")
    + b"\x09\x01i\x29http://www.w3.org/2001/XMLSchema-instance"
    + b"@\x0eBusinessUnitId\xad"
    + uuid.UUID(BUSINESS_UNIT_ID).bytes_le
    + b"@\x0dCorrelationId\xad"
    + uuid.UUID(CORRELATION_ID).bytes_le
    + b"@\x05Depth\x83"
    + b"@\x0fInputParameters\x09\x01a\x2f"
    + CONTRACTS.encode("ascii")
    + b"\x09\x01b\x42http://schemas.datacontract.org/2004/07/System.Collections.Generic"
    + bytes(range(256))
    + b"\x01\x01\x01"
)

# Start of the same context in the Text XML format (application/xml, DataContractSerializer); short but
# well formed.
XML_BODY: bytes = (
    '<RemoteExecutionContext xmlns="http://schemas.microsoft.com/xrm/2011/Contracts" '
    'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
    f"<BusinessUnitId>{BUSINESS_UNIT_ID}</BusinessUnitId>"
    f"<CorrelationId>{CORRELATION_ID}</CorrelationId>"
    "<Depth>1</Depth>"
    f"<InitiatingUserId>{USER_ID}</InitiatingUserId>"
    '<InputParameters xmlns:a="http://schemas.datacontract.org/2004/07/System.Collections.Generic">'
    "<KeyValuePairOfstringanyType><a:key>Target</a:key>"
    '<a:value i:type="Entity"><Attributes>'
    "<KeyValuePairOfstringanyType><a:key>concep_name</a:key>"
    '<a:value i:type="b:string" xmlns:b="http://www.w3.org/2001/XMLSchema">Spring newsletter</a:value>'
    "</KeyValuePairOfstringanyType>"
    '</Attributes><EntityState i:nil="true"/><FormattedValues/>'
    f"<Id>{LOG_ID}</Id><KeyAttributes/><LogicalName>{ENTITY}</LogicalName>"
    '<RelatedEntities/><RowVersion i:nil="true"/></a:value>'
    "</KeyValuePairOfstringanyType></InputParameters>"
    "<IsExecutingOffline>false</IsExecutingOffline><IsInTransaction>false</IsInTransaction>"
    "<IsOfflinePlayback>false</IsOfflinePlayback><IsolationMode>1</IsolationMode>"
    "<MessageName>Create</MessageName><Mode>1</Mode>"
    f"<OperationId>{OPERATION_ID}</OperationId><OrganizationId>{ORG_ID}</OrganizationId>"
    f"<PrimaryEntityId>{LOG_ID}</PrimaryEntityId><PrimaryEntityName>{ENTITY}</PrimaryEntityName>"
    "<Stage>40</Stage>"
    f"<UserId>{USER_ID}</UserId>"
    "</RemoteExecutionContext>"
).encode()
