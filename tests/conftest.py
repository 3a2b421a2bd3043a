"""Fixtures shared by every test: a seeded Dataverse stand-in, a thread-leak check, a plain HTTP session."""

import logging
import threading
import time

import pytest

# The library logs a warning about HTTP auth levels at indexing; it says nothing about this app.
logging.getLogger().setLevel(logging.INFO)


@pytest.fixture
def seeded_standin():
    """A running Dataverse stand-in holding the sample recipients (contacts, leads, accounts); stopped after."""
    from optout_dev.messages import ACCOUNTS, CONTACTS, LEADS
    from optout_dev.standin import DataverseStandIn

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
