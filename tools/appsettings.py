"""Writes every file derived from the app's settings list (optout_core/domain/settings_spec.py, with the
function table's settings):

* infra/app-settings.json, which the Bicep template (infra/resources.bicep) loads, so every setting the code reads
  reaches the Function App with the code's own default;
* local.settings.sample.json, every setting with its default and meaning, for Core Tools runs;
* the settings table of README.md, between its ``settings-table`` markers;
* infra/queues.json, the queues the template creates, with which the app receives from and sends to, written from
  the function table (optout_core/domain/model.py ``FUNCTIONS``): infra/resources.bicep loops over it for the
  queues, their role assignments, the alerts' queue lists and the app settings that name the queues.

    python -m tools.appsettings          (or ./dev appsettings)

tests/unit/test_infra.py and tests/unit/test_settings.py fail, naming this command, when a file and the code
disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optout_core.domain.model import FUNCTIONS, Function
from optout_core.domain.settings_spec import SPEC, Setting

COMMAND = "python -m tools.appsettings"
ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "infra" / "app-settings.json"
QUEUES = ROOT / "infra" / "queues.json"
SAMPLE = ROOT / "local.settings.sample.json"
README = ROOT / "README.md"
TABLE_START = "<!-- settings-table: written by ./dev appsettings from optout_core/domain/settings_spec.py -->"
TABLE_END = "<!-- /settings-table -->"

# Values shown in local.settings.sample.json instead of the default, for settings that have none that works.
PLACEHOLDERS = {
    "DATAVERSE_URL": "https://<your-org>.crm.dynamics.com",
    "ServiceBusConnection__fullyQualifiedNamespace": "<your-namespace>.servicebus.windows.net",
}
# What Core Tools itself needs in local.settings.json (the code does not read these).
HOST_VALUES = {
    "FUNCTIONS_WORKER_RUNTIME": ("python", "Functions host: the worker language."),
    "AzureWebJobsStorage": (
        "UseDevelopmentStorage=true",
        "Functions host: storage for the host's own state (Azurite locally).",
    ),
}

# Settings whose value the template takes from what it creates or from its parameters (infra/resources.bicep,
# `templateSettings`), with the reason. Every other non-secret setting gets the code's default.
# The queue settings are named by the function table (each function's trigger queue) and REJECTED_QUEUE.
REJECTED_SETTING = "REJECTED_QUEUE"
QUEUE_SETTINGS = (*(f.queue_setting for f in FUNCTIONS), REJECTED_SETTING)
FROM_TEMPLATE: dict[str, str] = {
    **dict.fromkeys(QUEUE_SETTINGS, "the name of the queue the template creates (infra/queues.json)"),
    "DATAVERSE_URL": "parameter dataverseUrl",
    "AZURE_CLIENT_ID": "the user-assigned identity: DefaultAzureCredential signs in to Dataverse with it",
    "DATAVERSE_MAX_CONCURRENCY": "derived from parameter dataverseConcurrencyBudget (see the formula)",
    "ServiceBusConnection__fullyQualifiedNamespace": "the namespace the template creates",
    "ServiceBusConnection__credential": "managedidentity: the triggers and the sender use the identity",
    "ServiceBusConnection__clientId": "the user-assigned identity",
}

# Platform settings the template also sets; the code does not read them (not in SPEC).
PLATFORM: dict[str, str] = {
    "AzureWebJobsStorage__credential": "host storage through the identity, no shared key",
    "AzureWebJobsStorage__clientId": "the user-assigned identity",
    "AzureWebJobsStorage__blobServiceUri": "host storage: blob only (Service Bus triggers need no queues/tables)",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "where the host and optout_core/app/telemetry.py send telemetry",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Entra ID ingestion (the component refuses keys)",
    "AzureFunctionsJobHost__extensions__serviceBus__maxConcurrentCalls": (
        "host.json override: per-function concurrency derived from dataverseConcurrencyBudget"
    ),
}


def document(spec: Sequence[Setting] = SPEC) -> dict[str, Any]:
    """The content of infra/app-settings.json for ``spec``."""
    return {
        "generatedBy": f"{COMMAND} - do not edit; regenerate after changing optout_core/domain/settings_spec.py",
        "defaults": {
            s.name: s.default for s in spec if s.scope == "app" and not s.secret and s.name not in FROM_TEMPLATE
        },
        "fromTemplate": sorted(FROM_TEMPLATE),
        # Secrets never become app settings: Service Bus and Dataverse are reached with the managed identity.
        "secretsLeftOut": sorted(s.name for s in spec if s.secret),
        # Read only by the administrator's commands (setup, check) on their own machine.
        "adminOnly": sorted(s.name for s in spec if s.scope == "admin"),
    }


# Queue properties that follow from what a function is (README "Queue properties the app relies on"). The host
# renews a single message's lock while it runs but not a batch's, so a batch function's lock must outlast its time
# budget (OPT_OUT_BATCH_BUDGET_SECONDS) plus one request in flight (DATAVERSE_TIMEOUT_SECONDS) and its put-backs.
LOCK, BATCH_LOCK = "PT1M", "PT3M"
TIME_TO_LIVE = "P14D"
NEVER = "P10675199DT2H48M5.4775807S"  # the service's maximum time to live: a rejected message waits for a person
# A work item is sent with MessageId <log id>:<route>: a second copy within a day is dropped. Elsewhere the
# window is the service's default (10 minutes), which applies only where duplicate detection is on.
DUPLICATE_WINDOW, DEFAULT_DUPLICATE_WINDOW = "P1D", "PT10M"


def queues(functions: tuple[Function, ...] = FUNCTIONS, spec: Sequence[Setting] = SPEC) -> dict[str, Any]:
    """The content of infra/queues.json: one entry per function's trigger queue, then the rejected queue.

    ``receive``: a function is triggered by it (Receiver, and Data Owner for the scale controller's message
    counts); ``send``: the app writes to it (the router forwards work to a routed function's queue, which puts
    back what it could not write yet; every function keeps copies on rejected). Dataverse's Send-only rule goes
    on the router's queue (``dataverseSends``), where Dataverse posts each campaign log.
    """
    entries = [_trigger_queue(f) for f in functions]
    rejected = next(s.default for s in spec if s.name == REJECTED_SETTING)
    # Nothing receives from rejected but a person's redrive; every function sends to it.
    entries.append(_queue(REJECTED_SETTING, rejected, "", receive=False, send=True, time_to_live=NEVER))
    (dataverse,) = [i for i, q in enumerate(entries) if q["dataverseSends"]]
    return {
        "generatedBy": f"{COMMAND} - do not edit; regenerate after changing optout_core/domain/model.py FUNCTIONS",
        "queues": entries,
        # Indexes into queues, for what Bicep cannot look up without lambdas (which its checkers do not parse).
        "dataverseQueue": dataverse,
        "rejectedQueue": len(entries) - 1,
        # Each Service Bus function scales in its own group of instances: the Dataverse concurrency formula's divisor.
        "functionGroups": len(functions),
        "settings": {q["setting"]: q["name"] for q in entries},
    }


def _trigger_queue(f: Function) -> dict[str, Any]:
    routed = f.route is not None  # a work queue: the router sends to it, the function puts back on it
    return _queue(
        f.queue_setting,
        f.queue_default,
        f.name,
        receive=True,
        send=routed,
        dataverse_sends=not routed,
        lock=BATCH_LOCK if f.batch else LOCK,
        deduplicate=routed,
    )


def _queue(
    setting: str,
    name: str,
    function: str,
    *,
    receive: bool,
    send: bool,
    dataverse_sends: bool = False,
    lock: str = LOCK,
    time_to_live: str = TIME_TO_LIVE,
    deduplicate: bool = False,
) -> dict[str, Any]:
    return {
        "setting": setting,
        "name": name,
        "function": function,
        "receive": receive,
        "send": send,
        "dataverseSends": dataverse_sends,
        "lockDuration": lock,
        "defaultMessageTimeToLive": time_to_live,
        "requiresDuplicateDetection": deduplicate,
        "duplicateDetectionHistoryTimeWindow": DUPLICATE_WINDOW if deduplicate else DEFAULT_DUPLICATE_WINDOW,
    }


def render_queues(functions: tuple[Function, ...] = FUNCTIONS, spec: Sequence[Setting] = SPEC) -> str:
    return json.dumps(queues(functions, spec), indent=2, ensure_ascii=False) + "\n"


def render(spec: Sequence[Setting] = SPEC) -> str:
    return json.dumps(document(spec), indent=2, ensure_ascii=False) + "\n"


def sample(spec: Sequence[Setting] = SPEC) -> str:
    """local.settings.sample.json: every setting with its default (a placeholder where none works) and meaning.
    A connection string is a secret: it is described, never given a value in a file that may be copied around."""
    values = {name: value for name, (value, _) in HOST_VALUES.items()}
    meanings = {name: meaning for name, (_, meaning) in HOST_VALUES.items()}
    for setting in spec:
        meanings[setting.name] = setting.meaning
        if setting.name == "ServiceBusConnection":
            meanings[setting.name] += " Leave it out when you use the namespace setting below."
            continue
        values[setting.name] = PLACEHOLDERS.get(setting.name, setting.default)
    document = {"IsEncrypted": False, "Values": values, "Meanings": meanings}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def readme_table(spec: Sequence[Setting] = SPEC) -> str:
    """The README's settings table (markdown), markers included."""
    rows = [TABLE_START, "| setting | default | meaning | example |", "| --- | --- | --- | --- |"]
    for s in spec:
        default = _code(s.default) if s.default else "*(empty)*"
        example = _code(s.example) if s.example else ""
        meaning = s.meaning.replace("|", "\\|")
        rows.append(f"| `{s.name}` | {default} | {meaning} | {example} |".replace(" |  |", " | |"))
    rows.append(TABLE_END)
    return "\n".join(rows)


def _code(value: str) -> str:
    return f"`{value.replace('|', '\\|')}`"


def with_readme_table(readme: str, spec: Sequence[Setting] = SPEC) -> str:
    """``readme`` with the text between its settings-table markers replaced."""
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.DOTALL)
    if len(pattern.findall(readme)) != 1:
        raise SystemExit(f"README.md needs exactly one settings table between {TABLE_START} and {TABLE_END}")
    return pattern.sub(lambda _: readme_table(spec), readme)


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    QUEUES.write_text(render_queues(), encoding="utf-8")
    SAMPLE.write_text(sample(), encoding="utf-8")
    README.write_text(with_readme_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    for path in (OUTPUT, QUEUES, SAMPLE, README):
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
