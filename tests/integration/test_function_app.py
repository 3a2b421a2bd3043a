"""function_app.py as the Functions host sees it, driven through the real azure-functions-runtime worker handlers.

Indexing: the worker imports and indexes the app with the host's validations, and the metadata it returns is what the
host would register (names, triggers, bindings). Invocation: each function gets a host-shaped Service Bus message,
and the answer is what the host settles on — Success completes the message, Failure abandons it so Service Bus
redelivers it (see docs/functions-host.md §6 and §12 (c)).

The runtime can be initialised once per process (``worker`` fixture). Each test installs its own services through
``optout_core.app.services.install`` (in-memory queues, the loopback Dataverse stand-in) and resets them afterwards.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import logging
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from optout_core.app.services import Services
from optout_core.app.services import install as install_services
from optout_core.app.table import TABLE
from optout_core.domain.settings import Settings
from optout_core.servicebus.envelopes import OutboundMessage
from optout_dev.messages import CONTACTS, DELETED_CONTACT, LOG_ID, campaign_log, wire
from optout_dev.queues import InMemoryQueues
from optout_dev.standin import DataverseStandIn, Fault
from tests.support.dataverse import standin_env
from tests.support.logs import Capture
from tests.support.worker import Invocation, Worker

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = {
    "CampaignLogRouter": "%CAMPAIGN_LOG_QUEUE%",
    "BulkEmailOptOut": "%OPT_OUT_QUEUE%",
    "BounceDetail": "%BOUNCE_QUEUE%",
}
TIMERS = {"OptOutAudit": "%AUDIT_SCHEDULE%"}  # off until AzureWebJobs.OptOutAudit.Disabled is false
HOST_FUNCTION_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,127}$", re.IGNORECASE)  # azure-functions-host Utility.cs
HOST_BINDING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")  # host ≥ 4.1038, plus no "__"

# Brokered-message properties Dataverse sets on every post (docs/dataverse-messages.md §8.1).
CLAIMS = "http://schemas.microsoft.com/xrm/2011/Claims/"
DATAVERSE_PROPERTIES = {
    f"{CLAIMS}Organization": "unq99d8114f583c44d59a402634f42fc",
    f"{CLAIMS}EntityLogicalName": "concep_emailcampaignlog",
    f"{CLAIMS}RequestName": "Create",
}
FAST_RETRIES = {
    "DATAVERSE_BACKOFF_SECONDS": "0.001",
    "DATAVERSE_BACKOFF_MAX_SECONDS": "0",
    "DATAVERSE_MAX_ATTEMPTS": "3",
}


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker():
    """The one worker init this process gets: imports function_app.py from the repository root, as the host would."""
    with Worker(ROOT) as w:
        yield w
    install_services(None)


@pytest.fixture
def install():
    """install(env, sender=None) -> the in-memory queues the functions send to; reset to production afterwards."""

    def _install(env: dict[str, str] | None = None, *, sender=None) -> InMemoryQueues:
        queues = InMemoryQueues()
        install_services(Services(Settings.from_env(env or {}), sender=sender or queues))
        return queues

    yield _install
    install_services(None)


def dataverse(standin: DataverseStandIn) -> dict[str, str]:
    return standin_env(standin, **FAST_RETRIES)


def post_campaign_log(worker: Worker, **log) -> Invocation:
    """Dataverse posts a new campaign log to CAMPAIGN_LOG_QUEUE; CampaignLogRouter receives it."""
    return worker.invoke_service_bus(
        "CampaignLogRouter",
        wire(campaign_log(**log)),
        message_id="sb-router-1",
        application_properties=DATAVERSE_PROPERTIES,
    )


def deliver(worker: Worker, function_name: str, message: OutboundMessage) -> Invocation:
    """Deliver a message the router sent, with the metadata it was sent with, to the function on that queue."""
    return worker.invoke_service_bus(
        function_name,
        message.body,
        message_id=message.message_id,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        application_properties=dict(message.application_properties),
        subject=message.subject,
    )


def opt_out_work_item(worker: Worker, install, recipient: str) -> OutboundMessage:
    """The work item CampaignLogRouter puts on OPT_OUT_QUEUE for a Group Opt out of ``recipient`` (a contact)."""
    queues = install()
    assert post_campaign_log(worker, activity="Group Opt out", recipient=("contact", recipient)).succeeded
    (item,) = queues.messages("opt-out")
    return item


class FailingSender:
    def send(self, message: OutboundMessage) -> None:
        raise ConnectionError(f"Service Bus unreachable while sending to {message.queue}")


# --- 1. indexing ---------------------------------------------------------------------------------------------


def test_the_worker_indexes_exactly_the_three_queue_functions_and_the_audit_timer(worker):
    functions = worker.functions()
    assert sorted(functions) == sorted({**FUNCTIONS, **TIMERS})
    for info in functions.values():
        assert info.language == "python"
        assert info.properties == {"worker_indexed": "True"}
        assert info.retry_options is None  # @app.retry does not apply to Service Bus; a failed audit waits a day


def test_the_audit_is_a_timer_on_its_schedule_setting_monitored_and_never_run_at_startup(worker):
    (trigger,) = worker.functions()["OptOutAudit"].bindings
    assert trigger["type"] == "timerTrigger" and trigger["direction"] == "IN"
    assert trigger["schedule"] == TIMERS["OptOutAudit"]
    assert trigger["runOnStartup"] is False  # a restart must not start an audit (and its writes, with AUDIT_FIX)
    assert trigger["useMonitor"] is True  # a run missed while the app was down is run late, not skipped


def test_function_names_are_valid_for_the_host_and_can_be_switched_off_on_linux(worker):
    for name in worker.functions():
        assert HOST_FUNCTION_NAME.match(name) and name.lower() != "host", name
        assert "-" not in name, f"AzureWebJobs.{name}.Disabled is not an allowed app setting name on Linux"


def test_indexing_loads_only_the_function_table_each_handler_loads_with_its_first_call():
    # Every cold start indexes function_app.py, switched-off functions included: the handlers, settings and
    # Dataverse client load with the first message instead (bench: import_vs_floor).
    code = "import sys, function_app; print(sorted(m for m in sys.modules if m.startswith('optout_core')))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert set(ast.literal_eval(run.stdout)) <= {
        "optout_core",
        "optout_core.domain",
        "optout_core.domain.model",
        "optout_core.servicebus",
        "optout_core.servicebus.envelopes",
    }


# The functions whose table entry takes a batch: their triggers must be bound with cardinality="many".
BATCHED = {entry.function.name for entry in TABLE if entry.handle_batch is not None}


def test_bulk_email_opt_out_alone_takes_a_batch():  # a backlog at a time, written through one $batch
    assert {"BulkEmailOptOut"} == BATCHED


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_each_function_is_a_service_bus_queue_trigger_on_its_queue_setting(worker, name):
    (trigger,) = worker.functions()[name].bindings
    assert trigger["type"] == "serviceBusTrigger"
    assert trigger["direction"] == "IN"
    assert trigger["connection"] == "ServiceBusConnection"
    assert trigger["queueName"] == FUNCTIONS[name]
    assert trigger.get("autoCompleteMessages", True) is not False, "nothing would settle the messages"
    assert (str(trigger.get("cardinality", "one")).lower() == "many") is (name in BATCHED)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_binding_names_are_valid_for_the_host(worker, name):
    for binding in worker.functions()[name].bindings:
        assert HOST_BINDING_NAME.match(binding["name"]) and "__" not in binding["name"], binding["name"]


@pytest.fixture(scope="module")
def library_indexed():
    """function_app.py indexed by azure.functions itself, under a fresh module name (get_functions() runs once)."""
    spec = importlib.util.spec_from_file_location("function_app_library_indexing", ROOT / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f.get_function_name(): f for f in module.app.get_functions()}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_each_python_function_declares_exactly_its_bindings_as_parameters(library_indexed, name):
    function = library_indexed[name]
    parameters = set(inspect.signature(function.get_user_function()).parameters) - {"context"}
    assert parameters == {binding.name for binding in function.get_bindings()} == {"msgs" if name in BATCHED else "msg"}
    assert [json.loads(raw)["queueName"] for raw in function.get_raw_bindings()] == [FUNCTIONS[name]]


# --- 2. CampaignLogRouter through the worker ----------------------------------------------------------------


def test_router_forwards_an_opt_out_to_the_opt_out_queue_under_a_deterministic_message_id(worker, install):
    queues = install()

    result = post_campaign_log(worker, activity="Group Opt out", recipient=("contact", CONTACTS[0]))

    assert result == Invocation(succeeded=True, exception_message=None)
    (item,) = queues.messages("opt-out")
    assert item.message_id == f"{LOG_ID}:opt_out"
    assert json.loads(item.body)["recipient"] == {"table": "contact", "id": CONTACTS[0]}
    assert queues.messages("bounce") == queues.messages("rejected") == []


def test_router_forwards_a_hard_bounce_to_the_bounce_queue(worker, install):
    queues = install()

    result = post_campaign_log(worker, activity="Hard Bounce", recipient=("contact", CONTACTS[1]))

    assert result.succeeded
    (item,) = queues.messages("bounce")
    assert item.message_id == f"{LOG_ID}:bounce"
    assert json.loads(item.body)["recipient"] == {"table": "contact", "id": CONTACTS[1]}
    assert queues.messages("opt-out") == []


def test_router_completes_a_non_json_body_after_keeping_a_copy_with_the_reason_on_the_rejected_queue(worker, install):
    queues = install()
    body = b"this is not JSON"

    result = worker.invoke_service_bus(
        "CampaignLogRouter", body, message_id="sb-bad-1", application_properties=DATAVERSE_PROPERTIES
    )

    assert result.succeeded, "a permanent problem completes the message (a retry cannot help)"
    (copy,) = queues.messages("rejected")
    assert copy.body == body
    assert copy.application_properties["rejected_reason"]
    assert copy.application_properties["original_message_id"] == "sb-bad-1"
    assert queues.messages("opt-out") == queues.messages("bounce") == []


def test_router_completes_an_open_without_sending_anything(worker, install):
    queues = install()

    result = post_campaign_log(worker, activity="Open")

    assert result.succeeded
    assert [queues.messages(q) for q in ("opt-out", "bounce", "rejected")] == [[], [], []]


def test_router_fails_when_the_forward_cannot_be_sent_so_service_bus_redelivers(worker, install):
    install(sender=FailingSender())

    result = post_campaign_log(worker, activity="Group Opt out")

    assert not result.succeeded
    assert "ConnectionError" in result.exception_message
    assert "Service Bus unreachable" in result.exception_message


# --- 3. portal toggles --------------------------------------------------------------------------------------


def test_switching_off_bulk_email_opt_out_stops_forwarding_opt_outs_but_not_bounces(worker, install):
    queues = install({"AzureWebJobs.BulkEmailOptOut.Disabled": "true"})

    opt_out = post_campaign_log(worker, activity="Group Opt out", recipient=("contact", CONTACTS[0]))
    bounce = post_campaign_log(worker, activity="Hard Bounce", recipient=("contact", CONTACTS[1]))

    assert opt_out.succeeded and bounce.succeeded
    assert queues.messages("opt-out") == []
    assert [json.loads(m.body)["recipient"]["id"] for m in queues.messages("bounce")] == [CONTACTS[1]]


# --- 4. BulkEmailOptOut through the worker (a batch of messages), against the Dataverse stand-in ------------


def opt_out_work_items(worker: Worker, install, recipients: list[str]) -> list[OutboundMessage]:
    """The work items CampaignLogRouter puts on OPT_OUT_QUEUE for Group Opt outs of these contacts."""
    queues = install()
    for n, recipient in enumerate(recipients):
        log_id = f"5c1e8a72-4f10-f011-998a-6045bd0f{n:04x}"
        assert post_campaign_log(
            worker, activity="Group Opt out", recipient=("contact", recipient), log_id=log_id
        ).succeeded
    return queues.messages("opt-out")


def deliver_batch(worker: Worker, items: list[OutboundMessage], **kwargs) -> Invocation:
    return worker.invoke_service_bus_batch(
        "BulkEmailOptOut", [m.body for m in items], message_ids=[m.message_id for m in items], **kwargs
    )


def test_a_batch_of_opt_outs_is_written_with_one_request(worker, install, standin):
    items = opt_out_work_items(worker, install, [CONTACTS[0], CONTACTS[1], CONTACTS[0], DELETED_CONTACT])
    queues = install(dataverse(standin))

    result = deliver_batch(worker, items)

    assert result.succeeded, result.exception_message
    assert standin.row("contact", CONTACTS[0])["donotbulkemail"] is True
    assert standin.row("contact", CONTACTS[1])["donotbulkemail"] is True
    assert standin.row("contact", DELETED_CONTACT) is None, "a deleted recipient is never re-created"
    assert [r.path for r in standin.requests] == ["/api/data/v9.2/$batch"]
    assert len(standin.writes) == 2, "the repeated recipient is written once"
    assert queues.messages("rejected") == [] and standin.client_bugs == []


def test_a_batch_retries_a_503_in_process_and_succeeds(worker, install, standin):
    items = opt_out_work_items(worker, install, [CONTACTS[0]])
    standin.inject(Fault(status=503))
    install(dataverse(standin))

    result = deliver_batch(worker, items)

    assert result.succeeded, result.exception_message
    # One opt-out: its PATCH goes as itself (no $batch of one), answered 503, then 204.
    assert [(r.method, r.status) for r in standin.requests] == [("PATCH", 503), ("PATCH", 204)]
    assert standin.row("contact", CONTACTS[0])["donotbulkemail"] is True


def test_while_dataverse_stays_unavailable_each_opt_out_is_put_back_alone_and_the_batch_completes(
    worker, install, standin
):
    items = opt_out_work_items(worker, install, [CONTACTS[0], CONTACTS[1]])
    standin.set_fault_rate(1.0, [Fault(status=503)])
    queues = install(dataverse(standin))

    result = deliver_batch(worker, items)

    assert result.succeeded, result.exception_message
    assert len(standin.requests) == int(FAST_RETRIES["DATAVERSE_MAX_ATTEMPTS"])
    assert sorted(m.message_id for m in queues.messages("opt-out")) == sorted(f"{m.message_id}:r1" for m in items)
    assert all(m.scheduled_enqueue_time is not None for m in queues.messages("opt-out"))
    assert standin.row("contact", CONTACTS[0])["donotbulkemail"] is False
    assert queues.messages("rejected") == [], "a transient failure is retried, never rejected"


def test_when_service_bus_fails_too_the_batch_fails_so_service_bus_redelivers_it(worker, install, standin):
    items = opt_out_work_items(worker, install, [CONTACTS[0]])
    standin.set_fault_rate(1.0, [Fault(status=503)])
    install(dataverse(standin), sender=FailingSender())

    result = deliver_batch(worker, items)

    assert not result.succeeded
    assert "Service Bus unreachable" in result.exception_message


# --- 5. OptOutAudit through the worker ----------------------------------------------------------------------


def _drifted_opt_outs(standin: DataverseStandIn, now: datetime) -> list[str]:
    """Two contacts who opted out yesterday; only the first is still opted out. Plus one log of last month."""
    from optout_dev.standin import SAMPLES_ACTIVITY_OPTIONS

    code = {label: c for c, label in SAMPLES_ACTIVITY_OPTIONS.items()}["Spam Report"]
    contacts = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"timer/{n}")) for n in range(3)]
    for n, contact in enumerate(contacts):
        standin.add_row("contact", contact, donotbulkemail=n == 0, emailaddress1=f"p{n}@timer.example")
        created = now - timedelta(days=1 if n < 2 else 30)
        standin.add_row(
            "concep_emailcampaignlog",
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"timer/log/{n}")),
            concep_activitytype=code,
            **{"concep_activitytype@OData.Community.Display.V1.FormattedValue": "Spam Report"},
            createdon=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            concep_contactid=contact,
        )
    return contacts


@pytest.fixture
def audit_lines():
    capture = Capture()
    logger = logging.getLogger("optout")
    logger.addHandler(capture)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line[len("audit ") :]) for line in capture.lines if line.startswith("audit ")]
    logger.removeHandler(capture)
    logger.setLevel(previous)


AUDIT_ON = {"AzureWebJobs.OptOutAudit.Disabled": "false", "RECIPIENT_COLUMNS": "concep_contactid"}


def test_the_audit_reports_drift_in_its_lookback_window_and_writes_nothing_by_default(
    worker, install, make_standin, audit_lines
):
    standin = make_standin(campaign_log=True, recipients={})
    contacts = _drifted_opt_outs(standin, datetime.now(UTC))
    install(dataverse(standin) | AUDIT_ON)

    assert worker.invoke_timer("OptOutAudit").succeeded

    (line,) = audit_lines()
    assert (line["opt_outs"], line["recipients"], line["honoured"], line["not_honoured"]) == (2, 2, 1, 1)
    assert line["dry_run"] is True and line["clean"] is False and line["fixed"] == 0
    assert not standin.writes
    assert standin.row("contact", contacts[1])["donotbulkemail"] is False
    assert "@" not in json.dumps(line)


def test_with_audit_fix_the_audit_repairs_the_drift_once_and_the_next_run_is_clean(
    worker, install, make_standin, audit_lines
):
    standin = make_standin(campaign_log=True, recipients={})
    contacts = _drifted_opt_outs(standin, datetime.now(UTC))
    install(dataverse(standin) | AUDIT_ON | {"AUDIT_FIX": "true", "AUDIT_LOOKBACK_DAYS": "60"})

    assert worker.invoke_timer("OptOutAudit").succeeded
    assert worker.invoke_timer("OptOutAudit", past_due=True).succeeded

    first, second = audit_lines()
    assert (first["opt_outs"], first["not_honoured"], first["fixed"], first["clean"]) == (3, 2, 2, True)
    assert (second["opt_outs"], second["not_honoured"], second["fixed"], second["clean"]) == (3, 0, 0, True)
    assert [standin.row("contact", c)["donotbulkemail"] for c in contacts] == [True, True, True]


def test_the_audit_is_off_until_its_toggle_is_set_to_false(worker, install, make_standin, audit_lines):
    standin = make_standin(campaign_log=True, recipients={})
    _drifted_opt_outs(standin, datetime.now(UTC))
    install(dataverse(standin) | {"RECIPIENT_COLUMNS": "concep_contactid"})  # no toggle at all

    assert worker.invoke_timer("OptOutAudit").succeeded

    assert audit_lines() == []
    assert standin.requests == []


def test_an_audit_that_cannot_read_the_logs_fails_the_run_and_says_so_on_its_line(
    worker, install, make_standin, audit_lines
):
    standin = make_standin(campaign_log=True, recipients={})
    _drifted_opt_outs(standin, datetime.now(UTC))
    install(dataverse(standin) | AUDIT_ON | {"CAMPAIGN_LOG_ENTITY_SET": "concep_nosuchtables"})

    result = worker.invoke_timer("OptOutAudit")

    assert not result.succeeded
    (line,) = audit_lines()
    assert line["error"] and "not_honoured" not in line
