"""Test set-up: the repository root and tests/ are importable (tests share builders such as messages.py)."""

import logging
import sys
import threading
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for path in (str(ROOT), str(TESTS)):
    if path not in sys.path:
        sys.path.insert(0, path)

# The library logs a warning about HTTP auth levels at indexing; it says nothing about this app.
logging.getLogger().setLevel(logging.INFO)


@pytest.fixture
def seeded_standin():
    """A running Dataverse stand-in holding the sample recipients (contacts, leads, accounts); stopped after."""
    from messages import ACCOUNTS, CONTACTS, LEADS
    from optout_core.standin import DataverseStandIn

    with DataverseStandIn(token="local-token") as server:
        for table, ids in (("contact", CONTACTS), ("lead", LEADS), ("account", ACCOUNTS)):
            for row_id in ids:
                server.add_row(table, row_id, donotbulkemail=False)
        yield server


def _standin_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dataverse-standin") and t.is_alive()]


@pytest.fixture
def no_leaked_standin_threads():
    """Fails a test that leaves a stand-in server or connection thread running after it."""
    yield
    deadline = time.monotonic() + 2
    while _standin_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _standin_threads() == [], "a stand-in server or connection thread outlived its test"


@pytest.fixture
def http():
    """A plain requests session with the stand-in's token and the OData headers, for stand-in tests."""
    import requests

    with requests.Session() as session:
        session.headers.update({"Authorization": "Bearer local-token", "Accept": "application/json",
                                "OData-MaxVersion": "4.0", "OData-Version": "4.0"})
        yield session


def standin_env(standin, **env) -> dict[str, str]:
    """App settings pointing at a running stand-in, with retries short enough for tests."""
    return {"DATAVERSE_URL": standin.url, "DATAVERSE_TOKEN": "local-token", "DATAVERSE_BACKOFF_SECONDS": "0",
            "DATAVERSE_MAX_ATTEMPTS": "2", **env}


def stop_during_a_request(server, **request_kwargs) -> tuple[bool, list]:
    """Start a WhoAmI that the stand-in keeps waiting, then stop the server.

    Returns whether stop() came back well before the wait would have ended, and what the client saw."""
    import requests

    outcome: list = []

    def call() -> None:
        try:
            outcome.append(requests.get(f"{server.url}/api/data/v9.2/WhoAmI", timeout=5, **request_kwargs).status_code)
        except requests.RequestException as exc:
            outcome.append(type(exc))

    client = threading.Thread(target=call)
    client.start()
    time.sleep(0.2)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(timeout=15)  # the wait is far longer: a stop() that waited it out would still be running
    client.join(timeout=5)
    return not stopper.is_alive(), outcome
