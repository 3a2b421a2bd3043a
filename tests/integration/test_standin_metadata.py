"""The metadata and privilege reads the stand-in serves for ``discover`` and ``check --connect``, by example over
real HTTP (docs/dataverse-admin.md §1, §2): tables with display names and privileges, attributes with their
types, choice options through the casts, lookup targets, RetrieveUserPrivileges, and 403 without a privilege."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from optout_dev.standin import (
    OTHER_EVENT_OPTIONS,
    SAMPLES_ACTIVITY_OPTIONS,
    Column,
    DataverseStandIn,
    Option,
    Table,
    privilege_id,
)

API = "/api/data/v9.2/"
TIMEOUT = 5
CAST = "Microsoft.Dynamics.CRM."
BOTH_OPTION_SETS = "OptionSet($select=Options),GlobalOptionSet($select=Options)"

pytestmark = pytest.mark.usefixtures("no_leaked_standin_threads")


@pytest.fixture
def standin() -> Iterator[DataverseStandIn]:
    with DataverseStandIn(presets=("samples", "other", "registration")) as server:
        yield server


def metadata(http: requests.Session, server: DataverseStandIn, resource: str, **params: str) -> requests.Response:
    return http.get(f"{server.url}{API}{resource}", params=params, timeout=TIMEOUT)


def table(name: str) -> str:
    return f"EntityDefinitions(LogicalName='{name}')"


def labels_of(options: list[dict[str, object]]) -> dict[int, str]:
    return {o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in options}  # type: ignore[index]


# ----- tables ------------------------------------------------------------------------------------------------------


def test_custom_tables_are_listed_with_display_names_and_label_languages_accepted(standin, http):
    response = metadata(
        http,
        standin,
        "EntityDefinitions",
        **{
            "$select": "LogicalName,EntitySetName,DisplayName",
            "$filter": "IsCustomEntity eq true",
            "LabelLanguages": "1033",
        },
    )
    assert response.status_code == 200
    items = {item["LogicalName"]: item for item in response.json()["value"]}
    assert set(items) == {"concep_emailcampaignlog", "cnc_maillog", "cnc_survey"}
    display = items["concep_emailcampaignlog"]["DisplayName"]
    assert display["UserLocalizedLabel"]["Label"] == "Email Campaign Log"
    assert display["LocalizedLabels"][0]["LanguageCode"] == 1033
    assert all("MetadataId" in item for item in items.values())  # always returned


def test_a_table_with_its_attributes_common_properties_only(standin, http):
    response = metadata(
        http,
        standin,
        table("concep_emailcampaignlog"),
        **{
            "$select": "LogicalName,EntitySetName,PrimaryIdAttribute,IsCustomEntity",
            "$expand": "Attributes($select=LogicalName,AttributeType,AttributeTypeName,IsValidForUpdate,"
            "IsValidForRead)",
        },
    )
    body = response.json()
    assert body["@odata.context"].endswith("/$entity")
    assert (body["EntitySetName"], body["PrimaryIdAttribute"], body["IsCustomEntity"]) == (
        "concep_emailcampaignlogs",
        "concep_emailcampaignlogid",
        True,
    )
    attributes = {item["LogicalName"]: item for item in body["Attributes"]}
    activity = attributes["concep_activitytype"]
    assert activity["@odata.type"] == f"#{CAST}PicklistAttributeMetadata"
    assert (activity["AttributeType"], activity["AttributeTypeName"]) == ("Picklist", {"Value": "PicklistType"})
    assert "OptionSet" not in activity  # an expanded Attributes collection carries no options (§1.1)
    recipient = attributes["concep_recipientid"]
    assert (recipient["AttributeType"], recipient["@odata.type"]) == ("Lookup", f"#{CAST}LookupAttributeMetadata")
    assert attributes["createdon"]["IsValidForUpdate"] is False
    assert attributes["ownerid"]["AttributeTypeName"] == {"Value": "OwnerType"}


def test_a_missing_table_answers_404(standin, http):
    response = metadata(http, standin, table("new_nosuchtable"))
    assert response.status_code == 404 and "MetadataCache" in response.json()["error"]["message"]


def test_privileges_are_named_from_the_schema_name_with_stable_ids(standin, http):
    contact = metadata(http, standin, table("contact"), **{"$select": "Privileges"}).json()["Privileges"]
    assert {item["PrivilegeType"]: item["Name"] for item in contact} == {
        kind: f"prv{kind}Contact"
        for kind in ("Create", "Read", "Write", "Delete", "Append", "AppendTo", "Assign", "Share")
    }
    log = metadata(http, standin, table("concep_emailcampaignlog"), **{"$select": "Privileges"}).json()["Privileges"]
    assert "prvWriteconcep_EmailCampaignLog" in {item["Name"] for item in log}
    endpoint = metadata(http, standin, table("serviceendpoint"), **{"$select": "Privileges"}).json()["Privileges"]
    assert {item["PrivilegeType"] for item in endpoint} == {"Create", "Read", "Write", "Delete", "Append", "AppendTo"}
    read = next(item for item in contact if item["Name"] == "prvReadContact")
    assert read["PrivilegeId"] == privilege_id("prvReadContact")


# ----- choices -----------------------------------------------------------------------------------------------------


def test_picklists_through_the_collection_cast_with_both_option_sets_expanded(standin, http):
    response = metadata(
        http,
        standin,
        f"{table('concep_emailcampaignlog')}/Attributes/{CAST}PicklistAttributeMetadata",
        **{"$select": "LogicalName", "$expand": BOTH_OPTION_SETS},
    )
    [activity] = response.json()["value"]
    assert activity["LogicalName"] == "concep_activitytype" and activity["GlobalOptionSet"] is None
    assert activity["OptionSet"]["IsGlobal"] is False and activity["OptionSet"]["OptionSetType"] == "Picklist"
    assert labels_of(activity["OptionSet"]["Options"]) == SAMPLES_ACTIVITY_OPTIONS


def test_a_global_choice_comes_in_global_option_set(standin, http):
    response = metadata(
        http,
        standin,
        f"{table('cnc_maillog')}/Attributes(LogicalName='cnc_eventkind')/{CAST}PicklistAttributeMetadata",
        **{"$select": "LogicalName", "$expand": BOTH_OPTION_SETS},
    )
    body = response.json()
    assert body["OptionSet"] is None and body["GlobalOptionSet"]["IsGlobal"] is True
    assert labels_of(body["GlobalOptionSet"]["Options"]) == OTHER_EVENT_OPTIONS


def test_status_state_and_boolean_casts_carry_their_own_option_shapes(standin, http):
    base = f"{table('workflow')}/Attributes(LogicalName='{{}}')/{CAST}{{}}"
    status = metadata(http, standin, base.format("statuscode", "StatusAttributeMetadata"), **{"$expand": "OptionSet"})
    options = status.json()["OptionSet"]["Options"]
    assert {o["Value"]: o["State"] for o in options} == {1: 0, 2: 1, 3: 2}
    state = metadata(http, standin, base.format("statecode", "StateAttributeMetadata"), **{"$expand": "OptionSet"})
    assert {o["Value"]: o["DefaultStatus"] for o in state.json()["OptionSet"]["Options"]} == {0: 1, 1: 2, 2: 3}
    boolean = metadata(
        http,
        standin,
        f"{table('contact')}/Attributes(LogicalName='donotbulkemail')/{CAST}BooleanAttributeMetadata",
        **{"$expand": BOTH_OPTION_SETS},
    ).json()["OptionSet"]
    assert (boolean["OptionSetType"], boolean["TrueOption"]["Value"], boolean["FalseOption"]["Value"]) == (
        "Boolean",
        1,
        0,
    )
    assert boolean["TrueOption"]["Label"]["UserLocalizedLabel"]["Label"] == "Do Not Allow"


def test_a_multi_select_choice_reports_virtual_and_takes_comma_separated_values(http):
    channels = Column("new_channels", "MultiSelectPicklist", (Option(1, "Email"), Option(2, "Phone")))
    with DataverseStandIn(tables={"new_pref": Table("new_pref", "new_prefs", (channels,))}) as server:
        attribute = metadata(
            http,
            server,
            f"{table('new_pref')}/Attributes/{CAST}MultiSelectPicklistAttributeMetadata",
            **{"$select": "LogicalName,AttributeType,AttributeTypeName", "$expand": "OptionSet"},
        ).json()["value"][0]
        assert (attribute["AttributeType"], attribute["AttributeTypeName"]) == (
            "Virtual",
            {"Value": "MultiSelectPicklistType"},
        )
        assert labels_of(attribute["OptionSet"]["Options"]) == {1: "Email", 2: "Phone"}
        made = http.post(f"{server.url}{API}new_prefs", json={"new_channels": "1,2"}, timeout=TIMEOUT)
        assert made.status_code == 204
        refused = http.post(f"{server.url}{API}new_prefs", json={"new_channels": "1,9"}, timeout=TIMEOUT)
        assert refused.status_code == 400


@pytest.mark.parametrize(
    ("resource", "status"),
    [
        (f"Attributes(LogicalName='concep_name')/{CAST}PicklistAttributeMetadata", 404),  # a text column
        (f"Attributes(LogicalName='concep_nosuch')/{CAST}PicklistAttributeMetadata", 404),
        (f"Attributes/{CAST}NoSuchAttributeMetadata", 404),
        ("Attributes", 200),
    ],
)
def test_casts_that_do_not_fit_the_column_answer_404(standin, http, resource, status):
    assert metadata(http, standin, f"{table('concep_emailcampaignlog')}/{resource}").status_code == status


def test_option_sets_cannot_be_expanded_on_a_lookup_cast(standin, http):
    response = metadata(
        http, standin, f"{table('concep_emailcampaignlog')}/Attributes/{CAST}LookupAttributeMetadata",
        **{"$expand": "OptionSet"},
    )  # fmt: skip
    assert response.status_code == 400


# ----- lookups -----------------------------------------------------------------------------------------------------


def test_lookup_targets_include_customer_and_owner_columns(standin, http):
    response = metadata(
        http,
        standin,
        f"{table('cnc_maillog')}/Attributes/{CAST}LookupAttributeMetadata",
        **{"$select": "LogicalName,Targets"},
    )
    targets = {item["LogicalName"]: item["Targets"] for item in response.json()["value"]}
    assert targets == {
        "cnc_customerid": ["account", "contact"],
        "cnc_leadid": ["lead"],
        "ownerid": ["systemuser", "team"],
    }
    single = metadata(
        http,
        standin,
        f"{table('concep_emailcampaignlog')}/Attributes(LogicalName='concep_recipientid')/{CAST}LookupAttributeMetadata",
        **{"$select": "LogicalName,Targets"},
    )
    assert single.json()["Targets"] == ["contact", "lead", "account"]


# ----- privileges of the caller --------------------------------------------------------------------------------------


def test_retrieve_user_privileges_lists_what_the_user_holds(http):
    held = {"prvReadContact", "prvWriteContact", "prvReadconcep_EmailCampaignLog"}
    with DataverseStandIn(presets=("samples",), privileges=held) as server:
        user = http.get(f"{server.url}{API}WhoAmI", timeout=TIMEOUT).json()["UserId"]
        response = http.get(f"{server.url}{API}systemusers({user})/{CAST}RetrieveUserPrivileges", timeout=TIMEOUT)
        body = response.json()
        assert body["@odata.context"].endswith("#Microsoft.Dynamics.CRM.RetrieveUserPrivilegesResponse")
        assert {item["PrivilegeName"] for item in body["RolePrivileges"]} == held
        first = body["RolePrivileges"][0]
        assert set(first) == {
            "BusinessUnitId",
            "Depth",
            "PrivilegeId",
            "PrivilegeName",
            "RecordFilterId",
            "RecordFilterUniqueName",
        }
        assert first["PrivilegeId"] == privilege_id(first["PrivilegeName"]) and first["Depth"] == "Global"
        other = http.get(
            f"{server.url}{API}systemusers(00000000-0000-4000-8000-000000000001)/{CAST}RetrieveUserPrivileges",
            timeout=TIMEOUT,
        )
        assert other.status_code == 404


def test_by_default_the_user_holds_every_privilege(standin, http):
    user = standin.user_id
    names = {
        item["PrivilegeName"]
        for item in http.get(
            f"{standin.url}{API}systemusers({user})/{CAST}RetrieveUserPrivileges", timeout=TIMEOUT
        ).json()["RolePrivileges"]
    }
    assert {"prvWriteContact", "prvCreateServiceEndpoint", "prvWriteWorkflow"} <= names


def test_a_write_without_the_privilege_answers_403_naming_it(standin, http):
    standin.set_privileges(standin.privileges - {"prvCreateServiceEndpoint"})
    refused = http.post(f"{standin.url}{API}serviceendpoints", json={"name": "x"}, timeout=TIMEOUT)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "0x80040220" and "is missing prvCreateServiceEndpoint privilege" in error["message"]
    assert standin.rows("serviceendpoint") == {}
    assert http.get(f"{standin.url}{API}serviceendpoints", timeout=TIMEOUT).status_code == 200  # Read is held
