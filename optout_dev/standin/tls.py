"""TLS for the stand-in (``tls=True``): a throwaway certificate authority made with ``trustme``, the server
certificate it issues for the loopback address and ``localhost``, and the CA's PEM file a client trusts."""

from __future__ import annotations

import datetime
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass

import trustme

_NAME = "dataverse-standin"
_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ServerTls:
    """A server-side SSL context and the CA bundle (``ca_file``, in its own temporary ``directory``) that
    verifies it. Loopback tests only: the CA's key lives in memory and is never written out."""

    context: ssl.SSLContext
    directory: str
    ca_file: str

    def remove(self) -> None:
        """Delete the CA bundle and its directory."""
        shutil.rmtree(self.directory, ignore_errors=True)


def server_tls(host: str) -> ServerTls:
    """A new CA and a certificate for ``host`` (an IP address) and ``localhost``, valid from a day ago for 30
    days; the context presents it, ``ca_file`` holds the CA's certificate (PEM)."""
    authority = trustme.CA(organization_name=_NAME)
    now = datetime.datetime.now(datetime.UTC)
    certificate = authority.issue_cert(
        host,
        "localhost",
        organization_name=_NAME,
        not_before=now - datetime.timedelta(days=1),
        not_after=now + _VALIDITY,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # trustme hands the key to OpenSSL through a private temporary file that it deletes straight away.
    certificate.configure_cert(context)
    directory = tempfile.mkdtemp(prefix=f"{_NAME}-")
    ca_file = os.path.join(directory, "standin-ca.pem")
    try:
        authority.cert_pem.write_to_path(ca_file)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return ServerTls(context, directory, ca_file)
