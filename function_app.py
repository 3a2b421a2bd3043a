"""optout: the Azure Functions app. Binds three Service Bus triggers to optout_core; nothing else.

Dataverse posts each new Email Campaign Log row to CAMPAIGN_LOG_QUEUE. CampaignLogRouter decides and
forwards a work item to OPT_OUT_QUEUE or BOUNCE_QUEUE (or ignores it, or keeps it on REJECTED_QUEUE with
the reason). BulkEmailOptOut (a batch of messages at a time) and BounceDetail write to the recipient
through the Dataverse Web API.
Returning completes the message; raising sends it back to Service Bus for another delivery. Each
function is switched off alone with its portal toggle, AzureWebJobs.<name>.Disabled.
"""

from typing import List

import azure.functions as func

from optout_core.app import opt_out as bulk
from optout_core.app import pipeline
from optout_core.servicebus.envelopes import InboundMessage
from optout_core.app.services import services

app = func.FunctionApp()


@app.function_name(name="CampaignLogRouter")
@app.service_bus_queue_trigger(arg_name="msg", connection="ServiceBusConnection", queue_name="%CAMPAIGN_LOG_QUEUE%")
def campaign_log_router(msg: func.ServiceBusMessage) -> None:
    """Parent workflow: route a new campaign log to opt-out or bounce, or ignore/reject it with a reason."""
    pipeline.route(InboundMessage.from_functions(msg), services())


@app.function_name(name="BulkEmailOptOut")
@app.service_bus_queue_trigger(arg_name="msgs", connection="ServiceBusConnection", queue_name="%OPT_OUT_QUEUE%",
                               cardinality="many")
def bulk_email_opt_out(msgs: List[func.ServiceBusMessage]) -> None:  # noqa: UP006 — the worker requires typing.List
    """Child workflow: set each recipient's Bulk Email to Do Not Allow, a whole backlog per $batch."""
    bulk.opt_out_batch([InboundMessage.from_functions(msg) for msg in msgs], services())


@app.function_name(name="BounceDetail")
@app.service_bus_queue_trigger(arg_name="msg", connection="ServiceBusConnection", queue_name="%BOUNCE_QUEUE%")
def bounce_detail(msg: func.ServiceBusMessage) -> None:
    """Bounce-detail workflow: record the bounce on the recipient (or only log it)."""
    pipeline.bounce(InboundMessage.from_functions(msg), services())
