"""``python -m optout_core explain``: the dry-run contract other tools rely on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
EXPECTED = json.loads((SAMPLES / "expected.json").read_text())
ORG = "99d8114f-583c-44d5-9a40-2634f42fc1fa"


def explain(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AzureWebJobs", "OPT_OUT", "BOUNCE"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "optout_core", "explain", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_sample_gets_the_decision_samples_readme_documents():
    files = sorted(EXPECTED)
    result = explain("--json", *(f"samples/{name}" for name in files), env={"EXPECTED_ORGANIZATION_ID": ORG})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["source"] for line in lines] == [f"samples/{name}" for name in files]
    for line, name in zip(lines, files, strict=True):
        expected = EXPECTED[name]
        assert set(line) == {"source", "outcome", "route", "reason", "log_id", "activity_type", "recipient"}
        assert line["outcome"] == expected["outcome"], name
        assert line["route"] == expected["route"], name
        assert line["recipient"] == expected["recipient"], name
        assert (line["reason"] is None) == (line["outcome"] == "routed"), name


def test_plain_output_is_one_readable_line_per_file():
    result = explain("samples/01-spam-report-contact.json", "samples/08-open-contact.json")
    assert result.returncode == 0
    first, second = result.stdout.splitlines()
    assert "routed" in first and "opt_out contact/a1000000-0000-4000-8000-000000000001" in first
    assert "ignored" in second and "'Open'" in second


def test_content_type_option_is_applied():
    result = explain("--json", "--content-type", "application/msbin1", "samples/01-spam-report-contact.json")
    line = json.loads(result.stdout)
    assert line["outcome"] == "rejected" and "message format to JSON" in line["reason"]


def test_settings_change_the_decision():
    result = explain(
        "--json",
        "samples/04-group-opt-out-code-only-no-label-contact.json",
        env={"OPT_OUT_ACTIVITY_TYPES": "100000004"},
    )
    assert json.loads(result.stdout)["route"] == "opt_out"


@pytest.mark.parametrize(
    "args, env",
    [
        ((), {}),
        (("samples/no-such-file.json",), {}),
        (("samples/01-spam-report-contact.json",), {"EXPECTED_ORGANIZATION_ID": "acme"}),
    ],
)
def test_usage_and_configuration_errors_exit_2(args, env):
    result = explain(*args, env=env)
    assert result.returncode == 2
    assert result.stderr


def test_explain_never_prints_an_address_a_forged_label_carries(tmp_path):
    from optout_dev.messages import campaign_log, wire

    body = tmp_path / "forged.json"
    body.write_bytes(wire(campaign_log(activity='Spam "jane doe"@example.com and jane@intranet')))
    for args in (("--json",), ()):
        result = explain(*args, str(body))
        assert result.returncode == 0, result.stderr
        assert "jane" not in result.stdout and "<email address>" in result.stdout
