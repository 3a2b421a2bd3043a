"""Running ``python -m optout_core`` (and the developer's ``python -m optout_dev``) as a user would, in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

from optout_core.domain.settings import SPEC

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str], package: str = "optout_core") -> subprocess.CompletedProcess[str]:
    """``python -m optout_core …`` with ``env`` and none of the app's settings inherited from this process."""
    names = {setting.name for setting in SPEC}
    clean = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("AzureWebJobs")}
    return subprocess.run(
        [sys.executable, "-m", package, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def dev_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m optout_dev …`` (``run``, ``demo``), like :func:`cli`."""
    return cli(*args, env=env, package="optout_dev")
