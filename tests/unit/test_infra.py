"""The azd template (infra/) against the code: settings, queues, roles, alerts and the KQL that reads telemetry.

The Bicep files are parsed with pycep (checkov's own Bicep parser): no Bicep CLI or Azure needed. What only
Azure can confirm is listed in docs/deployment.md.
"""

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
from pycep import BicepParser

from optout_core.app import telemetry
from optout_core.app.outcome import OutcomeRecord
from optout_core.domain.model import FUNCTIONS
from optout_core.domain.settings_spec import SPEC
from tools import appsettings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DEFAULTS = {s.name: s.default for s in SPEC}
REGENERATE = f"infra/app-settings.json is stale: run `{appsettings.COMMAND}` (or ./dev appsettings) and commit it"


@pytest.fixture(scope="module")
def bicep():
    return BicepParser().parse(file_path=INFRA / "resources.bicep")


def literal(value):
    assert not isinstance(value, dict), f"expected a literal, found the expression {value}"
    return value


def test_the_generated_settings_file_matches_the_settings_list():
    assert (INFRA / "app-settings.json").read_text(encoding="utf-8") == appsettings.render(), REGENERATE


def test_every_setting_the_code_reads_reaches_the_app_with_its_default_or_from_the_template():
    generated = json.loads((INFRA / "app-settings.json").read_text(encoding="utf-8"))
    secrets = {s.name for s in SPEC if s.secret}
    covered = set(generated["defaults"]) | set(generated["fromTemplate"]) | set(generated["secretsLeftOut"])
    covered |= set(generated["adminOnly"])  # read only by setup/check on the administrator's machine
    assert covered == set(DEFAULTS), REGENERATE
    assert not set(generated["adminOnly"]) & set(generated["defaults"])
    assert generated["defaults"] == {k: DEFAULTS[k] for k in generated["defaults"]}, REGENERATE
    assert set(generated["secretsLeftOut"]) == secrets  # Service Bus and Dataverse use the identity instead


def test_the_template_sets_exactly_the_settings_the_generator_says_it_does(bicep):
    template = bicep["variables"]["templateSettings"]["value"]
    assert set(template) == set(appsettings.FROM_TEMPLATE) | set(appsettings.PLATFORM)
    # ... each either read by the code, or a platform setting the code does not read
    assert set(appsettings.FROM_TEMPLATE) <= set(DEFAULTS)
    assert not set(appsettings.PLATFORM) & set(DEFAULTS)
    properties = bicep["resources"]["appSettings"]["config"]["properties"]["function"]
    assert properties["type"] == "union"  # code defaults, then the operator's overrides, then the template's
    assert [p for p in properties["parameters"].values() if p] == [
        {"operator": {"type": "property_accessor", "operands": {"operand_1": "generated", "operand_2": "defaults"}}},
        "appSettingOverrides",
        "templateSettings",
    ]
    loaded = bicep["variables"]["generated"]["value"]["function"]
    assert loaded["type"] == "load_json_content" and loaded["parameters"]["file_path"] == "app-settings.json"


def test_no_platform_setting_flex_refuses_is_set(bicep):
    template = bicep["variables"]["templateSettings"]["value"]
    refused = {
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
        "AzureWebJobsStorage",
    }
    assert not refused & (set(template) | set(appsettings.document()["defaults"]))


def queue(bicep, name):
    (found,) = [
        r["config"]
        for r in bicep["resources"].values()
        if r["type"] == "Microsoft.ServiceBus/namespaces/queues" and r["config"]["name"] == name
    ]
    return found["properties"]


def seconds(duration):
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration)
    assert match, duration
    hours, minutes, secs = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


def test_the_four_queues_are_the_code_defaults_with_the_properties_the_app_relies_on(bicep):
    names = {r["config"]["name"] for r in bicep["resources"].values() if r["type"].endswith("/queues")}
    assert names == {DEFAULTS[q] for q in ("CAMPAIGN_LOG_QUEUE", "OPT_OUT_QUEUE", "BOUNCE_QUEUE", "REJECTED_QUEUE")}
    for name in names:
        properties = queue(bicep, name)
        assert literal(properties["deadLetteringOnMessageExpiration"]) is True, name
        assert literal(properties["maxDeliveryCount"]) == 10, name
        assert seconds(literal(properties["lockDuration"])) <= 300, name  # the service's maximum
    for work in (DEFAULTS["OPT_OUT_QUEUE"], DEFAULTS["BOUNCE_QUEUE"]):  # MessageId <log id>:<route> is dropped twice
        assert queue(bicep, work)["requiresDuplicateDetection"] is True
    assert queue(bicep, DEFAULTS["REJECTED_QUEUE"])["defaultMessageTimeToLive"].startswith("P10675199D")  # never


def test_every_function_of_the_table_has_its_trigger_queue_and_receiver_role(bicep):
    """The template's queues are written by hand: a function added to the table fails here until its queue, its
    Receiver role and its lock (long enough for a batch) are in infra/resources.bicep."""
    queues = {r["config"]["name"] for r in bicep["resources"].values() if r["type"].endswith("/queues")}
    assert queues == {f.queue_default for f in FUNCTIONS} | {DEFAULTS["REJECTED_QUEUE"]}
    symbols = {r["config"]["name"]: name for name, r in bicep["resources"].items() if r["type"].endswith("/queues")}
    assignments = set(role_assignments(bicep).values())
    for function in FUNCTIONS:
        assert (symbols[function.queue_default], "serviceBusDataReceiver") in assignments, function.name
        if function.route is not None:  # a work queue: the router sends to it, duplicates of a work item dropped
            assert (symbols[function.queue_default], "serviceBusDataSender") in assignments, function.name
            assert queue(bicep, function.queue_default)["requiresDuplicateDetection"] is True, function.name


def test_the_opt_out_lock_outlasts_a_batch_budget_and_one_request_in_flight(bicep):
    """The host does not renew a batch's locks: BulkEmailOptOut must be done (and have put back) before."""
    lock = seconds(queue(bicep, DEFAULTS["OPT_OUT_QUEUE"])["lockDuration"])
    assert lock > int(DEFAULTS["OPT_OUT_BATCH_BUDGET_SECONDS"]) + int(DEFAULTS["DATAVERSE_TIMEOUT_SECONDS"])


def role_assignments(bicep):
    found = {}
    for name, resource in bicep["resources"].items():
        if resource["type"] == "Microsoft.Authorization/roleAssignments":
            config = resource["config"].get("config", resource["config"])  # a conditional one nests its body
            role = config["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
            found[name] = (config["scope"], role["operator"]["operands"]["operand_2"])
    return found


def test_the_identity_receives_where_it_is_triggered_and_sends_where_it_writes(bicep):
    assignments = set(role_assignments(bicep).values())
    queues = {"campaignLogQueue", "optOutQueue", "bounceQueue", "rejectedQueue"}
    receives = {scope for scope, role in assignments if role == "serviceBusDataReceiver"}
    sends = {scope for scope, role in assignments if role == "serviceBusDataSender"}
    owns = {scope for scope, role in assignments if role == "serviceBusDataOwner"}
    assert receives == {"campaignLogQueue", "optOutQueue", "bounceQueue"}
    assert sends == {"optOutQueue", "bounceQueue", "rejectedQueue"}
    assert owns == receives  # Manage for the scale controller, on the trigger queues only
    assert (
        not {scope for scope, _ in assignments} - queues - {"storage", "appInsights", "vault"}
    )  # no namespace-wide role


def test_dataverse_gets_a_send_only_rule_on_campaign_log_and_its_key_goes_to_key_vault_only(bicep):
    rules = [r for r in bicep["resources"].values() if r["type"].endswith("/authorizationRules")]
    assert [(r["config"]["parent"], r["config"]["properties"]["rights"]) for r in rules] == [
        ("campaignLogQueue", ["Send"])
    ]
    secret = bicep["resources"]["dataverseEndpointSecret"]["config"]
    assert secret["parent"] == "vault" and "listKeys" in json.dumps(secret["properties"]["value"]).replace(
        "list_keys", "listKeys"
    )
    for path in (INFRA / "main.bicep", INFRA / "resources.bicep"):
        outputs = BicepParser().parse(file_path=path)["outputs"]
        assert not [n for n, o in outputs.items() if "list_keys" in json.dumps(o)], f"a key in an output of {path.name}"


def test_the_alerts_cover_dead_letters_rejected_backlog_outcomes_and_dataverse_sign_in(bicep):
    resources = bicep["resources"]
    metric = {
        n: r["config"]["properties"]["criteria"]["allOf"][0]
        for n, r in resources.items()
        if r["type"] == "Microsoft.Insights/metricAlerts"
    }
    assert metric["deadLetterAlert"]["metricName"] == "DeadletteredMessages"
    assert len(metric["deadLetterAlert"]["dimensions"][0]["values"]) == 4
    assert (metric["rejectedAlert"]["metricName"], metric["rejectedAlert"]["timeAggregation"]) == (
        "ActiveMessages",
        "Maximum",
    )
    assert (metric["backlogAlert"]["metricName"], metric["backlogAlert"]["timeAggregation"]) == (
        "ActiveMessages",
        "Minimum",
    )
    logs = [n for n, r in resources.items() if r["type"] == "Microsoft.Insights/scheduledQueryRules"]
    assert sorted(logs) == ["auditNotHonouredAlert", "dataverseAuthAlert", "failedOrRejectedAlert"]
    for r in resources.values():
        if r["type"] in ("Microsoft.Insights/metricAlerts", "Microsoft.Insights/scheduledQueryRules"):
            assert "actionGroup" in json.dumps(r["config"]["properties"]["actions"])


def kql_texts():
    yield "README.md", (ROOT / "README.md").read_text(encoding="utf-8")
    yield "infra/resources.bicep", (INFRA / "resources.bicep").read_text(encoding="utf-8")
    yield "infra/workbook.json", (INFRA / "workbook.json").read_text(encoding="utf-8")


def _audit_line_fields():
    from datetime import UTC, datetime

    from optout_core.app.audit import audit_fields
    from optout_core.domain.audit import Report, Window

    window = Window(datetime(2025, 11, 1, tzinfo=UTC), datetime(2025, 11, 8, tzinfo=UTC))
    report = Report(window, 0, 0, 0, (), (), (), 0, (), 0, True)
    return set(audit_fields(report)) | {"function", "duration_ms", "error"}  # telemetry.audit_run adds these


def test_every_query_reads_fields_and_metrics_the_app_emits():
    emitted = {f.name for f in fields(OutcomeRecord)}
    audited = _audit_line_fields()
    metrics = {telemetry.OUTCOMES, telemetry.DURATION, telemetry.END_TO_END}
    metrics |= {telemetry.AUDIT_METRICS + name for name in telemetry.AUDIT_COUNTS}
    for where, text in kql_texts():
        text = text.replace('\\"', '"')
        used = set(re.findall(r"\bo\.(\w+)", text)) | set(re.findall(r"customDimensions\.(\w+)", text))
        assert used, f"no outcome query in {where}"
        assert used <= emitted | audited, f"{where} queries fields the app does not emit: {used - emitted - audited}"
        audit_used = set(re.findall(r"\ba\.(\w+)", text))
        assert audit_used <= audited, f"{where} queries audit fields the app does not emit: {audit_used - audited}"
        named = set(re.findall(r'name == "(optout\.[\w.]+)"', text))
        assert named <= metrics, f"{where} queries metrics the app does not emit: {named - metrics}"
    assert (
        "Dataverse answered" in (ROOT / "optout_core/dataverse/errors.py").read_text()
    )  # what the 401/403 alert matches


AZURE_FACTS = ROOT / "tests" / "contracts" / "facts" / "azure"


def platform_fact(name):
    return json.loads((AZURE_FACTS / "platform.json").read_text(encoding="utf-8"))[name]


@pytest.fixture(scope="module")
def main_bicep():
    return BicepParser().parse(file_path=INFRA / "main.bicep")


def allowed(parameter):
    found = [d["argument"] for d in parameter["decorators"] if d["type"] == "allowed"]
    return found[0] if found else None


def test_metric_alerts_on_messages_that_wait_for_a_person_do_not_resolve_themselves(bicep):
    """Metric alerts resolve themselves unless told not to (autoMitigate defaults to true): a dead letter or a
    message on rejected still waits when the metric dips, and nothing but a person takes it off."""
    assert platform_fact("metric_alert_auto_mitigate_default")["value"] is True
    for name in ("deadLetterAlert", "rejectedAlert"):
        assert bicep["resources"][name]["config"]["properties"].get("autoMitigate") is False, name


def test_location_is_limited_to_the_regions_that_offer_flex_consumption(main_bicep):
    facts = json.loads((AZURE_FACTS / "flex-regions.json").read_text(encoding="utf-8"))
    regions = allowed(main_bicep["parameters"]["location"])
    assert regions, "location takes any region: a region without Flex Consumption fails only at site creation"
    assert set(regions) <= set(facts["regions"]) - set(facts["canary"])


def test_no_azd_parameter_reads_a_variable_python_images_set_and_every_default_is_allowed(main_bicep):
    """azd fills ${NAME} from the process environment too: a Python image's PYTHON_VERSION=3.13.11 would win."""
    taken = set(platform_fact("python_image_environment")["names"])
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    for name, entry in parameters.items():
        match = re.fullmatch(r"\$\{(\w+)(?:=(.*))?\}", entry["value"])
        assert match, name
        assert match.group(1) not in taken, f"{name} reads {match.group(1)}, which Python's images set"
        choices = allowed(main_bicep["parameters"][name])
        if match.group(2) is not None and choices:
            assert match.group(2) in choices, name


def host_json():
    return json.loads((ROOT / "host.json").read_text(encoding="utf-8"))


def timespan(value):
    hours, minutes, secs = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(secs)


def test_the_lock_is_renewed_for_as_long_as_a_function_may_run():
    """Past maxAutoLockRenewalDuration the lock lapses and a still-running message is delivered again."""
    document = host_json()
    renewal = timespan(document["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"])
    assert renewal >= timespan(document["functionTimeout"])


def test_host_json_holds_the_concurrency_the_template_sets_so_the_scale_controller_reads_the_same(bicep, main_bicep):
    """Target-based scaling reads maxConcurrentCalls from host.json; the template's app setting sets the runtime's.
    At the template's defaults both are the same number."""
    variables = bicep["variables"]
    assert "maxConcurrentCalls" in json.dumps(variables["templateSettings"]["value"])
    budget = main_bicep["parameters"]["dataverseConcurrencyBudget"]["default"]
    instances = main_bicep["parameters"]["maximumInstanceCount"]["default"]
    groups = variables["dataverseFunctionGroups"]["value"]
    per_process = max(1, budget // (groups * instances))
    assert host_json()["extensions"]["serviceBus"]["maxConcurrentCalls"] == max(per_process, budget // groups)


HISTOGRAMS = (telemetry.DURATION, telemetry.END_TO_END)


def test_a_histograms_mean_divides_the_summed_sums_by_the_summed_counts():
    """Each customMetrics row of a histogram is one interval's sum and count: avg(value) averages sums."""
    assert platform_fact("histogram_rows")["source"]
    for where, text in kql_texts():
        text = text.replace('\\"', '"')
        for query in re.findall(r"customMetrics[^`'\n]*", text):
            if any(f'"{name}"' in query for name in HISTOGRAMS) and "avg" in query:
                assert "avg(value" not in query, f"{where}: {query}"
                assert "sum(valueSum) / sum(valueCount)" in query, f"{where}: {query}"


def test_queries_that_parse_outcome_lines_keep_one_copy_of_each_line():
    """With the exporter loaded each line arrives twice: the host's copy and the distro's (with dimensions)."""
    for where, text in kql_texts():
        text = text.replace('\\"', '"')
        for query in re.findall(r"traces \| where message[^`'\n]*", text):
            if "parse_json(substring(message, 8))" in query or "answered 429" in query:
                assert "isempty(customDimensions.outcome)" in query, f"{where}: {query}"


def test_what_data_owner_on_a_queue_also_allows_is_stated_as_residual_risk(bicep):
    """Data Owner (Microsoft.ServiceBus/*) is given for the scale controller; it also reads the queue's keys and
    deletes the queue. docs/security.md names every queue it is given on and what the role also allows."""
    assert platform_fact("service_bus_data_owner")["actions"] == ["Microsoft.ServiceBus/*"]
    owned = {scope for scope, role in role_assignments(bicep).values() if role == "serviceBusDataOwner"}
    names = {bicep["resources"][scope]["config"]["name"] for scope in owned}
    rows = [
        line
        for line in (ROOT / "docs" / "security.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| T") and "Azure Service Bus Data Owner" in line
    ]
    assert len(rows) == 1, "one threat row for the identity's Data Owner"
    (row,) = rows
    assert all(f"`{name}`" in row for name in names), names
    rules = {r["config"]["name"] for r in bicep["resources"].values() if r["type"].endswith("/authorizationRules")}
    assert all(f"`{rule}`" in row for rule in rules) and "delete" in row
