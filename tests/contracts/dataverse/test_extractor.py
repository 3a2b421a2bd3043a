"""tools/dataverse_facts.py reads a table reference page in either layout Microsoft publishes: the newer one
(backquoted values, validity flags shown only when false) and the older one (plain values)."""

import json

from tools.dataverse_facts import dumps, parse_page, refreshed

NEWER = """
## Writable columns/attributes

### <a name="BKMK_Kind"></a> Kind

|Property|Value|
|---|---|
|DisplayName|**Kind**|
|IsValidForRead|True|
|LogicalName|`kind`|
|RequiredLevel|SystemRequired|
|Type|Picklist|

#### Kind Choices/Options

|Value|Label|
|---|---|
|5|**Five**|
|10|**Ten**|

### <a name="BKMK_Secret"></a> Secret

|Property|Value|
|---|---|
|IsValidForRead|False|
|LogicalName|`secret`|
|RequiredLevel|None|
|Type|String|

### <a name="BKMK_ParentId"></a> ParentId

|Property|Value|
|---|---|
|IsValidForRead|True|
|LogicalName|`parentid`|
|RequiredLevel|None|
|Type|Lookup|
|Targets|thing, other|

## Read-only columns/attributes

### <a name="BKMK_IsSecretSet"></a> IsSecretSet

|Property|Value|
|---|---|
|IsValidForRead|True|
|LogicalName|`issecretset`|
|RequiredLevel|None|
|Type|Boolean|
|DefaultValue|False|

## Many-to-One relationships

### <a name="BKMK_thing_parent"></a> thing_parent

|Property|Value|
|---|---|
|ReferencedEntity|`thing`|
|ReferencingAttribute|`parentid`|
|ReferencingEntityNavigationPropertyName|`parentid_thing`|
"""

OLDER = """
### <a name="BKMK_WidgetId"></a> WidgetId

|Property|Value|
|--------|-----|
|IsValidForRead|True|
|IsValidForUpdate|False|
|LogicalName|widgetid|
|RequiredLevel|SystemRequired|
|Type|Uniqueidentifier|
"""


def test_the_newer_layout_gives_types_validity_options_targets_and_navigation() -> None:
    columns, navigation = parse_page(NEWER)
    assert columns["kind"] == {
        "name": "kind",
        "type": "Picklist",
        "IsValidForRead": True,
        "IsValidForCreate": True,
        "IsValidForUpdate": True,
        "RequiredLevel": "SystemRequired",
        "options": [5, 10],
    }
    assert columns["secret"]["IsValidForRead"] is False and columns["secret"]["IsValidForUpdate"] is True
    assert columns["parentid"]["targets"] == ["other", "thing"]
    assert (columns["issecretset"]["IsValidForCreate"], columns["issecretset"]["IsValidForUpdate"]) == (False, False)
    assert columns["issecretset"]["options"] == [0, 1]
    assert navigation == {"parentid": {"parentid_thing": "thing"}}


def test_the_older_layout_states_the_flags_that_are_false() -> None:
    columns, _ = parse_page(OLDER)
    assert columns["widgetid"]["IsValidForUpdate"] is False and columns["widgetid"]["IsValidForCreate"] is True


def test_a_fact_keeps_its_columns_and_takes_the_pages_values_and_commit() -> None:
    fact = {
        "table": "widget",
        "entity_set": "widgets",
        "source": {"repo": "r", "path": "p", "commit": "old"},
        "columns": [{"name": "parentid"}, {"name": "secret"}],
    }
    new = refreshed(fact, NEWER, "new")
    assert [c["name"] for c in new["columns"]] == ["parentid", "secret"]
    assert new["columns"][0]["navigation"] == {"parentid_thing": "thing"}
    assert new["source"]["commit"] == "new"
    assert json.loads(dumps(new)) == new
