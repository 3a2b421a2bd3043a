"""The test-message builder produces the documented Dataverse wire shape
(docs/dataverse-messages.md §3-§7, §11), and the committed samples are up to date."""

import json
import types
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from optout_dev import messages as m

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

TOP_LEVEL_KEYS = {  # §4
    "BusinessUnitId",
    "CorrelationId",
    "Depth",
    "InitiatingUserAgent",
    "InitiatingUserAzureActiveDirectoryObjectId",
    "InitiatingUserId",
    "InputParameters",
    "IsExecutingOffline",
    "IsInTransaction",
    "IsOfflinePlayback",
    "IsolationMode",
    "MessageName",
    "Mode",
    "OperationCreatedOn",
    "OperationId",
    "OrganizationId",
    "OrganizationName",
    "OutputParameters",
    "OwningExtension",
    "ParentContext",
    "PostEntityImages",
    "PreEntityImages",
    "PrimaryEntityId",
    "PrimaryEntityName",
    "RequestId",
    "SecondaryEntityName",
    "SharedVariables",
    "Stage",
    "UserAzureActiveDirectoryObjectId",
    "UserId",
}


def pairs(items):
    return {p["key"]: p["value"] for p in items}


def target(ctx):
    return pairs(ctx["InputParameters"])["Target"]


def test_wire_is_one_line_with_escaped_slashes():
    body = m.wire(m.campaign_log())
    assert body.startswith(b'{"BusinessUnitId":"')
    assert b"\n" not in body and b'": ' not in body and b'", "' not in body
    assert b"\\/Date(" in body
    assert b'"Entity:http:\\/\\/schemas.microsoft.com\\/xrm\\/2011\\/Contracts"' in body
    assert body.count(b"/") == body.count(b"\\/")  # no unescaped slash anywhere
    assert b"/Date(1741944413000)/" in m.wire(m.campaign_log(), escape_slashes=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"name": "Frühjahrs-Newsletter – Ελληνικά"},
        {"trimmed": True},
        {"message_name": "Update"},
        {"bounce_reason": "550 5.1.1 x\n\ty"},
    ],
)
def test_wire_round_trips(kwargs):
    ctx = m.campaign_log(**kwargs)
    assert json.loads(m.wire(ctx)) == ctx
    assert json.loads(m.wire(ctx, escape_slashes=False)) == ctx
    assert json.loads(m.wire(ctx, bom=True).decode("utf-8-sig")) == ctx


def test_non_ascii_is_raw_utf8_and_control_chars_use_u_escapes():
    name = "Frühjahrs-Newsletter – Ελληνικά"
    body = m.wire(m.campaign_log(name=name, bounce_reason="line1\nline2"))
    assert name.encode("utf-8") in body
    assert b"line1\\u000aline2" in body and b"\\n" not in body


def test_top_level_keys_sorted_and_complete():
    ctx = m.campaign_log()
    assert list(ctx) == sorted(ctx)
    assert set(ctx) == TOP_LEVEL_KEYS
    parent = ctx["ParentContext"]
    assert list(parent) == sorted(parent)
    ctx = m.campaign_log(Stage=30, Zeta="new", InitiatingUserAgent=m.OMIT)
    assert list(ctx) == sorted(ctx) and ctx["Stage"] == 30 and ctx["Zeta"] == "new"
    assert "InitiatingUserAgent" not in ctx


def test_create_context_values():
    ctx = m.campaign_log()
    assert (ctx["MessageName"], ctx["Stage"], ctx["Mode"], ctx["IsInTransaction"]) == ("Create", 40, 1, False)
    assert ctx["OrganizationId"] == m.ORG_ID
    assert ctx["PrimaryEntityName"] == "concep_emailcampaignlog"
    assert ctx["SecondaryEntityName"] == "none"
    assert ctx["PreEntityImages"] == []
    assert ctx["OperationCreatedOn"] == "/Date(1741944415000+0000)/"
    assert ctx["OwningExtension"]["LogicalName"] == "sdkmessageprocessingstep"


def test_type_tag_first_where_documented():
    ctx = m.campaign_log(activity="Spam Report", bounce_reason="x")
    t = target(ctx)
    assert next(iter(t)) == "__type" and t["__type"] == f"Entity:{m.CONTRACTS}"
    attrs = pairs(t["Attributes"])
    for column in ("concep_recipientid", "ownerid", "createdby", "owningbusinessunit"):
        assert list(attrs[column])[0] == "__type"
        assert attrs[column]["__type"] == f"EntityReference:{m.CONTRACTS}"
    for column in ("concep_activitytype", "statecode", "statuscode"):
        assert list(attrs[column]) == ["__type", "Value"]
        assert attrs[column]["__type"] == f"OptionSetValue:{m.CONTRACTS}"
    assert list(m.reference("lead", m.LEADS[0])) == [
        "__type",
        "Id",
        "KeyAttributes",
        "LogicalName",
        "Name",
        "RowVersion",
    ]
    assert list(m.option(1)) == ["__type", "Value"]
    # untyped: the image entity, OwningExtension, primitives
    image = pairs(ctx["PostEntityImages"])["AsynchronousStepPrimaryName"]
    assert "__type" not in image and "__type" not in ctx["OwningExtension"]
    assert pairs(image["Attributes"]) == {"concep_name": "Spring newsletter", "concep_emailcampaignlogid": m.LOG_ID}
    assert attrs["createdon"] == "/Date(1741944413000)/"
    assert attrs["concep_bouncereason"] == "x"


def test_primary_entity_id_matches_target_and_output():
    ctx = m.campaign_log(log_id="11111111-2222-4333-8444-555555555555")
    assert (
        ctx["PrimaryEntityId"]
        == target(ctx)["Id"]
        == pairs(ctx["OutputParameters"])["id"]
        == "11111111-2222-4333-8444-555555555555"
    )
    assert pairs(target(ctx)["Attributes"])["concep_emailcampaignlogid"] == ctx["PrimaryEntityId"]


def test_parent_context_is_stage_30_with_caller_columns_only():
    ctx = m.campaign_log(activity="Hard Bounce", bounce_reason="550")
    parent = ctx["ParentContext"]
    assert parent["Stage"] == 30 and parent["ParentContext"] is None and parent["OutputParameters"] == []
    for key in ("CorrelationId", "OperationId", "OwningExtension", "OrganizationId", "PrimaryEntityId"):
        assert parent[key] == ctx[key]
    parent_params = pairs(parent["InputParameters"])
    assert parent_params["SuppressDuplicateDetection"] is False
    assert [p["key"] for p in parent_params["Target"]["Attributes"]] == [
        "concep_name",
        "concep_activitytype",
        "concep_recipientid",
        "concep_bouncereason",
    ]
    assert parent_params["Target"]["FormattedValues"] == []


def test_activity_forms():
    fv = lambda ctx: pairs(target(ctx)["FormattedValues"])  # noqa: E731
    at = lambda ctx: pairs(target(ctx)["Attributes"])  # noqa: E731
    ctx = m.campaign_log(activity="Client Opt Out")
    assert at(ctx)["concep_activitytype"]["Value"] == 100000005 == m.ACTIVITY["Client Opt Out"]
    assert fv(ctx)["concep_activitytype"] == "Client Opt Out"
    ctx = m.campaign_log(activity=100000004)
    assert at(ctx)["concep_activitytype"]["Value"] == 100000004 and "concep_activitytype" not in fv(ctx)
    ctx = m.campaign_log(activity="Spam Report", activity_label=None)
    assert "concep_activitytype" not in fv(ctx)
    ctx = m.campaign_log(activity="Spam Report", activity_label="Signalement de spam")
    assert fv(ctx)["concep_activitytype"] == "Signalement de spam"
    assert at(m.campaign_log(activity="spam-report"))["concep_activitytype"] == "spam-report"  # raw
    assert "concep_activitytype" not in at(m.campaign_log(activity=None))
    assert len(m.ACTIVITY) == 9 and m.ACTIVITY["Sent"] == 100000000 and m.ACTIVITY["Soft Bounce"] == 100000008


def test_separate_lookups():
    ctx = m.campaign_log(
        recipient=None, lookups={"concep_contactid": m.reference("contact", m.CONTACTS[0]), "concep_leadid": None}
    )
    attrs = pairs(target(ctx)["Attributes"])
    assert "concep_recipientid" not in attrs
    assert attrs["concep_contactid"]["Id"] == m.CONTACTS[0] and attrs["concep_leadid"] is None
    keys = [p["key"] for p in target(ctx)["Attributes"]]
    assert len(keys) == len(set(keys))


def test_trimmed_drops_payload_keys():
    ctx = m.campaign_log(trimmed=True)
    for key in ("InputParameters", "ParentContext", "PreEntityImages", "PostEntityImages"):
        assert key not in ctx
    assert ctx["PrimaryEntityId"] == pairs(ctx["OutputParameters"])["id"]
    assert set(ctx) == TOP_LEVEL_KEYS - {"InputParameters", "ParentContext", "PreEntityImages", "PostEntityImages"}


def test_bom_variant():
    body = m.wire(m.campaign_log(), bom=True)
    assert body[:3] == b"\xef\xbb\xbf" and body[3:4] == b"{"
    assert body[3:] == m.wire(m.campaign_log())


def test_update_message():
    ctx = m.campaign_log(message_name="Update")
    assert ctx["MessageName"] == ctx["ParentContext"]["MessageName"] == "Update"
    assert ctx["OutputParameters"] == []
    assert "createdon" not in pairs(target(ctx)["Attributes"])


def test_non_json_bodies():
    assert m.MSBIN1_BODY.startswith(b"@\x16RemoteExecutionContext\x08http://schemas.microsoft.com/xrm/2011/Contracts")
    assert set(range(256)) <= set(m.MSBIN1_BODY)
    with pytest.raises(UnicodeDecodeError):
        m.MSBIN1_BODY.decode("utf-8")
    root = ET.fromstring(m.XML_BODY)
    assert root.tag == "{http://schemas.microsoft.com/xrm/2011/Contracts}RemoteExecutionContext"
    assert m.XML_BODY.startswith(
        b'<RemoteExecutionContext xmlns="http://schemas.microsoft.com/xrm/2011/Contracts" '
        b'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
    )


def _generator():
    # exec the script's source directly, so no samples/__pycache__ is written
    path = SAMPLES / "generate.py"
    module = types.ModuleType("samples_generate")
    module.__file__ = str(path)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


def test_committed_samples_are_up_to_date():
    for name, content in _generator().files().items():
        assert (SAMPLES / name).read_bytes() == content, f"samples/{name} is stale: run python samples/generate.py"
    expected = json.loads((SAMPLES / "expected.json").read_text(encoding="utf-8"))
    bodies = {p.name for p in SAMPLES.iterdir() if p.suffix in (".json", ".bin") and p.name != "expected.json"}
    assert bodies == set(expected)


def test_samples_have_distinct_ids_and_wire_form():
    log_ids, operation_ids = set(), set()
    for path in sorted(SAMPLES.glob("[0-9]*.json")):
        raw = path.read_bytes()
        assert b"\n" not in raw and raw.count(b"/") == raw.count(b"\\/")
        ctx = json.loads(raw.decode("utf-8-sig"))
        assert list(ctx) == sorted(ctx)
        log_ids.add(str(uuid.UUID(ctx["PrimaryEntityId"])))
        operation_ids.add(str(uuid.UUID(ctx["OperationId"])))
    count = len(list(SAMPLES.glob("[0-9]*.json")))
    assert len(log_ids) == len(operation_ids) == count


@pytest.mark.parametrize(
    "message_name, parameters",
    [
        ("Delete", {"Target"}),
        ("Assign", {"Target", "Assignee"}),
        ("SetState", {"EntityMoniker", "State", "Status"}),
    ],
)
def test_messages_that_name_the_row_by_entity_reference(message_name, parameters):
    ctx = m.campaign_log(message_name=message_name)
    params = pairs(ctx["InputParameters"])
    assert set(params) == parameters and ctx["MessageName"] == message_name
    row = params.get("Target") or params["EntityMoniker"]
    assert list(row) == ["__type", "Id", "KeyAttributes", "LogicalName", "Name", "RowVersion"]
    assert row["__type"] == f"EntityReference:{m.CONTRACTS}" and row["Id"] == ctx["PrimaryEntityId"]
    assert row["LogicalName"] == ctx["PrimaryEntityName"]
    assert ctx["OutputParameters"] == [] and ctx["PostEntityImages"] == []
    assert pairs(ctx["ParentContext"]["InputParameters"]) == params
    body = m.wire(ctx)
    assert b'"__type":"EntityReference:http:\\/\\/schemas.microsoft.com\\/xrm\\/2011\\/Contracts"' in body
    assert json.loads(body) == ctx and body.count(b"/") == body.count(b"\\/")


def test_wrapped_dates_are_typed_values_with_type_first():
    ctx = m.campaign_log(wrap_dates=True)
    attrs = pairs(target(ctx)["Attributes"])
    assert attrs["createdon"] == {"__type": "DateTime:#System", "__value": "/Date(1741944413000)/"}
    assert list(attrs["createdon"]) == ["__type", "__value"] and list(attrs["modifiedon"]) == ["__type", "__value"]
    body = m.wire(ctx)
    assert b'{"__type":"DateTime:#System","__value":"\\/Date(1741944413000)\\/"}' in body
    assert m.typed("Guid:#System", m.LOG_ID) == {"__type": "Guid:#System", "__value": m.LOG_ID}
    update = pairs(target(m.campaign_log(message_name="Update", wrap_dates=True))["Attributes"])
    assert update["modifiedon"]["__type"] == "DateTime:#System"


def test_yes_no_and_multi_select_activity_columns():
    at = lambda ctx: pairs(target(ctx)["Attributes"])["concep_activitytype"]  # noqa: E731
    fv = lambda ctx: pairs(target(ctx)["FormattedValues"]).get("concep_activitytype")  # noqa: E731
    yes = m.campaign_log(activity=True)
    assert at(yes) is True and fv(yes) == "Yes"
    assert fv(m.campaign_log(activity=False)) == "No"
    chosen = m.options(m.ACTIVITY["Spam Report"], m.ACTIVITY["Group Opt out"])
    assert chosen == [m.option(100000003), m.option(100000004)]
    many = m.campaign_log(activity=chosen)
    assert at(many) == chosen and fv(many) == "Spam Report; Group Opt out"
    assert fv(m.campaign_log(activity=m.options(7))) is None
    body = m.wire(many)
    assert b'"value":[{"__type":"OptionSetValue:http:\\/\\/schemas.microsoft.com\\/xrm\\/2011\\/Contracts"' in body
