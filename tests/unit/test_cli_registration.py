"""setup's plan: what it creates, updates or leaves alone, found again by name — pure over what Dataverse holds."""

from collections.abc import Mapping
from typing import Any

import pytest

from optout_core.cli.registration import (
    EndpointKey,
    Registration,
    endpoint_values,
    plan_remove,
    plan_setup,
    step_values,
)
from optout_core.domain.errors import SettingsError
from optout_core.domain.settings import Settings

KEY = "c2VjcmV0LWtleS1ub3QtcHJpbnRlZA=="
CONNECTION = f"Endpoint=sb://optout-bus.servicebus.windows.net/;SharedAccessKeyName=dataverse-send;SharedAccessKey={KEY};EntityPath=campaign-log"
MESSAGE, FILTER, ENDPOINT, STEP = (f"{n}0000000-0000-4000-8000-000000000000" for n in "1234")
SETTINGS = Settings.from_env({"DATAVERSE_ENDPOINT_CONNECTION_STRING": CONNECTION})


def _found(
    endpoints: tuple[Mapping[str, Any], ...] = (), steps: tuple[Mapping[str, Any], ...] = (), **kw: Any
) -> Registration:
    return Registration(
        endpoints=endpoints,
        steps={ENDPOINT: steps},
        create_message=MESSAGE,
        create_filter={"sdkmessagefilterid": FILTER, "iscustomprocessingstepallowed": True},
        workflows=kw.get("workflows", ()),
    )


def _key(settings: Settings = SETTINGS) -> EndpointKey:
    return EndpointKey.parse(settings.endpoint_connection_string, settings.campaign_log_queue)


def _registered(settings: Settings = SETTINGS) -> Registration:
    endpoint = {"serviceendpointid": ENDPOINT, "issaskeyset": True, **endpoint_values(settings, _key(settings))}
    step = {
        "sdkmessageprocessingstepid": STEP,
        "_sdkmessageid_value": MESSAGE,
        "_sdkmessagefilterid_value": FILTER,
        "_eventhandler_value": ENDPOINT,
        **step_values(settings),
    }
    return _found((endpoint,), (step,))


def test_the_connection_string_gives_namespace_key_name_and_queue_and_never_shows_the_key() -> None:
    key = _key()
    assert (key.address, key.namespace, key.key_name, key.queue) == (
        "sb://optout-bus.servicebus.windows.net/",
        "optout-bus",
        "dataverse-send",
        "campaign-log",
    )
    assert KEY not in repr(key)
    assert KEY not in key.fingerprint()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (None, "is not set"),
        ("Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b", "lacks EntityPath"),
        (CONNECTION.replace("EntityPath=campaign-log", "EntityPath=opt-out"), "is for queue 'opt-out'"),
        (CONNECTION.replace("sb://", "https://"), "must be sb://"),
    ],
)
def test_a_connection_string_that_cannot_serve_the_campaign_log_queue_is_refused(text: str | None, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        EndpointKey.parse(text, "campaign-log")


def test_a_first_run_creates_a_json_queue_endpoint_with_the_key_and_an_async_post_operation_step() -> None:
    endpoint, step = plan_setup(SETTINGS, _key(), _found())

    assert (endpoint.action, endpoint.record) == ("create", "serviceendpoint")
    assert (
        endpoint.values["contract"] == 2 and endpoint.values["messageformat"] == 2 and endpoint.values["authtype"] == 2
    )
    assert endpoint.values["saskey"] == KEY and KEY not in repr(endpoint)
    assert (step.action, step.record) == ("create", "step")
    assert (step.values["stage"], step.values["mode"], step.values["asyncautodelete"]) == (40, 1, True)
    assert step.values["sdkmessagefilterid@odata.bind"] == f"/sdkmessagefilters({FILTER})"


def test_a_second_run_changes_nothing() -> None:
    assert [c.action for c in plan_setup(SETTINGS, _key(), _registered())] == ["none", "none"]


@pytest.mark.parametrize(
    "stored",
    [
        {"namespaceaddress": "sb://optout-bus.servicebus.windows.net"},  # no trailing slash
        {"namespaceaddress": "SB://Optout-Bus.ServiceBus.Windows.NET/"},  # host names are case-insensitive
        {"solutionnamespace": "Optout-Bus", "path": "Campaign-Log"},  # so are namespace and queue names
        {"name": "Optout Campaign Log ", "saskeyname": " dataverse-send"},  # found by a case-insensitive filter
        {"description": f"{endpoint_values(SETTINGS, _key())['description']}\r\n"},
    ],
)
def test_a_second_run_changes_nothing_whatever_form_dataverse_stores(stored: dict[str, str]) -> None:
    registered = _registered()
    endpoint = {**registered.endpoints[0], **stored}
    again = plan_setup(SETTINGS, _key(), _found((endpoint,), registered.steps[ENDPOINT]))
    assert [c.action for c in again] == ["none", "none"]


def test_a_changed_queue_or_key_updates_the_endpoint_in_place() -> None:
    moved = Settings.from_env(
        {
            "CAMPAIGN_LOG_QUEUE": "dataverse-log",
            "DATAVERSE_ENDPOINT_CONNECTION_STRING": CONNECTION.replace("campaign-log", "dataverse-log"),
        }
    )
    endpoint, step = plan_setup(moved, _key(moved), _registered())
    assert (endpoint.action, endpoint.id) == ("update", ENDPOINT)
    assert set(endpoint.values) >= {"path"} and endpoint.values["path"] == "dataverse-log"
    assert step.action == "none"

    rotated = Settings.from_env({"DATAVERSE_ENDPOINT_CONNECTION_STRING": CONNECTION.replace(KEY, "bmV3LWtleQ==")})
    endpoint, _ = plan_setup(rotated, _key(rotated), _registered())
    assert endpoint.action == "update" and endpoint.values["saskey"] == "bmV3LWtleQ=="


def test_a_disabled_or_synchronous_step_is_put_right_with_the_documented_state_pair() -> None:
    found = _registered()
    step = {**found.steps[ENDPOINT][0], "mode": 0, "statecode": 1, "statuscode": 2}
    _, change = plan_setup(SETTINGS, _key(), _found(found.endpoints, (step,)))
    assert change.action == "update"
    assert dict(change.values) == {"mode": 1, "statecode": 0, "statuscode": 1}


def test_it_refuses_when_it_cannot_tell_which_records_are_its_own() -> None:
    found = _registered()
    twice = _found((found.endpoints[0], {**found.endpoints[0], "serviceendpointid": STEP}))
    with pytest.raises(SettingsError, match="2 service endpoints are named"):
        plan_setup(SETTINGS, _key(), twice)
    two_steps = _found(found.endpoints, found.steps[ENDPOINT] * 2)
    with pytest.raises(SettingsError, match="has 2 Create steps"):
        plan_setup(SETTINGS, _key(), two_steps)


def test_workflows_are_deactivated_only_when_named_and_only_those() -> None:
    workflows = (
        {"workflowid": "a", "name": "Concep Opt Out (child)", "statecode": 1},
        {"workflowid": "b", "name": "Concep Email Campaign Log - Router", "statecode": 1},
        {"workflowid": "c", "name": "Concep Bounce Detail", "statecode": 0},
    )
    found = _found(_registered().endpoints, _registered().steps[ENDPOINT], workflows=workflows)
    with pytest.raises(SettingsError, match="needs CONCEP_WORKFLOWS.*Concep Email Campaign Log - Router, Concep Opt"):
        plan_setup(SETTINGS, _key(), found, deactivate_workflows=True)

    named = Settings.from_env(
        {
            "DATAVERSE_ENDPOINT_CONNECTION_STRING": CONNECTION,
            "CONCEP_WORKFLOWS": "Concep Opt Out (child);Concep Bounce Detail",
        }
    )
    changes = [c for c in plan_setup(named, _key(named), found, deactivate_workflows=True) if c.record == "workflow"]
    assert [(c.action, c.id, dict(c.values)) for c in changes] == [
        ("update", "a", {"statecode": 0, "statuscode": 1}),
        ("none", "c", {"statecode": 0, "statuscode": 1}),
    ]


def test_remove_deletes_the_step_then_the_endpoint_and_nothing_else() -> None:
    found = _registered()
    stranger = {"serviceendpointid": MESSAGE, "name": "someone else's endpoint"}
    changes = plan_remove(SETTINGS, _found((*found.endpoints, stranger), found.steps[ENDPOINT]))
    assert [(c.action, c.record, c.id) for c in changes] == [
        ("delete", "step", STEP),
        ("delete", "serviceendpoint", ENDPOINT),
    ]
