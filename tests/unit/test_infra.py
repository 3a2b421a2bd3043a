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
from optout_core.domain.model import FUNCTIONS, Function, Route
from optout_core.domain.settings_spec import SPEC, spec
from tools import appsettings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DEFAULTS = {s.name: s.default for s in SPEC}
REGENERATE = f"infra/app-settings.json is stale: run `{appsettings.COMMAND}` (or ./dev appsettings) and commit it"
REGENERATE_QUEUES = f"infra/queues.json is stale: run `{appsettings.COMMAND}` (or ./dev appsettings) and commit it"


@pytest.fixture(scope="module")
def bicep():
    return BicepParser().parse(file_path=INFRA / "resources.bicep")


def literal(value):
    assert not isinstance(value, dict), f"expected a literal, found the expression {value}"
    return value


def committed_queues():
    return json.loads((INFRA / "queues.json").read_text(encoding="utf-8"))


# ---- The template's loops, evaluated over a queues.json document ------------------------------------------------
# resources.bicep loops over queues.json for the queues, their role assignments and the alerts' queue lists. These
# helpers evaluate pycep's parse of those loops for each entry, as Bicep would at deployment: the loop variable's
# fields (`q.name`), `queues[i]` (the i-th queue, by its name), `queueFile.<field>` and literals.


def accessor(value, kind):
    return value.get("operator", {}).get("type") == kind and value["operator"]["operands"]


def evaluate(value, document, item=None, index=None, names=("q", "i")):
    """The value of a pycep expression in the template's loops; a queue resource evaluates to its name."""
    if not isinstance(value, dict):
        return {names[1]: index}.get(value, value) if isinstance(value, str) else value
    if operands := accessor(value, "property_accessor"):
        owner, field = operands["operand_1"], operands["operand_2"]
        if owner == names[0]:
            return item[field]
        if owner == "queueFile":
            return document[field]
        resolved = evaluate(owner, document, item, index, names)
        return resolved if field == "name" else {"name": resolved, "field": field}
    if operands := accessor(value, "index_accessor"):
        assert operands["operand_1"] == "queues", value
        return document["queues"][evaluate(operands["operand_2"], document, item, index, names)]["name"]
    if "loop_type" in value:  # [for (q, i) in queueList: ...]
        return [evaluate(value["config"], document, q, i, loop_names(value)) for q, i in each(value, document)]
    raise AssertionError(f"not an expression the template's loops use: {value}")


def loop_names(config):
    detail = config["loop_type"]["detail"]
    return detail["item_name"], detail.get("index_name")


def each(config, document):
    """(entry, index) for each entry of queues.json the loop ``config`` deploys (its `if` condition true)."""
    assert config["loop_type"]["detail"]["array_name"] == "queueList"
    for i, q in enumerate(document["queues"]):
        if config["condition"] is None or evaluate(config["condition"], document, q, i, loop_names(config)):
            yield q, i


def instances(bicep, document, resource_type):
    """(symbol, body) of every resource of ``resource_type`` the template deploys, each loop's copies evaluated."""
    for symbol, resource in bicep["resources"].items():
        if resource["type"] != resource_type:
            continue
        config = resource["config"]
        if "loop_type" not in config:
            yield symbol, config.get("config", config)  # a conditional one nests its body
            continue
        for q, i in each(config, document):
            body = config["config"]
            yield symbol, {k: deep(v, document, q, i, loop_names(config)) for k, v in body.items()}


def deep(value, document, item, index, names):
    """``value`` with every accessor that reads the loop variable evaluated; function calls (the `guid` of a
    name) and other expressions as they are."""
    if isinstance(value, dict) and "function" in value:
        return value
    if isinstance(value, dict) and not ("operator" in value or "loop_type" in value):
        return {k: deep(v, document, item, index, names) for k, v in value.items()}
    text = json.dumps(value)
    if f'"{names[0]}"' in text or f'"{names[1]}"' in text:
        return evaluate(value, document, item, index, names)
    return value


def test_the_template_loops_over_the_generated_queue_file(bicep):
    variables = bicep["variables"]
    loaded = variables["queueFile"]["value"]["function"]
    assert loaded["type"] == "load_json_content" and loaded["parameters"]["file_path"] == "queues.json"
    assert accessor(variables["queueList"]["value"], "property_accessor") == {
        "operand_1": "queueFile",
        "operand_2": "queues",
    }
    # every queue of the template is one of the loop's copies: none declared by hand
    declared = [s for s, r in bicep["resources"].items() if r["type"] == "Microsoft.ServiceBus/namespaces/queues"]
    assert declared == ["queues"] and "loop_type" in bicep["resources"]["queues"]["config"]


def test_the_committed_queue_file_is_what_the_generator_writes_from_the_function_table():
    assert (INFRA / "queues.json").read_text(encoding="utf-8") == appsettings.render_queues(), REGENERATE_QUEUES


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


def template_settings(bicep, document):
    """The names of the settings the template sets: the generated queue settings, then its own."""
    union = bicep["variables"]["templateSettings"]["value"]["function"]
    assert union["type"] == "union"
    queue_settings, own = union["parameters"].values()
    return {**evaluate(queue_settings, document), **own}


def test_the_template_sets_exactly_the_settings_the_generator_says_it_does(bicep):
    template = template_settings(bicep, committed_queues())
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


def test_the_queue_settings_name_the_queues_the_template_creates(bicep):
    document = committed_queues()
    template = template_settings(bicep, document)
    created = {body["name"] for _, body in instances(bicep, document, QUEUE)}
    queue_settings = {f.queue_setting for f in FUNCTIONS} | {"REJECTED_QUEUE"}
    assert {template[s] for s in queue_settings} == created
    assert all(template[s] == DEFAULTS[s] for s in queue_settings)  # the code's defaults


def test_no_platform_setting_flex_refuses_is_set(bicep):
    template = template_settings(bicep, committed_queues())
    refused = {
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
        "AzureWebJobsStorage",
    }
    assert not refused & (set(template) | set(appsettings.document()["defaults"]))


QUEUE = "Microsoft.ServiceBus/namespaces/queues"


def queue(bicep, name, document=None):
    """The properties the template gives the queue ``name`` (from the committed queues.json unless given)."""
    (found,) = [b for _, b in instances(bicep, document or committed_queues(), QUEUE) if b["name"] == name]
    return found["properties"]


def queue_names(bicep, document=None):
    return {b["name"] for _, b in instances(bicep, document or committed_queues(), QUEUE)}


def seconds(duration):
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration)
    assert match, duration
    hours, minutes, secs = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


def test_the_four_queues_are_the_code_defaults_with_the_properties_the_app_relies_on(bicep):
    names = queue_names(bicep)
    assert names == {DEFAULTS[q] for q in ("CAMPAIGN_LOG_QUEUE", "OPT_OUT_QUEUE", "BOUNCE_QUEUE", "REJECTED_QUEUE")}
    for name in names:
        properties = queue(bicep, name)
        assert literal(properties["deadLetteringOnMessageExpiration"]) is True, name
        assert literal(properties["maxDeliveryCount"]) == 10, name
        assert seconds(literal(properties["lockDuration"])) <= 300, name  # the service's maximum
    for work in (DEFAULTS["OPT_OUT_QUEUE"], DEFAULTS["BOUNCE_QUEUE"]):  # MessageId <log id>:<route> is dropped twice
        assert queue(bicep, work)["requiresDuplicateDetection"] is True
    assert queue(bicep, DEFAULTS["REJECTED_QUEUE"])["defaultMessageTimeToLive"].startswith("P10675199D")  # never


def test_every_function_of_the_table_has_its_trigger_queue_and_roles(bicep):
    """The template's queues and roles are copies of loops over queues.json, which the function table writes."""
    assert_every_function_has_its_queue_and_roles(bicep, FUNCTIONS, committed_queues())


def assert_every_function_has_its_queue_and_roles(bicep, functions, document):
    assert queue_names(bicep, document) == {f.queue_default for f in functions} | {DEFAULTS["REJECTED_QUEUE"]}
    assignments = set(role_assignments(bicep, document).values())
    for function in functions:
        assert (function.queue_default, "serviceBusDataReceiver") in assignments, function.name
        assert (function.queue_default, "serviceBusDataOwner") in assignments, function.name  # scale controller
        properties = queue(bicep, function.queue_default, document)
        if function.route is not None:  # a work queue: the router sends to it, duplicates of a work item dropped
            assert (function.queue_default, "serviceBusDataSender") in assignments, function.name
            assert properties["requiresDuplicateDetection"] is True, function.name
        else:  # the router's queue: Dataverse sends to it, the app only receives
            assert (function.queue_default, "serviceBusDataSender") not in assignments, function.name
        if function.batch:  # the host does not renew a batch's locks
            budget = int(DEFAULTS["OPT_OUT_BATCH_BUDGET_SECONDS"]) + int(DEFAULTS["DATAVERSE_TIMEOUT_SECONDS"])
            assert seconds(properties["lockDuration"]) > budget, function.name


def test_a_function_added_to_the_table_gets_its_queue_roles_and_alert_entry_from_the_generated_file(bicep, tmp_path):
    unsubscribe = Function(
        "UnsubscribeAll",
        "UNSUBSCRIBE_QUEUE",
        "unsubscribe",
        Route.OPT_OUT,  # any route: the table needs none of its own for the template
        "unsubscribe",
        "UNSUBSCRIBE_ACTIVITY_TYPES",
        "Unsubscribe All",
        batch=True,
    )
    functions = (*FUNCTIONS, unsubscribe)
    written = tmp_path / "queues.json"
    written.write_text(appsettings.render_queues(functions, spec(functions)), encoding="utf-8")
    document = json.loads(written.read_text(encoding="utf-8"))

    assert "unsubscribe" not in queue_names(bicep)  # not in the committed file
    assert_every_function_has_its_queue_and_roles(bicep, functions, document)
    assert template_settings(bicep, document)["UNSUBSCRIBE_QUEUE"] == "unsubscribe"
    assert "unsubscribe" in dead_letter_queues(bicep, document)
    assert document["functionGroups"] == 4  # the Dataverse concurrency formula's divisor


def test_the_opt_out_lock_outlasts_a_batch_budget_and_one_request_in_flight(bicep):
    """The host does not renew a batch's locks: BulkEmailOptOut must be done (and have put back) before."""
    lock = seconds(queue(bicep, DEFAULTS["OPT_OUT_QUEUE"])["lockDuration"])
    assert lock > int(DEFAULTS["OPT_OUT_BATCH_BUDGET_SECONDS"]) + int(DEFAULTS["DATAVERSE_TIMEOUT_SECONDS"])


def role_assignments(bicep, document=None):
    """{(symbol, index): (scope, role)}: a queue scope by the queue's name, any other by its symbol."""
    document = document or committed_queues()
    found = {}
    for n, (name, config) in enumerate(instances(bicep, document, "Microsoft.Authorization/roleAssignments")):
        role = config["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        found[name, n] = (config["scope"], role["operator"]["operands"]["operand_2"])
    return found


def test_the_identity_receives_where_it_is_triggered_and_sends_where_it_writes(bicep):
    """Least privilege, queue by queue: exactly the roles the app needs, no namespace-wide role."""
    assignments = list(role_assignments(bicep).values())
    assert len(assignments) == len(set(assignments))  # no role given twice
    queue = {name: DEFAULTS[name] for name in ("CAMPAIGN_LOG_QUEUE", "OPT_OUT_QUEUE", "BOUNCE_QUEUE", "REJECTED_QUEUE")}
    receives = {scope for scope, role in assignments if role == "serviceBusDataReceiver"}
    sends = {scope for scope, role in assignments if role == "serviceBusDataSender"}
    owns = {scope for scope, role in assignments if role == "serviceBusDataOwner"}
    assert receives == {queue["CAMPAIGN_LOG_QUEUE"], queue["OPT_OUT_QUEUE"], queue["BOUNCE_QUEUE"]}
    assert sends == {queue["OPT_OUT_QUEUE"], queue["BOUNCE_QUEUE"], queue["REJECTED_QUEUE"]}
    assert owns == receives  # Manage for the scale controller, on the trigger queues only
    assert not {scope for scope, _ in assignments} - set(queue.values()) - {"storage", "appInsights", "vault"}


def test_role_assignment_names_are_unique_and_fixed_by_queue_identity_and_role(bicep):
    """A role assignment's name is a guid of its scope, principal and role: the same on every deployment (a new
    name for an existing assignment fails with RoleAssignmentExists), never two copies with one name."""
    for symbol in ("queueReceivers", "queueSenders", "queueScaleOwners"):
        body = bicep["resources"][symbol]["config"]["config"]
        guid = body["name"]["function"]
        assert guid["type"] == "guid", symbol
        scope, principal, role = (p for p in guid["parameters"].values() if p)
        assert accessor(scope, "property_accessor") == {"operand_1": body["scope"], "operand_2": "id"}, symbol
        assert accessor(principal, "property_accessor") == {"operand_1": "identity", "operand_2": "id"}, symbol
        assert role == body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"], symbol


def test_dataverse_gets_a_send_only_rule_on_campaign_log_and_its_key_goes_to_key_vault_only(bicep):
    rules = [r for r in bicep["resources"].values() if r["type"].endswith("/authorizationRules")]
    document = committed_queues()
    assert [(evaluate(r["config"]["parent"], document), r["config"]["properties"]["rights"]) for r in rules] == [
        (DEFAULTS["CAMPAIGN_LOG_QUEUE"], ["Send"])
    ]
    secret = bicep["resources"]["dataverseEndpointSecret"]["config"]
    assert secret["parent"] == "vault" and "listKeys" in json.dumps(secret["properties"]["value"]).replace(
        "list_keys", "listKeys"
    )
    for path in (INFRA / "main.bicep", INFRA / "resources.bicep"):
        outputs = BicepParser().parse(file_path=path)["outputs"]
        assert not [n for n, o in outputs.items() if "list_keys" in json.dumps(o)], f"a key in an output of {path.name}"


def alert_queues(bicep, alert, document):
    (dimension,) = bicep["resources"][alert]["config"]["properties"]["criteria"]["allOf"][0]["dimensions"]
    assert dimension["name"] == "EntityName" and dimension["operator"] == "Include"
    values = dimension["values"]
    return evaluate(values, document) if "loop_type" in values else [evaluate(v, document) for v in values]


def dead_letter_queues(bicep, document):
    return alert_queues(bicep, "deadLetterAlert", document)


def test_the_alerts_cover_dead_letters_rejected_backlog_outcomes_and_dataverse_sign_in(bicep):
    resources = bicep["resources"]
    metric = {
        n: r["config"]["properties"]["criteria"]["allOf"][0]
        for n, r in resources.items()
        if r["type"] == "Microsoft.Insights/metricAlerts"
    }
    document = committed_queues()
    assert metric["deadLetterAlert"]["metricName"] == "DeadletteredMessages"
    assert sorted(dead_letter_queues(bicep, document)) == sorted(queue_names(bicep))  # every queue
    assert alert_queues(bicep, "rejectedAlert", document) == [DEFAULTS["REJECTED_QUEUE"]]
    assert alert_queues(bicep, "backlogAlert", document) == [DEFAULTS["CAMPAIGN_LOG_QUEUE"]]
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
    assert evaluate(variables["dataverseFunctionGroups"]["value"], committed_queues()) == len(FUNCTIONS)
    groups = len(FUNCTIONS)
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
    names = {scope for scope, role in role_assignments(bicep).values() if role == "serviceBusDataOwner"}
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
