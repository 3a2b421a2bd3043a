"""Helpers for tests that talk to the Dataverse stand-in: one way to start a seeded one, app settings for it,
and stopping it in the middle of a request."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from optout_dev.messages import ACCOUNTS, CONTACTS, LEADS
from optout_dev.standin import DataverseStandIn

TOKEN = "local-token"
# The sample recipients (optout_dev.messages), as the demo Dataverse holds them: none opted out yet.
SAMPLE_RECIPIENTS: Mapping[str, Collection[str]] = {"contact": CONTACTS, "lead": LEADS, "account": ACCOUNTS}


@contextlib.contextmanager
def running_standin(
    *,
    recipients: Mapping[str, Collection[str]] = SAMPLE_RECIPIENTS,
    campaign_log: bool | str = False,
    token: str = TOKEN,
    **options: Any,
) -> Iterator[DataverseStandIn]:
    """A running stand-in holding ``recipients`` (table -> row ids, each with ``donotbulkemail`` false; by default
    the sample recipients, ``{}`` for none); stopped on exit.

    ``campaign_log=True`` adds the samples' typed campaign log table (``concep_emailcampaignlog``, entity set
    ``concep_emailcampaignlogs``: the ``"samples"`` preset) so that trimmed contexts can be read back;
    ``campaign_log="other"`` adds the second campaign-log schema instead. Other keyword arguments go to
    :class:`~optout_dev.standin.DataverseStandIn` (``app_user=False``, ``presets=``, ``privileges=``...).
    """
    if campaign_log:
        preset = "samples" if campaign_log is True else campaign_log
        options["presets"] = (*options.get("presets", ()), preset)
    with DataverseStandIn(token=token, **options) as server:
        for table, ids in recipients.items():
            for row_id in ids:
                server.add_row(table, row_id, donotbulkemail=False)
        yield server


def standin_env(standin: DataverseStandIn, **env: str) -> dict[str, str]:
    """App settings pointing at a running stand-in, with retries short enough for tests."""
    return {
        "DATAVERSE_URL": standin.url,
        "DATAVERSE_TOKEN": TOKEN,
        "DATAVERSE_BACKOFF_SECONDS": "0.001",
        "DATAVERSE_MAX_ATTEMPTS": "2",
        **env,
    }


def stop_during_a_request(server: DataverseStandIn, **request_kwargs: Any) -> tuple[bool, list[Any]]:
    """Start a WhoAmI that the stand-in keeps waiting, then stop the server.

    Returns whether stop() came back well before the wait would have ended, and what the client saw."""
    import requests

    outcome: list[Any] = []

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
