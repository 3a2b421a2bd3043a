"""optout: the Azure Functions app. Binds three Service Bus triggers and one timer to optout_core; nothing else.

Dataverse posts each new Email Campaign Log row to CAMPAIGN_LOG_QUEUE. CampaignLogRouter decides and
forwards a work item to OPT_OUT_QUEUE or BOUNCE_QUEUE (or ignores it, or keeps it on REJECTED_QUEUE with
the reason). BulkEmailOptOut (a batch of messages at a time) and BounceDetail write to the recipient
through the Dataverse Web API.
Returning completes the message; raising sends it back to Service Bus for another delivery. Each
function is switched off alone with its portal toggle, AzureWebJobs.<name>.Disabled.
OptOutAudit runs on the AUDIT_SCHEDULE timer: it proves the last AUDIT_LOOKBACK_DAYS of opt-outs are honoured
(repairing when AUDIT_FIX is true). It ships switched off: its toggle is true until someone sets it to false.
"""

from typing import List  # noqa: UP035 - the worker refuses list[...] as a binding annotation

import azure.functions as func

from optout_core.domain.model import AUDIT, BOUNCE, OPT_OUT, ROUTER
from optout_core.servicebus.envelopes import InboundMessage

# Each function imports its handler on its first call, not here: indexing (every cold start, and a switched-off
# function's too) then loads only azure.functions and the function table.

CONNECTION = "ServiceBusConnection"  # app settings prefix: a connection string, or __fullyQualifiedNamespace
app = func.FunctionApp()


@app.function_name(name=ROUTER.name)  # CampaignLogRouter
@app.service_bus_queue_trigger(arg_name="msg", connection=CONNECTION, queue_name=f"%{ROUTER.queue_setting}%")
def campaign_log_router(msg: func.ServiceBusMessage) -> None:
    """Parent workflow: route a new campaign log to opt-out or bounce, or ignore/reject it with a reason."""
    from optout_core.app.router import route
    from optout_core.app.services import services

    route(InboundMessage.from_functions(msg), services())


@app.function_name(name=OPT_OUT.name)  # BulkEmailOptOut
@app.service_bus_queue_trigger(
    arg_name="msgs", connection=CONNECTION, queue_name=f"%{OPT_OUT.queue_setting}%", cardinality="many"
)
def bulk_email_opt_out(msgs: List[func.ServiceBusMessage]) -> None:  # noqa: UP006 - the worker requires List
    """Child workflow: set each recipient's Bulk Email to Do Not Allow, a whole backlog per $batch."""
    from optout_core.app.opt_out import opt_out_batch
    from optout_core.app.services import services

    opt_out_batch([InboundMessage.from_functions(msg) for msg in msgs], services())


@app.function_name(name=BOUNCE.name)  # BounceDetail
@app.service_bus_queue_trigger(arg_name="msg", connection=CONNECTION, queue_name=f"%{BOUNCE.queue_setting}%")
def bounce_detail(msg: func.ServiceBusMessage) -> None:
    """Bounce-detail workflow: record the bounce on the recipient (or only log it)."""
    from optout_core.app.bounce import record_bounce
    from optout_core.app.services import services

    record_bounce(InboundMessage.from_functions(msg), services())


@app.function_name(name=AUDIT.name)  # OptOutAudit
@app.timer_trigger(arg_name="timer", schedule=f"%{AUDIT.schedule_setting}%", run_on_startup=False, use_monitor=True)
def opt_out_audit(timer: func.TimerRequest) -> None:
    """Scheduled compliance audit: are the window's opt-outs honoured on their recipients (and repair them)."""
    from optout_core.app.audit import run_scheduled
    from optout_core.app.services import services

    run_scheduled(services())
