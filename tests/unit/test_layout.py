"""The package's shape, as rules a change cannot quietly break.

* The deployed app (what ``.funcignore`` lets through) holds no test double, HTTP server or fake.
* No function in ``optout_core`` is over 50 lines (the CLI's argument parser aside); ruff limits complexity,
  arguments and statements per function (pyproject.toml).
* The layers depend downwards only: ``domain`` on nothing but the standard library; ``dataverse`` and
  ``servicebus`` on ``domain``; ``app`` on those three; ``cli`` on anything; ``optout_core`` never on ``optout_dev``
  (the developer's ``run`` and ``demo`` live in ``python -m optout_dev``).
* One place sends HTTP requests: only ``optout_core/dataverse/sender.py`` imports ``requests``.
* ``docs/architecture.md`` names every module of each layer in its table, and names no module that is gone.
"""

import ast
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {
    "domain": set(),
    "dataverse": {"domain"},
    "servicebus": {"domain"},
    "app": {"domain", "dataverse", "servicebus"},
    "cli": {"domain", "dataverse", "servicebus", "app"},
}


def repository_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [path for path in listed if (ROOT / path).exists()]


def deployed(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return not any(
        fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(part, pattern)
        for pattern in patterns
        for prefix, part in zip(prefixes, parts, strict=True)
    )


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


DEPLOYED = [p for p in repository_files() if deployed(p)]
DEPLOYED_PYTHON = [p for p in DEPLOYED if p.endswith(".py")]


def test_the_deployed_app_is_the_function_app_and_the_core_it_imports():
    assert "function_app.py" in DEPLOYED and "host.json" in DEPLOYED and "requirements.txt" in DEPLOYED
    assert not [
        p for p in DEPLOYED if p.startswith(("optout_dev/", "tests/", "bench/", "samples/", "optout_core/cli/"))
    ]
    assert {p.split("/")[1] for p in DEPLOYED_PYTHON if p.startswith("optout_core/") and p.count("/") > 1} == {
        "domain",
        "dataverse",
        "servicebus",
        "app",
    }


MAX_FUNCTION_LINES = 50
LONG_FUNCTIONS_ALLOWED = {
    ("optout_core/cli/main.py", "parser"),  # the CLI's argument parser: one declaration per option
}


def long_functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "optout_core").rglob("*.py")))
def test_no_function_in_optout_core_is_over_50_lines(path):
    too_long = [
        (name, lines) for name, lines in long_functions(ROOT / path) if (path, name) not in LONG_FUNCTIONS_ALLOWED
    ]
    assert not too_long, f"{path}: {too_long}"


def test_the_function_length_rule_sees_a_long_function(tmp_path):
    module = tmp_path / "long.py"
    module.write_text("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 50)
    assert long_functions(module) == [("long", 51)]


@pytest.mark.parametrize("path", DEPLOYED_PYTHON)
def test_no_deployed_module_defines_a_server_stand_in_or_fake(path):
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    classes = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    for node in classes:
        assert not any(word in node.name.lower() for word in ("standin", "stand_in", "fake", "inmemory", "server"))
        bases = {ast.unparse(base) for base in node.bases}
        assert not bases & {"HTTPServer", "ThreadingHTTPServer", "BaseHTTPRequestHandler", "socketserver.TCPServer"}
    assert not imports(ROOT / path) & {"http.server", "socketserver", "optout_dev"}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_depend_downwards_only(layer):
    allowed = LAYERS[layer] | {layer}
    for path in sorted((ROOT / "optout_core" / layer).glob("*.py")):
        for name in imports(path):
            if name.startswith("optout_core."):
                assert name.split(".")[1] in allowed, f"{path.relative_to(ROOT)} imports {name}"
            assert not name.startswith("optout_dev"), f"{path.relative_to(ROOT)} imports {name}"


def test_optout_core_never_imports_optout_dev():
    for path in sorted((ROOT / "optout_core").rglob("*.py")):
        assert not {name for name in imports(path) if name.split(".")[0] == "optout_dev"}, path.relative_to(ROOT)


def test_the_domain_does_no_io():
    stdlib = set(sys.stdlib_module_names) - {"os", "socket", "http", "urllib3", "subprocess", "threading"}
    for path in sorted((ROOT / "optout_core" / "domain").glob("*.py")):
        for name in imports(path):
            top = name.split(".")[0]
            assert top in stdlib or name.startswith("optout_core.domain") or top in ("msgspec", "__future__"), (
                f"{path.relative_to(ROOT)} imports {name}"
            )


def test_one_module_sends_http_requests():
    senders = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "optout_core").rglob("*.py")
        if any(name.split(".")[0] in ("requests", "urllib3", "httpx") for name in imports(p))
    )
    assert senders == ["optout_core/dataverse/sender.py"]


def modules_in_the_architecture_table(text: str) -> dict[str, set[str]]:
    """Per layer, the modules the package table of docs/architecture.md names (a row with an empty first cell
    continues the layer above it)."""
    named: dict[str, set[str]] = {}
    layer = None
    for line in text.splitlines():
        row = re.match(r"\|\s*(?:`(\w+)`)?\s*\|([^|]*)\|", line)
        if row is None:
            continue
        layer = row.group(1) or layer
        if layer in LAYERS:
            named.setdefault(layer, set()).update(re.findall(r"`(\w+)`", row.group(2)))
    return named


def test_the_architecture_page_names_every_module_and_only_modules_that_exist():
    named = modules_in_the_architecture_table((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    for layer in LAYERS:
        present = {p.stem for p in (ROOT / "optout_core" / layer).glob("*.py") if p.stem != "__init__"}
        assert named.get(layer, set()) == present, (
            f"{layer}: unnamed {sorted(present - named.get(layer, set()))}, "
            f"gone {sorted(named.get(layer, set()) - present)}"
        )


def test_the_architecture_check_sees_an_unnamed_and_a_gone_module():
    table = "| package | modules | what |\n|---|---|---|\n| `app` | `router`, `gone` | x |\n| | `writer` | y |\n"
    assert modules_in_the_architecture_table(table) == {"app": {"router", "gone", "writer"}}
