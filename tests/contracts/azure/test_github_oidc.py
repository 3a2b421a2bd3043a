"""The deploy workflow's sign-in against GitHub's OIDC subject rules and the credentials we create.

A job that names an environment gets a token whose subject is repo:<owner>/<repo>:environment:<name>;
`azd pipeline config` creates credentials for pull requests and branches only (facts/azure/github-oidc.json).
"""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
FACTS = json.loads((Path(__file__).resolve().parents[1] / "facts" / "azure" / "github-oidc.json").read_text())
SCRIPT = ROOT / "infra" / "hooks" / "github-environment-credential.sh"
REPOSITORY = "octo-org/octo-repo"  # any repository: the subjects are compared as formats


def deploy_environment() -> str | None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text(encoding="utf-8"))
    (job,) = workflow["jobs"].values()
    environment = job.get("environment")
    return environment["name"] if isinstance(environment, dict) else environment


def created_subjects() -> set[str]:
    """The subjects of the credentials we create: azd pipeline config's, plus the script's."""
    subjects = {s.format(repository=REPOSITORY, branch="main") for s in FACTS["azd_pipeline_config"]["subjects"]}
    if SCRIPT.exists():
        text = SCRIPT.read_text(encoding="utf-8")
        environment = re.search(r"^environment=(\S+)", text, re.MULTILINE)
        template = re.search(r'^subject="([^"]+)"', text, re.MULTILINE)
        assert environment and template, "the script names its environment and subject"
        subjects.add(template.group(1).replace("${repo}", REPOSITORY).replace("${environment}", environment.group(1)))
    return subjects


def test_the_deploy_jobs_token_subject_has_a_federated_credential():
    environment = deploy_environment()
    # without an environment the subject names the ref: a v* tag, for which azd creates no credential either
    assert environment, "deploy.yml runs on tags: only an environment subject is stable across tags and runs by hand"
    subject = FACTS["environment_subject"]["format"].format(repository=REPOSITORY, environment=environment)
    assert subject in created_subjects(), f"no federated credential for {subject}"


def test_the_script_uses_githubs_issuer_and_the_audience_azure_expects():
    text = SCRIPT.read_text(encoding="utf-8")
    assert f"issuer={FACTS['issuer']['value']}" in text
    assert f"audience={FACTS['azd_pipeline_config']['audience']}" in text
    assert "az ad app federated-credential create" in text


def test_the_readme_and_the_deployment_guide_name_the_script_and_the_subject():
    for doc in ("README.md", "docs/deployment.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert "infra/hooks/github-environment-credential.sh" in text, doc
        assert f"environment:{deploy_environment()}" in text, doc
