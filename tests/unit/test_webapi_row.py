"""A Web API row read as the context a trimmed message would have carried (optout_core/domain/webapi_row.py)."""

from optout_core.domain.execution_context import TrimmedContext
from optout_core.domain.values import as_reference
from optout_core.domain.webapi_row import context_from_row

CONTACT = "1b6f2a4e-8c1d-4e2f-9a3b-5c6d7e8f9a0b"
LOG = "3c7e1d2f-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
BASE = TrimmedContext("Create", "concep_emailcampaignlog", LOG, None, None, None)
FORMATTED = "@OData.Community.Display.V1.FormattedValue"


def test_lookups_choices_and_multi_select_choices_come_back_as_a_context_carries_them():
    row = {
        "_concep_contactid_value": CONTACT,
        f"_concep_contactid_value{FORMATTED}": "Jane",
        "_concep_contactid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact",
        "concep_activitytype": 100000003,
        f"concep_activitytype{FORMATTED}": "Spam Report",
        "concep_channels": "100000001,100000002",
        f"concep_channels{FORMATTED}": "Email; SMS",
        "concep_note": "100000001",  # text: no formatted value, stays text
        "@odata.etag": 'W/"1"',
    }
    context = context_from_row(BASE, row)
    reference = as_reference(context.target["concep_contactid"])
    assert reference is not None and (reference.table, reference.id, reference.name) == ("contact", CONTACT, "Jane")
    assert context.target["concep_activitytype"] == 100000003
    assert context.formatted["concep_activitytype"] == "Spam Report"
    assert context.target["concep_channels"] == [100000001, 100000002]
    assert context.target["concep_note"] == "100000001"
    assert "@odata.etag" not in context.target and context.primary_id == LOG


def test_an_empty_lookup_is_none():
    context = context_from_row(BASE, {"_concep_leadid_value": None})
    assert context.target == {"concep_leadid": None}
