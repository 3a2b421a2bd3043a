"""``run``, ``demo`` and ``check``: the local pipeline and the administrator's commands."""

import io
import json
from pathlib import Path

from optout_core.cli.check import connect
from optout_core.domain.settings import Settings
from optout_core.domain.workitem import WorkItem
from optout_dev.demo import DELETED, SEED, run_demo, sample_files
from optout_dev.local import LocalPipeline
from optout_dev.messages import ACCOUNTS, CONTACTS, DELETED_CONTACT, LEADS, campaign_log, wire
from optout_dev.standin import Fault
from tests.support.cli import cli, dev_cli
from tests.support.dataverse import standin_env

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = json.loads((ROOT / "samples" / "expected.json").read_text())


def local_for(standin, **env):
    return LocalPipeline(Settings.from_env(standin_env(standin, **env)))


# -- run ---------------------------------------------------------------------------------------------


def test_run_takes_an_opt_out_from_message_to_dataverse(standin):
    result = local_for(standin).run("m.json", wire(campaign_log(activity="Spam Report", recipient=("lead", LEADS[0]))))
    assert (result.outcome, result.route, result.dataverse_requests) == ("applied", "opt_out", 1)
    assert result.recipient == {"table": "lead", "id": LEADS[0]}
    assert standin.row("lead", LEADS[0])["donotbulkemail"] is True


def test_run_takes_a_verified_opt_out_through_its_queue_and_its_put_backs(make_standin):
    from optout_dev.messages import ACTIVITY, ENTITY, LOG_ID

    standin = make_standin(campaign_log=True)
    standin.add_row(
        ENTITY,
        LOG_ID,
        concep_activitytype=ACTIVITY["Spam Report"],
        _concep_recipientid_value=LEADS[0],
        **{
            "concep_activitytype@OData.Community.Display.V1.FormattedValue": "Spam Report",
            "_concep_recipientid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "lead",
        },
    )
    standin.inject(Fault(status=503), times=2)  # the verifying read fails on both tries: put back, then done
    local = LocalPipeline(Settings.from_env(standin_env(standin, VERIFY_CAMPAIGN_LOG="true")), honour_schedule=False)
    result = local.run("m.json", wire(campaign_log(activity="Spam Report", recipient=("lead", LEADS[0]))))
    assert result.outcome == "applied", result.reason
    assert standin.row("lead", LEADS[0])["donotbulkemail"] is True


def test_run_reports_a_deleted_recipient(standin):
    result = local_for(standin).run("m.json", wire(campaign_log(recipient=("contact", DELETED_CONTACT))))
    assert result.outcome == "recipient_missing" and result.dataverse_requests == 1


def test_run_switching_off_the_router_processes_nothing(standin):
    local = local_for(standin, **{"AzureWebJobs.CampaignLogRouter.Disabled": "true"})
    result = local.run("m.json", wire(campaign_log()))
    assert result.outcome == "ignored" and "CampaignLogRouter is switched off" in result.reason
    assert standin.requests == []


def test_run_switching_off_opt_out_leaves_bounces_running(standin):
    local = local_for(
        standin, **{"AzureWebJobs.BulkEmailOptOut.Disabled": "true", "BOUNCE_UPDATE": '{"description": "{detail}"}'}
    )
    opt_out = local.run("a.json", wire(campaign_log(activity="Spam Report")))
    bounce = local.run(
        "b.json",
        wire(
            campaign_log(
                activity="Hard Bounce", log_id=LEADS[1], bounce_reason="550", recipient=("contact", CONTACTS[1])
            )
        ),
    )
    assert opt_out.outcome == "ignored" and "BulkEmailOptOut is switched off" in opt_out.reason
    assert bounce.outcome == "applied"
    assert standin.row("contact", CONTACTS[0])["donotbulkemail"] is False
    assert standin.row("contact", CONTACTS[1])["description"] == "550"


def test_run_a_repeated_log_writes_once(standin):
    local = local_for(standin)
    body = wire(campaign_log(activity="Spam Report"))
    first, again = local.run("a.json", body), local.run("b.json", body)
    assert first.outcome == "applied"
    assert again.outcome == "ignored" and again.reason.startswith("duplicate")
    assert len(standin.writes) == 1


def burst():
    """A burst as Service Bus holds it: three opt-outs (one re-posted), a bounce, an open, a deleted recipient."""
    opt_outs = [
        wire(campaign_log(activity="Spam Report", log_id=CONTACTS[0], recipient=("contact", CONTACTS[0]))),
        wire(campaign_log(activity="Client Opt Out", log_id=LEADS[0], recipient=("lead", LEADS[0]))),
        wire(campaign_log(activity="Group Opt out", log_id=ACCOUNTS[0], recipient=("account", ACCOUNTS[0]))),
    ]
    bounce = wire(
        campaign_log(
            activity="Hard Bounce", log_id=CONTACTS[1], bounce_reason="550", recipient=("contact", CONTACTS[1])
        )
    )
    opened = wire(campaign_log(activity="Open", log_id=CONTACTS[2], recipient=("contact", CONTACTS[2])))
    deleted = wire(campaign_log(activity="Spam Report", log_id=LEADS[1], recipient=("contact", DELETED_CONTACT)))
    bodies = [opt_outs[0], bounce, opt_outs[1], opened, opt_outs[0], deleted, opt_outs[2]]
    return [(f"{n}.json", body) for n, body in enumerate(bodies)]


def test_run_burst_hands_the_opt_outs_to_bulk_email_opt_out_as_one_batch_and_bounces_alone(standin):
    local = local_for(standin, BOUNCE_UPDATE='{"description": "{detail}"}')
    results = local.run_burst(burst())
    assert [r.source for r in results] == [f"{n}.json" for n in range(7)]
    assert [r.outcome for r in results] == [
        "applied", "applied", "applied", "ignored", "ignored", "recipient_missing", "applied"
    ]  # fmt: skip
    assert results[4].reason.startswith("duplicate")  # the re-posted opt-out: dropped by duplicate detection
    # The four opt-outs went to the function together: one $batch of four PATCHes (the deleted recipient's a 404).
    [batch] = [r for r in standin.requests if r.path.endswith("/$batch")]
    assert [(op.method, op.batch) for op in standin.operations] == [("PATCH", batch.batch)] * 4
    # BounceDetail takes one message: its write is a request of its own.
    assert [r.method for r in standin.requests if CONTACTS[1] in r.path] == ["PATCH"]
    assert sorted(row for _, row, _ in standin.writes) == sorted([CONTACTS[0], CONTACTS[1], LEADS[0], ACCOUNTS[0]])


def test_run_burst_puts_a_batch_whose_answer_was_cut_off_back_together_and_writes_each_row_once(standin):
    standin.inject(Fault(cut=True, method="POST", path_contains="/$batch"))  # served, its answer cut mid-body
    local = LocalPipeline(Settings.from_env(standin_env(standin)), honour_schedule=False)
    results = local.run_burst(burst())
    assert [r.outcome for r in results if r.route == "opt_out"] == [
        "applied", "applied", "ignored", "recipient_missing", "applied"
    ]  # fmt: skip
    first, again = [r for r in standin.requests if r.path.endswith("/$batch")]
    assert first.cut and again.status == 200 and not again.cut
    # The put-back copies went again as one batch: their rows read back together, found written, not written again.
    read_back = [op.method for op in standin.operations if op.batch == again.batch]
    assert read_back == ["GET"] * 4, read_back
    assert sorted(row for _, row, _ in standin.writes) == sorted([CONTACTS[0], LEADS[0], ACCOUNTS[0]])


def outage_for(standin, **env):
    """A local pipeline against a stand-in that answers 503 to everything, with a one-minute retry window and
    put-backs delivered at once (the pipeline's clock moves on by the wait skipped)."""
    standin.set_fault_rate(1.0, [Fault(status=503)])
    settings = Settings.from_env(
        standin_env(standin, DATAVERSE_RETRY_WINDOW_SECONDS="60", DATAVERSE_BACKOFF_SECONDS="1", **env)
    )
    return LocalPipeline(settings, honour_schedule=False)


def test_run_a_bounce_follows_the_same_failure_policy_as_an_opt_out(standin):
    local = outage_for(standin, BOUNCE_UPDATE='{"description": "{detail}"}')
    result = local.run("m.json", wire(campaign_log(activity="Hard Bounce")))
    assert result.outcome == "failed" and "retry window closed" in result.reason and "503" in result.reason
    [kept] = local.queues.messages("rejected")
    assert kept.application_properties["outcome"] == "failed"


def test_run_a_trimmed_log_whose_row_cannot_be_read_is_failed_after_its_deliveries(standin):
    standin.inject(Fault(status=503), times=5)
    local = local_for(standin)
    result = local.run("m.json", wire(campaign_log(trimmed=True)))
    assert result.outcome == "failed" and result.dataverse_requests == 2 and "503" in result.reason


def test_an_outage_longer_than_the_retry_window_ends_each_opt_out_as_failed_never_rejected(standin):
    local = outage_for(standin)
    result = local.run("m.json", wire(campaign_log()))
    # Put back with growing delays (1, 2, 4 … s, jittered) until the minute since its first attempt is over.
    assert result.outcome == "failed", result
    assert result.reason.startswith("still failing when its retry window closed: Dataverse answered 503")
    [kept] = local.queues.messages("rejected")
    assert kept.application_properties["outcome"] == "failed"
    assert kept.application_properties["rejected_reason"] == result.reason
    assert 4 <= WorkItem.from_json(kept.body).reschedules <= 12


def test_run_cli_json_contract_and_exit_codes(standin, tmp_path):
    good = tmp_path / "good.json"
    good.write_bytes(wire(campaign_log(activity="Client Opt Out", recipient=("account", ACCOUNTS[0]))))
    env = {"DATAVERSE_URL": standin.url, "DATAVERSE_TOKEN": "local-token", "DATAVERSE_BACKOFF_SECONDS": "0.001"}
    result = dev_cli("run", "--json", str(good), "samples/08-open-contact.json", env=env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(line) for line in lines] == [
        {"source", "log_id", "route", "outcome", "reason", "recipient", "dataverse_requests"}
    ] * 2
    assert [line["outcome"] for line in lines] == ["applied", "ignored"]
    standin.inject(Fault(status=503), times=20)
    second = tmp_path / "second.json"
    second.write_bytes(wire(campaign_log(trimmed=True, log_id=LEADS[0])))  # the router must read the row
    failed = dev_cli("run", "--json", str(second), env={**env, "DATAVERSE_MAX_ATTEMPTS": "2"})
    assert failed.returncode == 1 and json.loads(failed.stdout)["outcome"] == "failed"


def test_run_against_an_unreachable_dataverse_ends_at_the_first_put_back_without_waiting_it_out():
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on: every connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings.from_env(
        {
            "DATAVERSE_URL": f"https://127.0.0.1:{port}",
            "DATAVERSE_TOKEN": "local-token",
            "DATAVERSE_MAX_ATTEMPTS": "2",
            "DATAVERSE_BACKOFF_SECONDS": "0.01",
        }
    )

    def never(seconds):
        raise AssertionError(f"the local runner waited {seconds:.0f} s for a put-back to fall due")

    local = LocalPipeline(settings, follow_put_backs=False, sleep=never)
    result = local.run("m.json", wire(campaign_log(activity="Spam Report", recipient=("lead", LEADS[0]))))
    assert result.outcome == "rescheduled" and result.route == "opt_out"
    [waiting] = local.queues.messages("opt-out")
    assert WorkItem.from_json(waiting.body).reschedules == 1


def test_run_cli_exits_1_when_an_event_was_only_put_back(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    body = tmp_path / "m.json"
    body.write_bytes(wire(campaign_log(activity="Spam Report", recipient=("lead", LEADS[0]))))
    env = {
        "DATAVERSE_URL": f"https://127.0.0.1:{port}",
        "DATAVERSE_TOKEN": "local-token",
        "DATAVERSE_MAX_ATTEMPTS": "2",
        "DATAVERSE_BACKOFF_SECONDS": "0.01",
    }
    result = dev_cli("run", "--json", str(body), env=env)
    assert result.returncode == 1 and json.loads(result.stdout)["outcome"] == "rescheduled"


# -- demo --------------------------------------------------------------------------------------------


def test_demo_runs_every_sample_and_its_numbers_add_up():
    out = io.StringIO()
    results, state = run_demo(out=out)
    report = out.getvalue()
    assert [r.source.split("/")[-1] for r in results] == [p.name for p in sample_files()]
    assert len(results) == len(EXPECTED)
    for r in results:
        name = r.source.split("/")[-1]
        expected = EXPECTED[name]["outcome"]
        if expected == "routed":
            assert r.outcome in ("applied", "recipient_missing"), name
        else:
            assert r.outcome == expected, name
        assert name in report
    applied_opt_outs = {
        (r.recipient["table"], r.recipient["id"]) for r in results if r.outcome == "applied" and r.route == "opt_out"
    }
    do_not_allow = {
        (table, row_id)
        for table, rows in state["rows"].items()
        for row_id, row in rows.items()
        if row["donotbulkemail"]
    }
    assert do_not_allow == applied_opt_outs and len(do_not_allow) == 4
    assert DELETED[1] not in state["rows"]["contact"]
    assert len(state["rows"]["contact"]) + len(state["rows"]["lead"]) + len(state["rows"]["account"]) == len(SEED)
    assert state["requests"] == sum(r.dataverse_requests for r in results)
    assert f"Web API requests: {state['requests']}" in report
    assert f"{len(results)} messages" in report


def test_demo_command_exits_0_and_prints_the_table_and_final_state():
    result = dev_cli("demo", env={})
    assert result.returncode == 0, result.stderr
    assert "Do Not Allow" in result.stdout and "recipient_missing" in result.stdout
    assert result.stderr == ""


# -- check -------------------------------------------------------------------------------------------


def test_check_prints_every_setting_with_secrets_masked():
    result = cli("check", env={"DATAVERSE_URL": "http://127.0.0.1:1", "DATAVERSE_TOKEN": "sekrit-value"})
    assert result.returncode == 0
    assert "sekrit-value" not in result.stdout
    assert "DATAVERSE_TOKEN" in result.stdout and "***" in result.stdout
    assert "OPT_OUT_ACTIVITY_TYPES" in result.stdout and "Spam Report;Group Opt out;Client Opt Out" in result.stdout


def test_check_names_an_invalid_setting_and_exits_1():
    result = cli("check", env={"OPT_OUT_UPDATE": "nope"})
    assert result.returncode == 1 and "OPT_OUT_UPDATE" in result.stdout


def test_check_connect_signs_in_then_reports_what_the_environment_lacks(standin):
    result = cli("check", "--connect", env={"DATAVERSE_URL": standin.url, "DATAVERSE_TOKEN": "local-token"})
    assert f"OK       connected as application user {standin.user_id}" in result.stdout
    # This stand-in serves no campaign log table and no registration (tests/integration/test_admin_cli.py has both).
    assert "ERROR    table concep_emailcampaignlog does not exist" in result.stdout
    assert result.returncode == 1


def settings_for(url, **env):
    return Settings.from_env({"DATAVERSE_URL": url, "DATAVERSE_TOKEN": "local-token", **env})


def test_check_connect_explains_a_missing_application_user(make_standin):
    diagnosis = connect(settings_for(make_standin(app_user=False).url))
    assert not diagnosis.ok and "no application user" in diagnosis.message


def test_check_connect_explains_a_missing_privilege(standin):
    standin.inject(Fault(status=403, code="0x80040220", method="GET"))
    diagnosis = connect(settings_for(standin.url))
    assert not diagnosis.ok and "missing a privilege" in diagnosis.message


def test_check_connect_explains_a_refused_token(standin):
    diagnosis = connect(Settings.from_env({"DATAVERSE_URL": standin.url, "DATAVERSE_TOKEN": "wrong"}))
    assert not diagnosis.ok and "refused the token" in diagnosis.message


def test_check_connect_explains_a_wrong_url(standin):
    url = standin.url
    standin.stop()
    diagnosis = connect(settings_for(url))
    assert not diagnosis.ok and "cannot reach" in diagnosis.message and "DATAVERSE_URL" in diagnosis.message


def test_check_connect_explains_an_expired_secret(standin):
    class ExpiredSecret:
        def get_token(self, *scopes, **kwargs):
            raise RuntimeError("AADSTS7000222: The provided client secret keys for app '…' are expired.")

    diagnosis = connect(settings_for(standin.url), credential=ExpiredSecret())
    assert not diagnosis.ok and "expired" in diagnosis.message


def test_check_connect_warns_about_another_organisation(standin):
    diagnosis = connect(settings_for(standin.url, EXPECTED_ORGANIZATION_ID="99d8114f-583c-44d5-9a40-2634f42fc1fa"))
    assert not diagnosis.ok and "EXPECTED_ORGANIZATION_ID" in diagnosis.message
