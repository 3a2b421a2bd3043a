"""The official Dataverse SDK (PowerPlatform-Dataverse-Client 1.1.x), used as documented, pointed at the
loopback stand-in.

The SDK refuses any base URL that is not ``https://`` (a deliberate check in its constructor), so the
stand-in runs with TLS and a self-signed certificate, and the certificate is trusted the way every
``requests`` user configures trust: the ``REQUESTS_CA_BUNDLE`` environment variable (see
:func:`trusting`). Nothing of the SDK is patched. It is used as its docstring recommends, as a context
manager (one pooled ``requests.Session``), with the same static token credential as our client.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


def available() -> str | None:
    """The SDK's version, or None when it is not installed (requirements-bench.txt)."""
    try:
        import importlib.metadata as md

        version = md.version("PowerPlatform-Dataverse-Client")
    except Exception:  # noqa: BLE001
        return None
    return version


@contextlib.contextmanager
def trusting(ca_file: str | None) -> Iterator[None]:
    """Trust the stand-in's certificate for every ``requests`` session of this process meanwhile."""
    if ca_file is None:
        yield
        return
    saved = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = ca_file
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = saved


def client(url: str, credential: Any) -> Any:
    """An SDK client for ``url`` (enter it as a context manager, as the SDK recommends)."""
    from PowerPlatform.Dataverse.client import DataverseClient

    return DataverseClient(url, credential)
