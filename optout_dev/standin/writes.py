"""What a PATCH or POST body sets (docs/dataverse-webapi.md §1, §2; docs/dataverse-admin.md §3, §5): columns
checked against the table's schema and their types, lookups set with ``<navigation>@odata.bind``, and the
statecode/statuscode pair settled."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

from optout_dev.standin.responses import Response, error, unsupported
from optout_dev.standin.schema import Column, Table
from optout_dev.standin.tables import API_PREFIX, GUID

PAYLOAD_CODE = "0x80048d19"  # ODataClientPayloadError
INVALID_ARGUMENT = "0x80040203"  # used for the platform's own validation answers below (their codes are unconfirmed)
OUT_OF_RANGE = "0x8004431a"
_BIND = re.compile(rf"(?:.*{re.escape(API_PREFIX)}|/)?([A-Za-z_]\w*)\((\s*{GUID.pattern}\s*)\)")


@dataclass(frozen=True)
class Bind:
    """``<navigation>@odata.bind`` in a body: the lookup it sets and the row it points at."""

    column: Column
    table: str
    row_id: str


@dataclass(frozen=True)
class Body:
    values: dict[str, Any]  # by stored (read) name
    binds: tuple[Bind, ...]
    row_id: str | None  # a primary key the body carries


def payload_error(entity_set: str, detail: str) -> Response:
    return error(
        400, PAYLOAD_CODE, f"Error identified in Payload provided by the user for Entity :'{entity_set}': {detail}"
    )


def parse_body(
    table: Table, entity_set: str, headers: Message, body: bytes, creating: bool, set_to_table: Mapping[str, str]
) -> Body | Response:
    """The columns and binds of a JSON body, each checked; or the 400 (501 for a bind to a table not served)."""
    media_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return error(
            400,
            PAYLOAD_CODE,
            f"Content-Type '{headers.get('Content-Type')}' is not supported for a JSON body; "
            "send Content-Type: application/json.",
        )
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        document = None
    if not isinstance(document, dict):
        return payload_error(entity_set, "the body must be a JSON object.")
    values: dict[str, Any] = {}
    binds: list[Bind] = []
    row_id: str | None = None
    for key, value in document.items():
        if key.startswith("@odata."):
            continue  # instance annotations such as @odata.type are legal and carry no data
        if key.endswith("@odata.bind"):
            bound = _bind(table, entity_set, key.removesuffix("@odata.bind"), value, set_to_table)
            if isinstance(bound, Response):
                return bound
            binds.append(bound)
            continue
        if "@" in key:
            continue  # a property annotation: carries no data
        column = table.column(key)
        if column is None or column.is_lookup:
            if table.by_read_name(key) is not None:  # _x_value
                return error(
                    400,
                    PAYLOAD_CODE,
                    "CRM do not support direct update of Entity Reference properties, Use Navigation properties "
                    "instead.",
                )
            return error(
                400, "0x0", f"Invalid property '{key}' was found in entity 'Microsoft.Dynamics.CRM.{table.name}'."
            )
        if column.name == table.primary_key:
            if not isinstance(value, str) or not GUID.fullmatch(value):
                return payload_error(entity_set, f"'{key}' must be a GUID.")
            row_id = value.lower()
            continue
        if not (column.creatable if creating else column.updatable):
            return error(
                400,
                INVALID_ARGUMENT,
                f"The attribute '{key}' of entity '{table.name}' is not valid for "
                f"{'create' if creating else 'update'}.",
            )
        wrong = check_value(table, column, value)
        if wrong is not None:
            return wrong
        values[key] = value
    return Body(values, tuple(binds), row_id)


def check_value(table: Table, column: Column, value: Any) -> Response | None:
    """None when ``value`` fits ``column``'s type (null always does); otherwise the 400."""
    if value is None:
        return None
    literal = f"Cannot convert the literal '{json.dumps(value)}' to the expected type '{{}}'."
    if column.type == "Boolean":
        return None if isinstance(value, bool) else error(400, PAYLOAD_CODE, literal.format("Edm.Boolean"))
    if column.type in ("Picklist", "State", "Status", "Integer"):
        if not isinstance(value, int) or isinstance(value, bool):
            return error(400, PAYLOAD_CODE, literal.format("Edm.Int32"))
        if column.type != "Integer" and column.option(value) is None:
            return _out_of_range(table, column, value)
        return None
    if not isinstance(value, str):
        return error(400, PAYLOAD_CODE, literal.format("Edm.String"))
    if column.type == "MultiSelectPicklist":  # values as a comma-separated string (docs/dataverse-admin.md §1.3)
        for part in value.split(","):
            if not part.strip().lstrip("-").isdigit() or column.option(int(part)) is None:
                return _out_of_range(table, column, part.strip())
    return None


def _out_of_range(table: Table, column: Column, value: object) -> Response:
    accepted = ",".join(str(option.value) for option in column.options)
    return error(
        400,
        OUT_OF_RANGE,
        f"A validation error occurred. The value {value} of '{column.name}' on record of type '{table.name}' is "
        f"outside the valid range. Accepted Values: {accepted}",
    )


def _bind(
    table: Table, entity_set: str, navigation: str, value: Any, set_to_table: Mapping[str, str]
) -> Bind | Response:
    column = table.by_navigation(navigation)
    if column is None:
        return error(
            400,
            PAYLOAD_CODE,
            f"An undeclared property '{navigation}' which only has property annotations in the payload but no "
            "property value was found in the payload. In OData, only declared navigation properties and declared "
            "named streams can be represented as properties without values.",
        )
    match = _BIND.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return payload_error(entity_set, f"'{navigation}@odata.bind' must be '/<entityset>(<guid>)'.")
    target_set, row_id = match.group(1), match.group(2).strip().lower()
    target = set_to_table.get(target_set)
    if target is None:
        bound = column.navigation.get(navigation)
        wanted = [bound] if bound else list(column.targets)
        missing = [name for name in wanted if name not in set_to_table.values()]
        if missing:  # a real table the stand-in does not serve (plugintype, email, systemuser...)
            return unsupported(f"Binding '{navigation}' to '{target_set}'")
        return payload_error(entity_set, f"'{target_set}' in '{navigation}@odata.bind' is not an entity set.")
    if not column.bind_target(navigation, target):
        return payload_error(entity_set, f"the navigation property '{navigation}' cannot point at a '{target}' row.")
    return Bind(column, target, row_id)


def settle_state(table: Table, values: dict[str, Any], current_state: int | None, row_id: str) -> Response | None:
    """A statecode alone gets its default statuscode; a statuscode must belong to the statecode it ends with."""
    state_column, status_column = table.column("statecode"), table.column("statuscode")
    if state_column is None or status_column is None:
        return None
    state = values.get("statecode", current_state)
    if "statecode" in values and "statuscode" not in values:
        option = state_column.option(state)
        if option is not None and option.default_status is not None:
            values["statuscode"] = option.default_status
        return None
    status = status_column.option(values.get("statuscode"))
    if status is None or status.state is None or status.state == state:
        return None
    state_option = state_column.option(state)
    state_label = state_option.label if state_option is not None else state
    return error(
        400,
        INVALID_ARGUMENT,
        f"{status.value} is not a valid status code for state code {table.schema_name}State.{state_label} on "
        f"{table.name} with Id {row_id}.",
    )
