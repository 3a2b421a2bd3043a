"""Every resource in infra/ against Azure's published resource types (Azure/bicep-types-az).

tests/contracts/facts/azure/bicep-types.json holds, per resource type and API version, the part of the published
type the templates use, with the file it came from; `python -m tools.bicep_type_facts <bicep-types-az copy>
--write` regenerates it. A path the published type lacks is left out of the facts, so it fails here.
"""

import json
from functools import cache
from pathlib import Path
from typing import Any

from tools.bicep_type_facts import INFRA, is_expression, key, resources, symbols

FACTS = json.loads((Path(__file__).resolve().parents[1] / "facts" / "azure" / "bicep-types.json").read_text())
KEYWORDS = {"parent", "scope", "dependsOn"}  # Bicep language, not properties of the type
KINDS = {bool: "bool", int: "int", str: "string", list: "array", dict: "object"}


def violations(fact: dict[str, Any], value: Any, path: str, declared: frozenset[str] = frozenset()) -> list[str]:
    """What in ``value`` (a pycep body or literal) the published type ``fact`` does not allow."""
    if isinstance(value, dict) and "loop_type" in value:  # `[for ...: item]`: an array of that item
        value = [value["config"]]
    if is_expression(value) or fact.get("kind") in (None, "any"):
        return []  # an expression's type is Bicep's to check; `any` takes everything
    found = KINDS.get(type(value))
    if found and fact["kind"] != found:
        return [f"{path}: a {found}, the type wants {fact['kind']}"]
    if isinstance(value, str) and value in declared:
        return []  # a reference to a parameter, variable or resource: Bicep checks its type
    if isinstance(value, str) and "values" in fact and "${" not in value and value not in fact["values"]:
        return [f"{path}: {value!r} is not one of {fact['values']}"]
    if isinstance(value, list):
        return [
            v for i, item in enumerate(value) for v in violations(fact.get("items", {}), item, f"{path}[{i}]", declared)
        ]
    if isinstance(value, dict):
        problems = []
        for raw, inner in value.items():
            name = key(raw)
            if not path and name in KEYWORDS:
                continue
            where = f"{path}.{name}" if path else name
            child = fact.get("properties", {}).get(name) or fact.get("additionalProperties")
            if child is None:
                problems.append(f"{where}: no such property on the published type")
            elif "ReadOnly" in child.get("flags", []):
                problems.append(f"{where}: read-only on the published type")
            else:
                problems.extend(violations(child, inner, where, declared))
        return problems
    return []


@cache
def used() -> list[tuple[str, str, str, dict[str, Any]]]:
    return list(resources())


@cache
def declared(file: str) -> frozenset[str]:
    return symbols(INFRA / file)


def test_every_resource_type_and_api_version_in_infra_is_published():
    published = {name.lower() for name in FACTS}
    missing = {f"{file} {name}: {type_}" for file, name, type_, _ in used() if type_.lower() not in published}
    assert not missing, "not in Azure/bicep-types-az (regenerate the facts, or fix the API version)"


def test_every_property_we_set_exists_on_its_type_is_writable_and_takes_the_value():
    lookup = {name.lower(): fact for name, fact in FACTS.items()}
    problems = [
        f"{file} {name} ({type_}): {problem}"
        for file, name, type_, body in used()
        for problem in violations(lookup[type_.lower()]["body"], body, "", declared(file))
    ]
    assert not problems


def test_each_fact_names_the_published_file_it_came_from():
    for name, fact in FACTS.items():
        namespace, version = name.split("/")[0].lower(), name.split("@")[1]
        assert fact["source"].startswith("Azure/bicep-types-az generated/"), name
        assert fact["source"].endswith(f"/{namespace}/{version}/types.json"), name
        assert len(fact["commit"]) == 40, name


def test_the_check_refuses_a_property_the_type_lacks_a_read_only_one_and_a_value_outside_an_enumeration():
    """The checker itself: a misspelt property, a read-only property and a wrong enumeration value all fail."""
    queue = FACTS["Microsoft.ServiceBus/namespaces/queues@2024-01-01"]["body"]
    assert violations(queue, {"properties": {"lockDurations": "PT1M"}}, "") == [
        "properties.lockDurations: no such property on the published type"
    ]
    namespace = FACTS["Microsoft.ServiceBus/namespaces@2024-01-01"]["body"]
    assert violations(namespace, {"sku": {"name": "Enterprise"}}, "") == [
        "sku.name: 'Enterprise' is not one of ['Basic', 'Premium', 'Standard']"
    ]
    readonly = {"kind": "object", "properties": {"id": {"kind": "string", "flags": ["ReadOnly"]}}}
    assert violations(readonly, {"id": "x"}, "") == ["id: read-only on the published type"]


def test_the_check_reads_a_for_expression_as_an_array_of_its_item():
    """`values: [for (q, i) in queueList: queues[i].name]` is an array: its item is checked, a loop is not an object."""
    strings = {"kind": "array", "items": {"kind": "string", "values": ["a"]}}
    loop = {"loop_type": {"type": "array", "detail": {"item_name": "q", "array_name": "xs"}}, "condition": None}
    assert violations(strings, {**loop, "config": "b"}, "values") == ["values[0]: 'b' is not one of ['a']"]
    assert violations(strings, {**loop, "config": {"operator": {"type": "property_accessor"}}}, "values") == []
