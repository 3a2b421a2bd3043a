"""Regenerates tests/contracts/facts/dataverse/*.json from Microsoft's table reference pages (run from the
repository root, with a checkout or mirror of the repositories the fact files name):

    python -m tools.dataverse_facts --docs MicrosoftDocs/powerapps-docs=/path/to/powerapps-docs \\
        --docs MicrosoftDocs/dynamics-365-customer-engagement=/path/to/dynamics-365-customer-engagement

Each fact file keeps the columns it already lists (the ones the app and the stand-in use) and its source; the
page's columns are read again: type, IsValidForRead/Create/Update, RequiredLevel, options, lookup targets and the
navigation properties of the page's many-to-one relationships. Both page layouts are read: the newer one
(backquoted values, ``IsValidForCreate``/``IsValidForUpdate`` shown only when false, a column under "Read-only
columns/attributes" false for both) and the older one (plain values). A page that names none of a fact's columns
is an error, so a moved page is noticed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

FACTS = Path(__file__).resolve().parent.parent / "tests" / "contracts" / "facts" / "dataverse"
_HEADING = re.compile(r'^### <a name="BKMK_[^"]+"></a>\s*(\S+)\s*$', re.MULTILINE)
_ROW = re.compile(r"^\|\s*\**([A-Za-z]+)\**\s*\|\s*(.*?)\s*\|\s*$", re.MULTILINE)
_OPTION = re.compile(r"^\|\s*(-?\d+)\s*\|", re.MULTILINE)
_READ_ONLY = "## Read-only columns/attributes"
_RELATIONSHIPS = "## Many-to-One relationships"


def _value(text: str) -> str:
    return text.strip().strip("*`").strip()


def parse_page(text: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """The page's columns by logical name, and its navigation properties by referencing column."""
    read_only_at = text.find(_READ_ONLY)
    relationships_at = text.find(_RELATIONSHIPS)
    end = relationships_at if relationships_at >= 0 else len(text)
    columns: dict[str, dict[str, Any]] = {}
    headings = list(_HEADING.finditer(text[:end]))
    for n, heading in enumerate(headings):
        section = text[heading.end() : headings[n + 1].start() if n + 1 < len(headings) else end]
        rows = {key: _value(value) for key, value in _ROW.findall(section.split("####", 1)[0])}
        if "LogicalName" not in rows or "Type" not in rows:
            continue
        writable = read_only_at < 0 or heading.start() < read_only_at
        column: dict[str, Any] = {
            "name": rows["LogicalName"],
            "type": rows["Type"],
            "IsValidForRead": rows.get("IsValidForRead", "True") == "True",
            "IsValidForCreate": writable and rows.get("IsValidForCreate", "True") == "True",
            "IsValidForUpdate": writable and rows.get("IsValidForUpdate", "True") == "True",
            "RequiredLevel": rows.get("RequiredLevel", "None"),
        }
        if "####" in section:
            column["options"] = sorted(int(v) for v in _OPTION.findall(section.split("####", 1)[1]))
        elif rows["Type"] == "Boolean":
            column["options"] = [0, 1]
        if "Targets" in rows:
            column["targets"] = sorted(t.strip() for t in rows["Targets"].split(","))
        columns[column["name"]] = column
    navigation: dict[str, dict[str, str]] = {}
    if relationships_at >= 0:
        for block in text[relationships_at:].split("### ")[1:]:
            rows = {key: _value(value) for key, value in _ROW.findall(block)}
            if {"ReferencingAttribute", "ReferencingEntityNavigationPropertyName", "ReferencedEntity"} <= set(rows):
                navigation.setdefault(rows["ReferencingAttribute"], {})[
                    rows["ReferencingEntityNavigationPropertyName"]
                ] = rows["ReferencedEntity"]
    return columns, navigation


def refreshed(fact: Mapping[str, Any], text: str, commit: str | None) -> dict[str, Any]:
    """``fact`` with its columns read again from the page ``text``."""
    columns, navigation = parse_page(text)
    missing = [c["name"] for c in fact["columns"] if c["name"] not in columns]
    if len(missing) == len(fact["columns"]):
        raise SystemExit(f"{fact['source']['path']} names none of the columns of {fact['table']}")
    kept = []
    for old in fact["columns"]:
        new = dict(columns.get(old["name"], old))
        if old["name"] == f"{fact['table']}id":  # the primary key is never valid for update; newer pages omit it
            new["IsValidForUpdate"] = False
        if new["type"] in ("Lookup", "Customer", "Owner") and new["name"] in navigation:
            new["navigation"] = dict(sorted(navigation[new["name"]].items()))
        kept.append(new)
    source = {**fact["source"], **({"commit": commit} if commit else {})}
    return {**fact, "source": source, "columns": kept}


def dumps(fact: Mapping[str, Any]) -> str:
    """One column a line, so a change to the references reads as a one-line diff."""
    head = {k: v for k, v in fact.items() if k != "columns"}
    lines = json.dumps(head, indent=1)[:-2] + ',\n "columns": [\n'
    lines += ",\n".join(f"  {json.dumps(column)}" for column in fact["columns"])
    return lines + "\n ]\n}\n"


def _commit(root: Path, path: str) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%H", "--", path], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None


def _page(root: Path, path: str) -> str:
    if (root / path).is_file():
        return (root / path).read_text(encoding="utf-8")
    shown = subprocess.run(["git", "-C", str(root), "show", f"HEAD:{path}"], capture_output=True, text=True)
    if shown.returncode != 0:  # a bare mirror: read the page from its newest commit
        raise SystemExit(f"{path} not found in {root}")
    return shown.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--docs", action="append", default=[], help="owner/name=path of a checkout or mirror")
    parser.add_argument("tables", nargs="*", help="fact files to refresh (default: all)")
    args = parser.parse_args(argv)
    roots = dict(item.split("=", 1) for item in args.docs)
    names: Iterable[str] = args.tables or sorted(p.stem for p in FACTS.glob("*.json"))
    for name in names:
        path = FACTS / f"{name}.json"
        fact = json.loads(path.read_text(encoding="utf-8"))
        root = roots.get(fact["source"]["repo"])
        if root is None:
            print(f"skipped {name}: no --docs for {fact['source']['repo']}")
            continue
        page = _page(Path(root), fact["source"]["path"])
        path.write_text(dumps(refreshed(fact, page, _commit(Path(root), fact["source"]["path"]))), encoding="utf-8")
        print(f"refreshed {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
