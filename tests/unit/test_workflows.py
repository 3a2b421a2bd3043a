"""The GitHub Actions workflows: valid YAML, every step named, CI runs the submission script, deploy signs in with
OpenID Connect (no secret in the repository) and checks the deployed app."""

from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    return document


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml"])
def test_each_workflow_is_valid_yaml_with_every_step_named_and_no_repository_secret(name: str) -> None:
    workflow = _load(name)
    assert all(step.get("name") for step in _steps(workflow)), [s for s in _steps(workflow) if not s.get("name")]
    assert "secrets." not in (WORKFLOWS / name).read_text(encoding="utf-8")


def test_ci_runs_the_submission_script_on_pushes_and_pull_requests_with_python_313_and_a_cached_venv() -> None:
    workflow = _load("ci.yml")
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    steps = _steps(workflow)
    assert any(s.get("with", {}).get("python-version") == "3.13" for s in steps)
    assert any(str(s.get("uses", "")).startswith("actions/cache@") and ".venv" in s["with"]["path"] for s in steps)
    assert any(s.get("run") == "bash .ci/run" for s in steps)


def test_deploy_runs_on_a_tag_or_by_hand_signs_in_with_oidc_then_smoke_tests() -> None:
    workflow = _load("deploy.yml")
    triggers = workflow[True]
    assert triggers["push"]["tags"] == ["v*"] and "workflow_dispatch" in triggers
    assert workflow["permissions"]["id-token"] == "write"
    names = [s["name"] for s in _steps(workflow)]
    assert any("OIDC" in n for n in names)
    deploy = next(i for i, n in enumerate(names) if n == "Deploy")
    smokes = [i for i, n in enumerate(names) if n.startswith("Smoke")]
    assert smokes and min(smokes) > deploy
    assert any("check --connect" in str(s.get("run", "")) for s in _steps(workflow))


def _uses_az(step: dict[str, Any]) -> bool:
    """A step that needs the az sign-in: an az command, or optout signing in through it (check --connect)."""
    run = str(step.get("run", ""))
    return any(line.strip().startswith("az ") or " az " in line or "$(az " in line for line in run.splitlines()) or (
        "check --connect" in run
    )


def test_az_signs_in_right_before_each_step_that_needs_it() -> None:
    """az keeps the GitHub OIDC token it was given (minutes) and cannot fetch a new one (Azure/azure-cli#28708)."""
    steps = _steps(_load("deploy.yml"))
    needing = [i for i, step in enumerate(steps) if _uses_az(step)]
    assert needing
    for i in needing:
        before = steps[i - 1]
        assert str(before.get("uses", "")).startswith("azure/login@"), (
            f"{steps[i]['name']!r} follows {before['name']!r}, not a fresh azure/login"
        )
    logins = [i for i, step in enumerate(steps) if str(step.get("uses", "")).startswith("azure/login@")]
    assert all(i + 1 in needing for i in logins)  # no sign-in that goes stale before its use


def test_ci_audits_every_hashed_lock_for_known_vulnerabilities_on_each_python_the_locks_serve() -> None:
    workflow = _load("ci.yml")
    audit = workflow["jobs"]["audit"]
    assert set(audit["strategy"]["matrix"]["python"]) == {"3.12", "3.13"}
    run = "\n".join(str(step.get("run", "")) for step in audit["steps"])
    assert "pip_audit" in run and "--require-hashes" in run and "--disable-pip" in run
    locks = sorted(path.name for path in WORKFLOWS.parents[1].glob("requirements*.txt"))
    assert locks and all(lock in run for lock in locks), locks
