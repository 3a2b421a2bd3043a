"""Settings that would silently defeat opt-outs are refused by every command, not only by ``Settings``.

``check`` prints ``INVALID`` naming the setting and exits 1; ``explain`` and ``run`` stop with a
configuration error (exit 2) before reading a single message.
"""

import pytest

from tests.support.cli import cli, dev_cli

SAMPLE = "samples/01-spam-report-contact.json"

DEFEATING = [
    ("OPT_OUT_ACTIVITY_TYPES", ";"),
    ("OPT_OUT_ACTIVITY_TYPES", " - "),
    ("OPT_OUT_UPDATE", '{"donotbulkemail": false}'),
    ("OPT_OUT_UPDATE", '{"donotbulkemail": null}'),
]


@pytest.mark.parametrize("name, value", DEFEATING)
def test_check_refuses_a_setting_that_defeats_opt_outs_and_names_it(name, value):
    result = cli("check", env={name: value})
    assert result.returncode != 0, result.stdout
    assert "INVALID" in result.stdout and name in result.stdout, result.stdout


@pytest.mark.parametrize("command", ["explain", "run"])
@pytest.mark.parametrize("name, value", DEFEATING)
def test_explain_and_run_refuse_it_before_reading_a_message(command, name, value):
    result = (dev_cli if command == "run" else cli)(command, SAMPLE, env={name: value})
    assert result.returncode == 2, result.stdout
    assert "configuration error" in result.stderr and name in result.stderr, result.stderr
    assert result.stdout == ""


def test_check_accepts_the_defaults():
    result = cli("check", env={})
    assert result.returncode == 0, result.stdout
    assert "INVALID" not in result.stdout


@pytest.mark.parametrize(
    "name, value",
    [
        ("DATAVERSE_URL", "https://admin:s3cret-pw@contoso.crm.dynamics.com"),
        ("DATAVERSE_URL", "admin:s3cret-pw@contoso.crm.dynamics.com"),
        ("OPT_OUT_UPDATE", '{"donotbulkemail": true, "x": ' + "[" * 50_000 + "]" * 50_000 + "}"),
        ("DATAVERSE_BACKOFF_SECONDS", "0"),
    ],
)
def test_check_refuses_it_naming_the_setting_without_a_traceback_or_the_credential(name, value):
    result = cli("check", "--connect", env={name: value})
    assert result.returncode != 0 and "INVALID" in result.stdout and name in result.stdout, result.stdout
    assert "Traceback" not in result.stderr and "s3cret" not in result.stdout + result.stderr
