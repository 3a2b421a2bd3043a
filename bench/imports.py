"""import_vs_floor: a cold ``import function_app`` ÷ a cold ``import azure.functions``.

``azure.functions`` is the floor: the worker loads it to index any Python app, so nothing can cost less.
Each sample is a fresh interpreter started from the repository root (``python -c``) that times only the
import statement with ``time.perf_counter()`` (interpreter start-up excluded). The sides alternate,
one warm-up of each is discarded, and the median of each side is taken.

Bytecode: pip compiles installed packages (``azure.functions`` included) to ``.pyc`` at install time,
while the app's own modules are compiled when first imported, and only cached if ``__pycache__`` can be
written. So two figures:

* ``import_vs_floor`` (the key): like with like, both sides from cached bytecode. The children write
  and read their bytecode under a private ``PYTHONPYCACHEPREFIX`` (a temporary folder), so the repository
  is not touched, whatever ``PYTHONDONTWRITEBYTECODE`` says.
* ``import_vs_floor_source``: the app's modules compiled from source at every start (``.pyc`` never
  written, as with ``PYTHONDONTWRITEBYTECODE=1`` or a read-only deployment without ``.pyc`` files), over
  the same floor. ``.funcignore`` leaves ``__pycache__`` out of the deployed package.

The child also reports which heavy modules the import pulled in, to show the lazy imports hold, and one
``-X importtime`` run shows where the time beyond the floor goes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from .common import REPO, fresh_child, median

_HEAVY = ("requests", "azure.identity", "azure.servicebus", "msgspec", "urllib3", "pandas", "numpy")

_CHILD = """\
import sys, time, json
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "modules": len(sys.modules),
                  "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _env(cache: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")
    }
    if cache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = cache
    return env


def _sample(module: str, env: dict[str, str]) -> dict[str, Any]:
    return fresh_child(["-c", _CHILD.format(module=module, heavy=_HEAVY)], env, f"import {module}")


def _breakdown(env: dict[str, str]) -> dict[str, Any]:
    """``-X importtime`` of ``import function_app``, keeping the modules ``import azure.functions`` alone
    does not load (self times, so nothing is counted twice). The profiler inflates times: read shares."""
    floor = subprocess.run(
        [sys.executable, "-c", "import sys, json, azure.functions; print(json.dumps(sorted(sys.modules)))"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    floor_modules = set(json.loads(floor.stdout))
    timed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import function_app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    extra: dict[str, int] = {}
    for line in timed.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        module = parts[2].strip()
        if module not in floor_modules:
            extra[module] = extra.get(module, 0) + int(parts[0])
    total = sum(extra.values()) or 1
    groups: dict[str, int] = {}
    for module, us in extra.items():
        groups[module.split(".")[0]] = groups.get(module.split(".")[0], 0) + us
    top = sorted(extra.items(), key=lambda item: -item[1])[:10]
    return {
        "self_ms_beyond_floor": round(total / 1000, 1),
        "share_by_package": {
            k: round(v / total, 3) for k, v in sorted(groups.items(), key=lambda i: -i[1]) if v / total >= 0.01
        },
        "top_self_ms": {module: round(us / 1000, 2) for module, us in top},
    }


def run(quick: bool) -> dict[str, Any]:
    samples = 5 if quick else 25
    cache = tempfile.mkdtemp(prefix="optout-bench-pycache-")
    try:
        cached, source = _env(cache), _env(None)
        sides = {
            "floor": ("azure.functions", cached),
            "app": ("function_app", cached),
            "app_source": ("function_app", source),
        }
        for module, env in sides.values():  # warm-up: bytecode written to the private cache, page cache warm
            _sample(module, env)
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        last: dict[str, dict[str, Any]] = {}
        names = list(sides)
        for i in range(samples):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                result = _sample(*sides[name])
                seconds[name].append(result["seconds"])
                last[name] = result
        breakdown = {"cached_bytecode": _breakdown(cached)}
        if not quick:
            breakdown["from_source"] = _breakdown(source)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    floor, app, app_source = (median(seconds[k]) for k in ("floor", "app", "app_source"))
    return {
        "import_vs_floor": round(app / floor, 3),
        "import_vs_floor_source": round(app_source / floor, 3),
        "import": {
            "samples_per_side": samples,
            "function_app_median_ms": round(app * 1000, 2),
            "function_app_from_source_median_ms": round(app_source * 1000, 2),
            "azure_functions_median_ms": round(floor * 1000, 2),
            "samples_ms": {name: [round(s * 1000, 2) for s in values] for name, values in seconds.items()},
            "modules_loaded_function_app": last["app"]["modules"],
            "modules_loaded_azure_functions": last["floor"]["modules"],
            "heavy_modules_loaded_by_function_app": last["app"]["heavy"],
            "breakdown_importtime": breakdown,
        },
    }
