"""import_vs_floor: a cold ``import function_app`` ÷ a cold ``import azure.functions``.

``azure.functions`` is the floor: the worker loads it to index any Python app, so nothing can cost less.
Each sample is a fresh interpreter started from the repository root (``python -c``) that times only the
import statement with ``time.perf_counter()`` (interpreter start-up excluded). The two sides alternate,
one warm-up of each is discarded (it compiles ``__pycache__``), and the median of each side is taken.
The child also reports which heavy modules the import pulled in, to show the lazy imports hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from .common import REPO, median

_HEAVY = ("requests", "azure.identity", "azure.servicebus", "msgspec", "urllib3", "pandas", "numpy")

_CHILD = """\
import sys, time, json
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "modules": len(sys.modules),
                  "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _sample(module: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    out = subprocess.run([sys.executable, "-c", _CHILD.format(module=module, heavy=_HEAVY)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"import {module} failed in a fresh interpreter:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict[str, Any]:
    samples = 7 if quick else 25
    sides = {"floor": "azure.functions", "app": "function_app"}
    for module in sides.values():  # warm-up: bytecode caches written, files in the page cache
        _sample(module)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    last: dict[str, dict[str, Any]] = {}
    for i in range(samples):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]
        for name in order:
            result = _sample(sides[name])
            seconds[name].append(result["seconds"])
            last[name] = result
    floor, app = median(seconds["floor"]), median(seconds["app"])
    return {
        "import_vs_floor": round(app / floor, 3),
        "import": {
            "samples_per_side": samples,
            "function_app_median_ms": round(app * 1000, 2),
            "azure_functions_median_ms": round(floor * 1000, 2),
            "function_app_ms": [round(s * 1000, 2) for s in seconds["app"]],
            "azure_functions_ms": [round(s * 1000, 2) for s in seconds["floor"]],
            "modules_loaded_function_app": last["app"]["modules"],
            "modules_loaded_azure_functions": last["floor"]["modules"],
            "heavy_modules_loaded_by_function_app": last["app"]["heavy"],
        },
    }
