"""A TLS context is made once per CA file and reused, and a replaced CA file is read again.

Loading the system's CAs is most of what a fresh TLS login costs, so the IMAP, POP3 and
SMTP connectors share one context per CA file. Checked against the real SMTP server on
loopback, whose certificate only its own test CA signs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from halomail.backends._common import shared_tls_context
from halomail.backends.smtp import SmtpTransport
from halomail.errors import TransportConfigError, TransportError
from tests.servers.certs import LOOPBACK, write_test_pki
from tests.servers.smtp import SmtpServer


def _transport(server: SmtpServer, ca_file: Path) -> SmtpTransport:
    return SmtpTransport(
        server.host,
        server.port,
        security="starttls",
        username=server.username,
        password=server.password,
        tls_ca_file=ca_file,
        timeout=10,
    )


def test_the_same_ca_file_gives_the_same_context() -> None:
    """Two logins with one CA file (or none) share one context: the CAs load once."""
    assert shared_tls_context(None) is shared_tls_context(None)


def test_a_replaced_ca_file_is_read_again(smtp_server: SmtpServer, tmp_path: Path) -> None:
    """The server's CA works; after the file is replaced by another CA, the same path
    no longer verifies the server: the context was made again from the new file."""
    assert smtp_server.ca_file is not None
    ca_file = tmp_path / "ca.pem"
    shutil.copyfile(smtp_server.ca_file, ca_file)
    first = shared_tls_context(ca_file)
    assert shared_tls_context(ca_file) is first
    _transport(smtp_server, ca_file).probe()

    (tmp_path / "other").mkdir()
    other_ca = write_test_pki(tmp_path / "other", {"unrelated": LOOPBACK})
    shutil.copyfile(other_ca, ca_file)
    stamp = ca_file.stat().st_mtime_ns + 1_000_000_000
    os.utime(ca_file, ns=(stamp, stamp))  # a later modification, as a rotation makes

    assert shared_tls_context(ca_file) is not first
    with pytest.raises((TransportError, TransportConfigError)):
        _transport(smtp_server, ca_file).probe()
