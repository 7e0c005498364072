"""A worker SIGKILLed between commit and disposal loses nothing, and its lease runs out.

A Graph mailbox on the local Graph endpoint and an SQLite file: one processor reads the
mailbox once (the delta link is stored); a child process continues it with a mailbox
lease of 30 seconds and kills itself with SIGKILL after committing the second email
of its pass, before moving it out of the inbox. The sync state the child never saved
is the one before its pass, and it must lead the next processor to every email not
yet disposed of: that processor skips the mailbox while the dead child's lease holds,
and after ``mailbox_lease`` has passed reads the rest, each email one ticket.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail.backends.auth.oauth import StaticTokenProvider
from halomail.backends.graph import GraphConnector
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.models import utcnow
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import LOOP_TOKEN, make_email
from tests.servers.graph import GraphServer, GraphState, running_graph_server

pytestmark = pytest.mark.slow

SUPPORT = "support@contoso.example"
TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6.graph-access-token.c2ln"
SYNC_KEY = "mailbox:Support:sync"
LEASE_SECONDS = 30

CHILD = textwrap.dedent(
    """
    import datetime as dt, os, signal, sys
    from halomail.backends.auth.oauth import StaticTokenProvider
    from halomail.backends.graph import GraphConnector
    from halomail.outbound.outbox import SenderIdentity
    from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
    from halomail.tickets.sqlite import SQLiteTicketRepository

    database, url, token, loop_token, lease = sys.argv[1:6]
    acks = []

    class Inbox(GraphConnector):
        def ack(self, ref, disposition):
            acks.append(ref)
            if len(acks) == 2:  # the second email is committed; it is never moved
                os.kill(os.getpid(), signal.SIGKILL)
            super().ack(ref, disposition)

    inbox = Inbox("Support", user_id="support@contoso.example",
                  token_provider=StaticTokenProvider(token), base_url=url)
    MailProcessor(
        SQLiteTicketRepository(database),
        [Mailbox(inbox)],
        ProcessorSettings(loop_token=loop_token, domain="helpdesk.example",
                          default_sender=SenderIdentity("support@contoso.example"),
                          mailbox_lease=dt.timedelta(seconds=int(lease))),
    ).run_once()
    """
)


@pytest.fixture
def graph() -> Iterator[GraphServer]:
    """A Graph endpoint with the support mailbox."""
    state = GraphState(tokens={TOKEN})
    state.mailbox(SUPPORT)
    with running_graph_server(state) as server:
        yield server


def _processor(database: Path, graph: GraphServer, *, seconds_later: int = 0) -> MailProcessor:
    connector = GraphConnector(
        "Support", user_id=SUPPORT, token_provider=StaticTokenProvider(TOKEN), base_url=graph.url
    )
    return MailProcessor(
        SQLiteTicketRepository(database),
        [Mailbox(connector)],
        ProcessorSettings(
            loop_token=LOOP_TOKEN,
            domain="helpdesk.example",
            default_sender=SenderIdentity(SUPPORT, "Support"),
        ),
        clock=lambda: utcnow() + dt.timedelta(seconds=seconds_later),
        owns_repository=True,
    )


def _mail(n: int) -> bytes:
    return make_email(subject=f"Request {n}", message_id=f"<req-{n}@customer.example>")


def test_a_worker_killed_between_commit_and_disposal_loses_nothing(
    tmp_path: Path, graph: GraphServer
) -> None:
    """SIGKILL mid-pass: the stored state leads the next reader to every undisposed email."""
    database = tmp_path / "halomail.db"
    state = graph.state
    state.deliver(SUPPORT, _mail(0))
    with _processor(database, graph) as first:
        assert [o.outcome for o in first.run_once().outcomes] == [Outcome.CREATED]
        before = first.repository.get_state(SYNC_KEY)
    assert before is not None
    refs = [state.deliver(SUPPORT, _mail(n)) for n in range(1, 5)]

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(database),
            graph.url,
            TOKEN,
            LOOP_TOKEN,
            str(LEASE_SECONDS),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        timeout=120,
    )

    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")[-2000:]
    with SQLiteTicketRepository(database, read_only=True) as repository:
        assert repository.get_state(SYNC_KEY) == before  # the child never saved its pass
        assert len(repository.list_tickets()) == 3  # Request 0, and the child's two commits
    assert [m.id for m in state.in_folder(SUPPORT)] == refs[1:]  # the second never moved

    with _processor(database, graph, seconds_later=LEASE_SECONDS // 2) as early:
        (report,) = early.run_once().mailboxes
    assert report.skipped
    assert report.note is not None
    assert "another runner holds its lease" in report.note

    state.requests.clear()
    with _processor(database, graph, seconds_later=LEASE_SECONDS + 1) as after:
        report = after.run_once()
        tickets = after.repository.list_tickets()

    assert [(o.ref, o.outcome) for o in report.outcomes] == [
        (refs[1], Outcome.SKIPPED),  # committed by the child: disposed of, not doubled
        (refs[2], Outcome.CREATED),
        (refs[3], Outcome.CREATED),
    ]
    (delta,) = state.calls("GET", "/delta")
    assert delta.query["$deltatoken"] == json.loads(before)["link"].split("=")[-1]
    assert sorted(t.summary for t in tickets) == [f"Request {n}" for n in range(5)]
    assert state.in_folder(SUPPORT) == []
