"""Fixtures shared by every test: Dataverse stand-ins (seeded, or made to measure), a thread-leak check, a plain HTTP
session."""

import contextlib
import logging
import threading
import time

import pytest

# The library logs a warning about HTTP auth levels at indexing; it says nothing about this app.
logging.getLogger().setLevel(logging.INFO)


@pytest.fixture
def make_standin():
    """make_standin(**options) -> a running Dataverse stand-in, stopped after the test (every one it started).

    By default it holds the sample recipients (contacts, leads, accounts; ``recipients={}`` for none);
    ``campaign_log=True`` adds the campaign log table; other options (``app_user=False``, ``not_found_code=``,
    ``tables=``, ...) go to DataverseStandIn. See tests.support.dataverse.running_standin."""
    from tests.support.dataverse import running_standin

    with contextlib.ExitStack() as started:
        yield lambda **options: started.enter_context(running_standin(**options))


@pytest.fixture
def standin(make_standin):
    """A running Dataverse stand-in holding the sample recipients, token ``local-token``; stopped after."""
    return make_standin()


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
        session.headers.update(
            {
                "Authorization": "Bearer local-token",
                "Accept": "application/json",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
            }
        )
        yield session
