"""The fault proxy's ``latency``: every chunk the server sends waits before it is forwarded."""

from __future__ import annotations

import imaplib
import time
from collections.abc import Callable

from tests.servers.dovecot import Dovecot
from tests.servers.fault_proxy import FaultProxy

Proxy = Callable[[str, int], FaultProxy]


def _talk(proxy: FaultProxy, dovecot: Dovecot, noops: int) -> None:
    """Log in through the proxy, send ``noops`` NOOPs and log out: one answer each."""
    account = dovecot.new_account()
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=30)
    try:
        client.login(account.username, account.password)
        for _ in range(noops):
            client.noop()
    finally:
        client.logout()


def test_every_server_answer_is_delayed_once_it_is_set(
    dovecot: Dovecot, fault_proxy_factory: Proxy
) -> None:
    """With latency set, the greeting, the login and each NOOP's answer each wait at least once."""
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
    proxy.latency = 0.005
    _talk(proxy, dovecot, noops=10)
    # Greeting + LOGIN + 10 NOOPs + LOGOUT: 13 answers, each at least one chunk
    # (Dovecot may split an answer, never merge two: the client waits for each).
    assert proxy.delays >= 13


def test_no_latency_means_no_delay(dovecot: Dovecot, fault_proxy_factory: Proxy) -> None:
    """By default the proxy forwards the server's bytes without holding any of them back."""
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
    _talk(proxy, dovecot, noops=3)
    assert proxy.connections == 1
    assert proxy.delays == 0


def test_latency_is_fixed_per_connection_when_accepted(
    dovecot: Dovecot, fault_proxy_factory: Proxy
) -> None:
    """Setting latency after a connection opened leaves that connection undelayed."""
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
    account = dovecot.new_account()
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=30)
    try:
        proxy.latency = 0.005
        client.login(account.username, account.password)
        client.noop()
    finally:
        client.logout()
    assert proxy.delays == 0
    _talk(proxy, dovecot, noops=1)
    assert proxy.delays >= 4


def test_open_connections_counts_the_clients_still_connected(
    dovecot: Dovecot, fault_proxy_factory: Proxy
) -> None:
    """A logged-in client counts as one open connection; after its logout, none."""
    proxy = fault_proxy_factory(dovecot.host, dovecot.imap_port)
    account = dovecot.new_account()
    client = imaplib.IMAP4(proxy.host, proxy.port, timeout=30)
    try:
        client.login(account.username, account.password)
        assert proxy.open_connections() == 1
    finally:
        client.logout()
    deadline = time.monotonic() + 10
    while proxy.open_connections() and time.monotonic() < deadline:
        time.sleep(0.01)  # the proxy closes its side once the server closed
    assert proxy.open_connections() == 0
