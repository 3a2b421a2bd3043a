"""The Dataverse side of the integration: the Service Bus endpoint Dataverse posts to, the step that posts each new
campaign log row, and Concep's workflows that optout replaces (docs/dataverse-admin.md §3, §4).

:func:`read_registration` reads what exists; :func:`plan_setup` and :func:`plan_remove` are pure and say what
``setup`` changes; :func:`apply` carries a plan out. Records are found again by the endpoint's name, so a second
run changes nothing, a changed setting updates them in place, and ``--remove`` touches nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from optout_core.dataverse.errors import DataverseError
from optout_core.dataverse.webapi import WebApi
from optout_core.domain.errors import SettingsError
from optout_core.domain.odata import equals, guid_literal
from optout_core.domain.settings import Settings

ENDPOINTS, STEPS, WORKFLOWS = "serviceendpoints", "sdkmessageprocessingsteps", "workflows"
ENDPOINT_COLUMNS = [
    "serviceendpointid",
    "name",
    "contract",
    "connectionmode",
    "authtype",
    "namespaceaddress",
    "namespaceformat",
    "solutionnamespace",
    "path",
    "saskeyname",
    "issaskeyset",
    "messageformat",
    "userclaim",
    "description",
]
STEP_COLUMNS = [
    "sdkmessageprocessingstepid",
    "name",
    "stage",
    "mode",
    "rank",
    "supporteddeployment",
    "asyncautodelete",
    "statecode",
    "statuscode",
    "_sdkmessageid_value",
    "_sdkmessagefilterid_value",
    "_eventhandler_value",
]
# Not valid for read (serviceendpoint reference: learn.microsoft.com/power-apps/developer/data-platform/reference/
# entities/serviceendpoint): never in a $select, a read-back's included; issaskeyset says whether one is set.
UNREADABLE = frozenset({"saskey"})
WORKFLOW_COLUMNS = ["workflowid", "name", "statecode", "statuscode", "primaryentity", "category", "type"]
# Option values (docs/dataverse-admin.md §3): Queue contract, Normal connection, SAS key, namespace address, JSON,
# no user information; the step: post-operation, asynchronous, server only, system job deleted on success.
QUEUE_CONTRACTS = (2, 6)  # Queue, Queue (Persistent)
JSON_FORMAT, POST_OPERATION, ASYNCHRONOUS = 2, 40, 1
ACTIVATED, DRAFT = {"statecode": 1, "statuscode": 2}, {"statecode": 0, "statuscode": 1}
ENABLED = {"statecode": 0, "statuscode": 1}
_FINGERPRINT = "key sha256:"

Action = Literal["create", "update", "none", "delete"]
Record = Literal["serviceendpoint", "step", "workflow"]


@dataclass(frozen=True)
class EndpointKey:
    """What Dataverse needs to post to the queue, from a Send-only connection string with ``EntityPath``."""

    address: str  # sb://<namespace>.servicebus.windows.net/
    namespace: str
    key_name: str
    key: str = field(repr=False)
    queue: str

    @classmethod
    def parse(cls, text: str | None, queue: str) -> EndpointKey:
        if not text:
            raise SettingsError(
                "DATAVERSE_ENDPOINT_CONNECTION_STRING is not set: use the campaign-log queue's Send-only "
                "connection string (Service Bus > queue > Shared access policies; `azd up` keeps it in Key Vault)"
            )
        parts = dict(part.split("=", 1) for part in text.strip().split(";") if "=" in part)
        missing = [p for p in ("Endpoint", "SharedAccessKeyName", "SharedAccessKey", "EntityPath") if not parts.get(p)]
        if missing:
            raise SettingsError(
                f"DATAVERSE_ENDPOINT_CONNECTION_STRING lacks {', '.join(missing)}: copy the connection string of a "
                "Shared access policy on the queue itself (it ends with EntityPath=<queue>)"
            )
        host = urlsplit(parts["Endpoint"]).hostname or ""
        if urlsplit(parts["Endpoint"]).scheme != "sb" or not host:
            raise SettingsError("DATAVERSE_ENDPOINT_CONNECTION_STRING's Endpoint must be sb://<namespace>.servicebus…/")
        if parts["EntityPath"] != queue:
            raise SettingsError(
                f"DATAVERSE_ENDPOINT_CONNECTION_STRING is for queue {parts['EntityPath']!r}, but CAMPAIGN_LOG_QUEUE "
                f"is {queue!r}: Dataverse would post where CampaignLogRouter does not listen"
            )
        return cls(f"sb://{host}/", host.split(".")[0], parts["SharedAccessKeyName"], parts["SharedAccessKey"], queue)

    def fingerprint(self) -> str:
        """Which key is registered, without showing it: Dataverse never returns a key, so ``setup`` writes this
        digest into the endpoint's description and compares it to tell a rotated key."""
        return hashlib.sha256(f"{self.key_name}:{self.key}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Registration:
    endpoints: tuple[Mapping[str, Any], ...]  # every service endpoint (an organisation has a handful)
    steps: Mapping[str, tuple[Mapping[str, Any], ...]]  # endpoint id -> its steps
    create_message: str | None  # sdkmessageid of Create
    create_filter: Mapping[str, Any] | None  # the Create filter of the campaign log table
    workflows: tuple[Mapping[str, Any], ...]  # classic workflow definitions on the table, or named in settings


@dataclass(frozen=True)
class Change:
    action: Action
    record: Record
    id: str | None
    name: str
    values: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold the SAS key: never printed
    why: str = ""

    def as_json(self) -> dict[str, object]:
        return {"action": self.action, "record": self.record, "id": self.id, "name": self.name}


def read_registration(client: WebApi, settings: Settings) -> Registration:
    endpoints = tuple(client.query(ENDPOINTS, select=ENDPOINT_COLUMNS))
    steps = {
        str(e["serviceendpointid"]): tuple(
            client.query(
                STEPS, select=STEP_COLUMNS, where=f"_eventhandler_value eq {guid_literal(e['serviceendpointid'])}"
            )
        )
        for e in endpoints
    }
    table = settings.campaign_log_table
    messages = client.query("sdkmessages", select=["sdkmessageid", "name"], where=equals("name", "Create"))
    message = str(messages[0]["sdkmessageid"]) if messages else None
    filters = (
        client.query(
            "sdkmessagefilters",
            select=["sdkmessagefilterid", "iscustomprocessingstepallowed", "primaryobjecttypecode"],
            where=f"{equals('primaryobjecttypecode', table)} and _sdkmessageid_value eq {guid_literal(message)}",
        )
        if message
        else []
    )
    on_table = client.query(
        WORKFLOWS,
        select=WORKFLOW_COLUMNS,
        where=f"type eq 1 and category eq 0 and {equals('primaryentity', settings.campaign_log_table)}",
    )
    named = [
        row
        for name in settings.concep_workflows
        for row in client.query(
            WORKFLOWS, select=WORKFLOW_COLUMNS, where=f"type eq 1 and category eq 0 and {_name_or_id(name)}"
        )
    ]
    workflows = {str(w["workflowid"]): w for w in [*on_table, *named]}
    return Registration(endpoints, steps, message, filters[0] if filters else None, tuple(workflows.values()))


def _name_or_id(text: str) -> str:
    """A CONCEP_WORKFLOWS entry as a condition: a real GUID is the workflow's id; anything else (a name that only
    looks like one included) is its name, quoted and escaped, as an unquoted non-GUID value is a 400."""
    workflow_id = guid_literal(text)
    return f"workflowid eq {workflow_id}" if workflow_id else equals("name", text)


def is_concep_workflow(workflow: Mapping[str, Any], settings: Settings) -> bool:
    wanted = {n.lower() for n in settings.concep_workflows}
    return str(workflow.get("name", "")).lower() in wanted or str(workflow.get("workflowid", "")).lower() in wanted


def endpoint_values(settings: Settings, key: EndpointKey) -> dict[str, Any]:
    return {
        "name": settings.endpoint_name,
        "description": f"Posts new {settings.campaign_log_table} rows to optout; registered by optout setup "
        f"({_FINGERPRINT}{key.fingerprint()})",
        "contract": 2,
        "connectionmode": 1,
        "authtype": 2,
        "namespaceaddress": key.address,
        "namespaceformat": 2,
        "solutionnamespace": key.namespace,
        "path": key.queue,
        "saskeyname": key.key_name,
        "messageformat": JSON_FORMAT,
        "userclaim": 1,
    }


def step_values(settings: Settings) -> dict[str, Any]:
    return {
        "name": f"{settings.endpoint_name}: Create of {settings.campaign_log_table}",
        "stage": POST_OPERATION,
        "mode": ASYNCHRONOUS,
        "rank": 1,
        "supporteddeployment": 0,
        "asyncautodelete": True,
        **ENABLED,
    }


def plan_setup(
    settings: Settings, key: EndpointKey, found: Registration, *, deactivate_workflows: bool = False
) -> list[Change]:
    """What ``setup`` creates, updates or leaves alone. Raises :class:`SettingsError` when it cannot tell which
    records are its own, or Dataverse lacks what the step needs."""
    if found.create_message is None or found.create_filter is None:
        raise SettingsError(
            f"Dataverse offers no Create message filter for table {settings.campaign_log_table}: check "
            "CAMPAIGN_LOG_TABLE (`discover` lists the tables)"
        )
    if found.create_filter.get("iscustomprocessingstepallowed") is False:
        raise SettingsError(f"Dataverse does not allow custom steps on Create of {settings.campaign_log_table}")
    ours = _ours(settings, found)
    changes: list[Change] = []
    wanted = endpoint_values(settings, key)
    if not ours:
        changes.append(Change("create", "serviceendpoint", None, settings.endpoint_name, {**wanted, "saskey": key.key}))
        steps: tuple[Mapping[str, Any], ...] = ()
    else:
        endpoint = ours[0]
        differ = {c: v for c, v in wanted.items() if not same(c, endpoint.get(c), v)}
        if endpoint.get("issaskeyset") is False or "description" in differ:  # a new or rotated key
            differ["saskey"] = key.key
        endpoint_id = str(endpoint["serviceendpointid"])
        changes.append(
            Change("update" if differ else "none", "serviceendpoint", endpoint_id, settings.endpoint_name, differ)
        )
        steps = found.steps.get(endpoint_id, ())
    changes.append(_step_change(settings, found, steps))
    if deactivate_workflows:
        changes.extend(_deactivations(settings, found))
    return changes


def _step_change(settings: Settings, found: Registration, steps: Sequence[Mapping[str, Any]]) -> Change:
    """The Create step of our endpoint: to create, to update, or as it should be."""
    assert found.create_message is not None and found.create_filter is not None  # checked by plan_setup
    creates = [s for s in steps if str(s.get("_sdkmessageid_value")) == found.create_message]
    if len(creates) > 1:
        raise SettingsError(
            f"service endpoint {settings.endpoint_name!r} has {len(creates)} Create steps: remove all but one "
            "(Plug-in Registration Tool) or run `setup --remove` and then `setup`"
        )
    wanted_step = {
        **step_values(settings),
        "sdkmessageid@odata.bind": f"/sdkmessages({found.create_message})",
        "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({found.create_filter['sdkmessagefilterid']})",
    }
    if not creates:
        return Change("create", "step", None, wanted_step["name"], wanted_step)
    step = creates[0]
    differ = {c: v for c, v in step_values(settings).items() if not same(c, step.get(c), v)}
    if str(step.get("_sdkmessagefilterid_value")) != str(found.create_filter["sdkmessagefilterid"]):
        differ["sdkmessagefilterid@odata.bind"] = wanted_step["sdkmessagefilterid@odata.bind"]
    if "statecode" in differ or "statuscode" in differ:
        differ.update(ENABLED)  # a state changes as its documented pair
    step_id = str(step["sdkmessageprocessingstepid"])
    return Change("update" if differ else "none", "step", step_id, wanted_step["name"], differ)


def _deactivations(settings: Settings, found: Registration) -> list[Change]:
    if not settings.concep_workflows:
        activated = ", ".join(sorted(str(w["name"]) for w in found.workflows if w.get("statecode") == 1)) or "none"
        raise SettingsError(
            "--deactivate-workflows needs CONCEP_WORKFLOWS (the names of Concep's opt-out and bounce workflows); "
            f"activated workflows on {settings.campaign_log_table}: {activated}"
        )
    changes = []
    for workflow in found.workflows:
        if is_concep_workflow(workflow, settings):
            action: Action = "update" if workflow.get("statecode") == 1 else "none"
            changes.append(Change(action, "workflow", str(workflow["workflowid"]), str(workflow["name"]), DRAFT))
    return changes


def plan_remove(settings: Settings, found: Registration) -> list[Change]:
    """Delete what ``setup`` made — the named endpoint and its steps — and nothing else."""
    changes = []
    for endpoint in _ours(settings, found):
        endpoint_id = str(endpoint["serviceendpointid"])
        for step in found.steps.get(endpoint_id, ()):
            changes.append(Change("delete", "step", str(step["sdkmessageprocessingstepid"]), str(step.get("name", ""))))
        changes.append(Change("delete", "serviceendpoint", endpoint_id, str(endpoint.get("name", ""))))
    return changes


# Compared without regard to case: host names (RFC 3986 §3.2.2), Service Bus namespace and queue names (Service
# Bus treats entity names case-insensitively), and the endpoint's name, which Dataverse's own string filters match
# case-insensitively (learn.microsoft.com/power-apps/developer/data-platform/webapi/query/filter-rows).
_CASELESS = frozenset({"name", "solutionnamespace", "path"})


def same(column: str, stored: Any, wanted: Any) -> bool:
    """Whether a stored value already says what ``setup`` would write, whatever form Dataverse keeps it in: text
    without surrounding blanks, the namespace address by scheme and host (case and trailing slash aside)."""
    if not isinstance(stored, str) or not isinstance(wanted, str):
        return bool(stored == wanted and type(stored) is type(wanted))
    if column == "namespaceaddress":
        return _address(stored) == _address(wanted)
    if column in _CASELESS:
        return stored.strip().casefold() == wanted.strip().casefold()
    return stored.strip() == wanted.strip()


def _address(text: str) -> tuple[str, str, str]:
    parts = urlsplit(text.strip())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.path.strip("/")


def _ours(settings: Settings, found: Registration) -> list[Mapping[str, Any]]:
    ours = [e for e in found.endpoints if same("name", e.get("name"), settings.endpoint_name)]
    if len(ours) > 1:
        raise SettingsError(
            f"{len(ours)} service endpoints are named {settings.endpoint_name!r}: delete the extra ones or set "
            "DATAVERSE_ENDPOINT_NAME to the one to manage"
        )
    return ours


def apply(client: WebApi, plan: Sequence[Change]) -> tuple[list[Change], DataverseError | None]:
    """Carry out ``plan`` in order (a "none" change only names the endpoint a new step binds to). Returns the
    changes made — a created record with its new id — and the error that stopped the rest, if any: a re-run
    finds what was made and completes the remainder."""
    done: list[Change] = []
    endpoint_id: str | None = None
    for change in plan:
        entity_set = {"serviceendpoint": ENDPOINTS, "step": STEPS, "workflow": WORKFLOWS}[change.record]
        values = dict(change.values)
        if change.record == "step" and change.action == "create":
            values["eventhandler_serviceendpoint@odata.bind"] = f"/serviceendpoints({endpoint_id})"
        record_id = change.id
        try:
            if change.action == "create":
                record_id = client.create(entity_set, values)
            elif change.action == "update":
                client.patch(entity_set, str(change.id), values, unreadable=UNREADABLE)
            elif change.action == "delete":
                client.delete(entity_set, str(change.id))
        except DataverseError as exc:
            return done, exc
        if change.record == "serviceendpoint":
            endpoint_id = record_id
        done.append(Change(change.action, change.record, record_id, change.name, why=change.why))
    return done, None
