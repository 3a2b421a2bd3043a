"""Helpers for tests that talk to the Dataverse stand-in."""

import threading
import time


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
