"""Regenerate tests/contracts/facts/azure/bicep-types.json from a copy of Azure/bicep-types-az.

    python -m tools.bicep_type_facts <bicep-types-az git directory or checkout> [--write]

For every resource in infra/*.bicep (type and API version) it finds the published type definition
(``generated/<folder>/<provider namespace>/<api version>/types.json``) and keeps only the part of it the templates
use: each property path we set, with its kind, flags and, for an enumeration, the values it allows. A path the
published type does not have is left out and named on stderr; tests/contracts/azure/test_bicep_types.py then fails
on it. Without --write the facts are printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
FACTS = ROOT / "tests" / "contracts" / "facts" / "azure" / "bicep-types.json"
REPOSITORY = "Azure/bicep-types-az"
# Bicep language keywords in a resource body, not properties of the resource type.
KEYWORDS = frozenset({"parent", "scope", "dependsOn"})
# bicep-types TypePropertyFlags (Azure/bicep-types src/bicep-types/src/types.ts)
FLAGS = {1: "Required", 2: "ReadOnly", 4: "WriteOnly", 8: "DeployTimeConstant", 16: "Identifier"}


def is_expression(value: Any) -> bool:
    """pycep writes a Bicep expression (a function call, an accessor, an operator) as a one-key dict."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("function", "operator")


def key(name: str) -> str:
    """An object key as written in Bicep, without the quotes a quoted key keeps in pycep's output."""
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == "'" else name


def symbols(path: Path) -> frozenset[str]:
    """The names a Bicep file declares: pycep writes a reference to one (``location: location``) as a bare string."""
    parsed = BicepParser().parse(file_path=path)
    return frozenset((*parsed["parameters"], *parsed["variables"], *parsed["resources"]))


def resources(infra: Path = INFRA) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(file, symbolic name, "Type@version", body) for every resource in infra/*.bicep."""
    for path in sorted(infra.glob("*.bicep")):
        for name, resource in BicepParser().parse(file_path=path)["resources"].items():
            config = resource["config"]
            body = config.get("config", config) if "condition" in config else config  # `= if (...) {...}`
            yield path.name, name, f"{resource['type']}@{resource['api_version']}", body


class Types:
    """One published types.json: types by index, references resolved."""

    def __init__(self, types: list[dict[str, Any]]) -> None:
        self.types = types

    def at(self, ref: Mapping[str, str]) -> dict[str, Any]:
        return self.types[int(ref["$ref"].rsplit("/", 1)[1])]

    def resource(self, name: str) -> dict[str, Any] | None:
        for t in self.types:
            if t["$type"] == "ResourceType" and t["name"].lower() == name.lower():
                return self.at(t["body"])
        return None


def _kind(t: dict[str, Any]) -> str:
    return {
        "StringType": "string",
        "StringLiteralType": "string",
        "IntegerType": "int",
        "BooleanType": "bool",
        "AnyType": "any",
        "ArrayType": "array",
        "ObjectType": "object",
        "DiscriminatedObjectType": "object",
        "UnionType": "union",
        "ResourceFunctionType": "any",
    }.get(t["$type"], "any")


def _union_values(types: Types, t: dict[str, Any]) -> list[str] | None:
    """The allowed values of a closed enumeration (literals only); None when any string goes."""
    members = [types.at(e) for e in t["elements"]]
    if all(m["$type"] == "StringLiteralType" for m in members):
        return sorted(m["value"] for m in members)
    return None


def prune(types: Types, t: dict[str, Any], value: Any, where: str, missing: list[str]) -> dict[str, Any]:
    """The part of type ``t`` that ``value`` (a pycep body or literal) uses."""
    fact: dict[str, Any] = {"kind": _kind(t)}
    if t["$type"] == "UnionType":
        values = _union_values(types, t)
        if values is not None:
            fact["values"] = values
        fact["kind"] = "string" if values is not None else "any"
        return fact
    if t["$type"] == "StringLiteralType":
        fact["values"] = [t["value"]]
        return fact
    if is_expression(value) or not isinstance(value, (dict, list)):
        return fact
    if t["$type"] == "ArrayType" and isinstance(value, list):
        item = types.at(t["itemType"])
        items: dict[str, Any] = {"kind": _kind(item)}
        for i, element in enumerate(value):
            items = _merge(items, prune(types, item, element, f"{where}[{i}]", missing))
        fact["items"] = items
        return fact
    if t["$type"] == "DiscriminatedObjectType" and isinstance(value, dict):
        discriminator = t["discriminator"]
        chosen = value.get(discriminator) or value.get(f"'{discriminator}'")
        if not isinstance(chosen, str) or chosen not in t["elements"]:
            missing.append(f"{where}.{discriminator} = {chosen!r}")
            return fact
        element = types.at(t["elements"][chosen])
        properties: dict[str, Any] = {**t["baseProperties"], **element["properties"]}
        properties[discriminator] = {"type": {"$literal": chosen}, "flags": 1}
        merged = {"$type": "ObjectType", "properties": properties}
        fact.update(_object(types, merged, value, where, missing))
        fact["discriminator"] = {"property": discriminator, "value": chosen}
        return fact
    if t["$type"] == "ObjectType" and isinstance(value, dict):
        fact.update(_object(types, t, value, where, missing))
    return fact


def _object(types: Types, t: dict[str, Any], value: dict[str, Any], where: str, missing: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    extra: dict[str, Any] | None = None
    declared = t.get("properties", {})
    for raw, inner in value.items():
        name = key(raw)
        if not where and name in KEYWORDS:
            continue
        path = f"{where}.{name}" if where else name
        if name in declared:
            prop = declared[name]
            if "$literal" in prop["type"]:  # the discriminator itself
                found[name] = {"kind": "string", "values": [prop["type"]["$literal"]], "flags": ["Required"]}
                continue
            child = prune(types, types.at(prop["type"]), inner, path, missing)
            child["flags"] = [label for bit, label in FLAGS.items() if prop.get("flags", 0) & bit]
            found[name] = child
        elif "additionalProperties" in t:
            child = prune(types, types.at(t["additionalProperties"]), inner, path, missing)
            extra = child if extra is None else _merge(extra, child)
        else:
            missing.append(path)
    result: dict[str, Any] = {"properties": dict(sorted(found.items()))}
    if extra is not None:
        result["additionalProperties"] = extra
    return result


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two prunings of one type (array items, dictionary values): the union of what each kept."""
    merged = {**a, **b}
    for field in ("properties",):
        if field in a or field in b:
            names = set(a.get(field, {})) | set(b.get(field, {}))
            merged[field] = {n: _merge(a.get(field, {}).get(n, {}), b.get(field, {}).get(n, {})) for n in sorted(names)}
    for field in ("items", "additionalProperties"):
        if field in a and field in b:
            merged[field] = _merge(a[field], b[field])
    return merged


class Mirror:
    """A git directory (or checkout) of Azure/bicep-types-az, read at HEAD."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commit = self._git("rev-parse", "HEAD").strip()
        self.files = [f for f in self._git("ls-tree", "-r", "--name-only", "HEAD", "generated").split("\n") if f]

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", f"--git-dir={self.path}", *args], capture_output=True, text=True, check=True
        ).stdout

    def candidates(self, resource_type: str) -> list[str]:
        name, version = resource_type.split("@")
        namespace = name.split("/")[0].lower()
        suffix = f"/{namespace}/{version}/types.json"
        return sorted(f for f in self.files if f.endswith(suffix))

    def types(self, path: str) -> Types:
        return Types(json.loads(self._git("show", f"HEAD:{path}")))


def extract(mirror: Mirror) -> tuple[dict[str, Any], list[str]]:
    facts: dict[str, Any] = {}
    missing: list[str] = []
    for file, name, resource_type, body in resources():
        for path in mirror.candidates(resource_type):
            types = mirror.types(path)
            t = types.resource(resource_type)
            if t is None:
                continue
            absent: list[str] = []
            fact = prune(types, t, body, "", absent)
            missing.extend(f"{file} {name}: {m}" for m in absent)
            entry = facts.setdefault(resource_type, {"source": f"{REPOSITORY} {path}", "commit": mirror.commit})
            entry["body"] = _merge(entry.get("body", {}), fact)
            break
        else:
            missing.append(f"{file} {name}: no published type {resource_type}")
    return dict(sorted(facts.items())), missing


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    facts, missing = extract(Mirror(Path(argv[0])))
    for m in missing:
        print(f"not in the published type: {m}", file=sys.stderr)
    text = json.dumps(facts, indent=1, sort_keys=True) + "\n"
    if "--write" in argv[1:]:
        FACTS.parent.mkdir(parents=True, exist_ok=True)
        FACTS.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
