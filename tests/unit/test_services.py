"""The services seam (optout_core.app.services): what a process loads before its first use of each client."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_service_bus_sender_loads_with_its_first_use_not_with_the_writers():
    # A writer's applied event sends nothing to Service Bus; its first message need not load the sender.
    code = (
        "import sys; import optout_core.app.opt_out, optout_core.app.bounce; from optout_core.app.services import "
        "Services; from optout_core.domain.settings import Settings; s = Services(Settings.from_env({}), env={}); "
        "print('optout_core.servicebus.sender' in sys.modules, type(s.sender).__name__, "
        "'optout_core.servicebus.sender' in sys.modules)"
    )
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert child.stdout.split() == ["False", "ServiceBusSender", "True"]
