"""``python -m optout_core discover [--table NAME] [--json]``: read the environment's metadata and propose the
settings, so nobody has to guess the Concep solution's names and option codes. Never writes to Dataverse.

The ranking and the proposal are pure functions of the metadata; :func:`discover` does the reading.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from optout_core.cli.schema import LOOKUP_KINDS, RECIPIENT_TABLES, Column, Option, SchemaReader, Table
from optout_core.domain.model import Route
from optout_core.domain.odata import logical_name
from optout_core.domain.routing import Unrouted, type_route
from optout_core.domain.settings import Settings, normalise_label

# Concep's own labels for the three opt-out types (the brief's), worth more than a label that merely looks alike.
_KNOWN_OPT_OUTS = frozenset(normalise_label(label) for label in ("Spam Report", "Group Opt out", "Client Opt Out"))
_WEIGHTS: dict[Route | Unrouted, int] = {Route.OPT_OUT: 3, Route.BOUNCE: 2, Unrouted.USER_OPT_OUT: 1}
_TABLE_HINTS = {"campaign": 2, "log": 1, "mail": 1, "concep": 2}
_DETAIL_HINTS = ("bounce", "reason", "detail", "error")
TYPE_SETTINGS: dict[Route | Unrouted, str] = {
    Route.OPT_OUT: "OPT_OUT_ACTIVITY_TYPES",
    Route.BOUNCE: "BOUNCE_ACTIVITY_TYPES",
    Unrouted.USER_OPT_OUT: "USER_OPT_OUT_ACTIVITY_TYPES",
}


def looks_like(label: str) -> Route | Unrouted | None:
    """The route an option's label suggests: an opt-out, a bounce, a send-account opt-out (``user_opt_out``) or
    None. A suggestion only: the settings decide, and ``check --connect`` warns where they differ."""
    text = normalise_label(label)
    if "bounce" in text:
        return Route.BOUNCE
    if "spam" in text or "complaint" in text:
        return Route.OPT_OUT
    if "optout" in text or "unsubscribe" in text:
        return Unrouted.USER_OPT_OUT if text.startswith(("user", "sendaccount", "account")) else Route.OPT_OUT
    return None


@dataclass(frozen=True)
class Candidate:
    table: str
    entity_set: str
    activity_type_column: str
    score: int
    why: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "table": self.table,
            "entity_set": self.entity_set,
            "activity_type_column": self.activity_type_column,
            "score": self.score,
            "why": list(self.why),
        }


def rank(tables: Sequence[tuple[str, str, str, Sequence[Column]]]) -> list[Candidate]:
    """Candidate campaign-log tables, best first: ``tables`` is (name, entity set, display name, choice columns).
    A table is a candidate when one of its choice columns has an opt-out-like option."""
    found = []
    for name, entity_set, display, columns in tables:
        best: Candidate | None = None
        for column in columns:
            kinds = [(option, looks_like(option.label)) for option in column.options]
            opt_outs = [option.label for option, kind in kinds if kind is Route.OPT_OUT]
            if not opt_outs:
                continue
            score = sum(_WEIGHTS[kind] for _, kind in kinds if kind) + 2 * sum(
                normalise_label(label) in _KNOWN_OPT_OUTS for label in opt_outs
            )
            why = [f"choice column {column.name} has opt-out options ({', '.join(opt_outs)})"]
            for kind, words in ((Route.BOUNCE, "bounce"), (Unrouted.USER_OPT_OUT, "send-account opt-out")):
                labels = [option.label for option, k in kinds if k == kind]
                if labels:
                    why.append(f"{words} options ({', '.join(labels)})")
            text = normalise_label(f"{name} {display}")
            hints = [hint for hint in _TABLE_HINTS if hint in text]
            if hints:
                score += sum(_TABLE_HINTS[hint] for hint in hints)
                why.append(f"its name mentions {', '.join(hints)}")
            if best is None or score > best.score:
                best = Candidate(name, entity_set, column.name, score, tuple(why))
        if best is not None:
            found.append(best)
    return sorted(found, key=lambda c: (-c.score, c.table))


def recipient_columns(table: Table) -> list[str]:
    """Lookups that can name a contact, lead or account: single-target lookups first (contact, lead, account),
    then polymorphic ones, each group by name — the order ``RECIPIENT_COLUMNS`` tries them in."""
    lookups = [
        c
        for c in table.columns.values()
        if c.kind in LOOKUP_KINDS and c.readable and set(c.targets) & set(RECIPIENT_TABLES)
    ]

    def order(column: Column) -> tuple[int, int, str]:
        first = min(RECIPIENT_TABLES.index(t) for t in column.targets if t in RECIPIENT_TABLES)
        return (len(column.targets) > 1, first, column.name)

    return [c.name for c in sorted(lookups, key=order)]


def detail_column(table: Table) -> str | None:
    """A text column fit to fill ``{detail}`` of BOUNCE_UPDATE: one whose name speaks of the bounce."""
    texts = [c.name for c in table.columns.values() if c.kind in ("String", "Memo") and c.readable]
    for hint in _DETAIL_HINTS:
        for name in sorted(texts):
            if hint in name:
                return name
    return None


def type_list(options: Sequence[Option]) -> str:
    """A type-list setting naming each option by code *and* label, so routing depends on neither alone; ``;``
    (an explicitly empty list) when there is none."""
    return ";".join(part for option in options for part in (str(option.value), option.label) if part) or ";"


def propose(table: Table, column: str) -> dict[str, str]:
    """The settings for ``table`` with ``column`` as its activity type."""
    options = table.columns[column].options
    settings = {
        "CAMPAIGN_LOG_TABLE": table.name,
        "CAMPAIGN_LOG_ENTITY_SET": table.entity_set,
        "ACTIVITY_TYPE_COLUMN": column,
        **{
            setting: type_list([o for o in options if looks_like(o.label) == kind])
            for kind, setting in TYPE_SETTINGS.items()
        },
        "RECIPIENT_COLUMNS": ";".join(recipient_columns(table)),
    }
    detail = detail_column(table)
    if detail:
        settings["BOUNCE_DETAIL_COLUMN"] = detail
    return settings


def option_routes(options: Sequence[Option], settings: Settings) -> list[dict[str, object]]:
    """Each option with the route the router gives it under ``settings`` (the router's own rule)."""
    return [{"value": o.value, "label": o.label, "route": type_route(o.label, o.value, settings)} for o in options]


def discover(reader: SchemaReader, out: TextIO, *, table: str | None = None, as_json: bool = False) -> int:
    if table is not None and logical_name(table) is None:  # it goes into EntityDefinitions(LogicalName='…')
        print(f"--table {table!r} is not a logical name: lower-case letters, digits and underscores", file=sys.stderr)
        return 2
    if table is not None:  # read once, with its options: ranked alone, then proposed from
        named = reader.table(table)
        known = [] if named is None else [named]
        candidates = rank([(t.name, t.entity_set, t.display, _choices(t)) for t in known])
    else:
        named = None
        candidates = rank([(s.name, s.entity_set, s.display, reader.choices(s.name)) for s in reader.custom_tables()])
    best = candidates[0] if candidates else None
    full = named if named is not None else (reader.table(best.table) if best else None)
    if best is None or full is None:
        result: dict[str, object] = {"candidates": [], "settings": {}, "options": []}
        print(json.dumps(result) if as_json else _nothing(table), file=out)
        return 1
    proposal = propose(full, best.activity_type_column)
    options = full.columns[best.activity_type_column].options
    routes = option_routes(options, Settings.from_env(proposal))
    language = label_language(options)
    if as_json:
        result = {
            "candidates": [c.as_json() for c in candidates],
            "settings": proposal,
            "options": routes,
            "label_language": language,
        }
        print(json.dumps(result, ensure_ascii=False), file=out)
        return 0
    _print(candidates, full, proposal, routes, out)
    said = language if language is not None else "unknown"
    print(f"\nOption labels are in language {said}{_note(language)}.", file=out)
    return 0


def label_language(options: Sequence[Option]) -> int | None:
    """The language the options' labels were read in (the most common one; None when no label said)."""
    found = Counter(o.language for o in options if o.language is not None)
    return found.most_common(1)[0][0] if found else None


def _note(language: int | None) -> str:
    if language in (None, 1033):
        return ""
    return (
        " (the organisation's own, not English): a type list may name options by these labels or, in any language, "
        "by their codes"
    )


def _choices(table: Table) -> list[Column]:
    return [c for c in table.columns.values() if c.kind == "Picklist"]


def _nothing(table: str | None) -> str:
    if table:
        return f"no table {table!r} with an opt-out-like choice column (Spam Report, Group Opt out, Client Opt Out)"
    return (
        "no custom table has a choice column with opt-out-like options (Spam Report, Group Opt out, Client Opt Out): "
        "is the Concep solution installed in this environment, and can this identity read its metadata?"
    )


def _print(
    candidates: Sequence[Candidate],
    table: Table,
    proposal: Mapping[str, str],
    routes: Sequence[Mapping[str, object]],
    out: TextIO,
) -> None:
    print("Candidate campaign-log tables (best first):", file=out)
    for c in candidates:
        print(
            f"  {c.score:>3}  {c.table} ({c.entity_set}), activity type {c.activity_type_column}: {'; '.join(c.why)}",
            file=out,
        )
    column = proposal["ACTIVITY_TYPE_COLUMN"]
    print(f"\n{table.name}.{column} options and the route each would get:", file=out)
    for route in routes:
        print(f"  {route['value']:>10}  {str(route['label']):<28} {route['route']}", file=out)
    lookups = proposal["RECIPIENT_COLUMNS"] or "(none: no lookup to contact, lead or account)"
    print(f"\nRecipient lookups, in the order tried: {lookups}", file=out)
    if "BOUNCE_DETAIL_COLUMN" not in proposal:
        print("No text column looks like a bounce reason: BOUNCE_DETAIL_COLUMN keeps its default.", file=out)
    print('\nlocal.settings.json "Values" (or app settings) to use:', file=out)
    print(json.dumps(dict(proposal), indent=2, ensure_ascii=False), file=out)
