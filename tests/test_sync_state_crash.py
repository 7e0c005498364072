"""A worker SIGKILLed between commit and disposal loses nothing, and its lease runs out.

A Graph mailbox on the local Graph endpoint and an SQLite file: one processor reads the
mailbox once (the delta link is stored); a child process continues it with a mailbox
lease of 30 seconds and kills itself with SIGKILL as it moves the second email of its
pass out of the inbox, after that email was committed: alone (``batch_size = 1``), or
with the other three of its batch (the default, 10). The sync state the child never
saved is the one before its pass, and it must lead the next processor to every email
not yet disposed of: that processor skips the mailbox while the dead child's lease
holds, and after ``mailbox_lease`` has passed reads the rest, each email one ticket."""

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

    database, url, token, loop_token, lease, batch_size = sys.argv[1:7]
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
                          mailbox_lease=dt.timedelta(seconds=int(lease)),
                          batch_size=int(batch_size)),
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


def _killed_after_committing(
    tmp_path: Path, graph: GraphServer, batch_size: int, tickets: int
) -> tuple[Path, str, list[str]]:
    """Request 0 read once; Requests 1 to 4 delivered; a child reading them with
    ``batch_size`` is SIGKILLed as it disposes of the second. Returns the database, the
    sync state before the child's pass and the four refs, after checking that the child
    left ``tickets`` tickets, its pass unsaved and only the first email moved."""
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
            str(batch_size),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        timeout=120,
    )

    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")[-2000:]
    with SQLiteTicketRepository(database, read_only=True) as repository:
        assert repository.get_state(SYNC_KEY) == before  # the child never saved its pass
        assert len(repository.list_tickets()) == tickets
    assert [m.id for m in state.in_folder(SUPPORT)] == refs[1:]  # the second never moved
    return database, before, refs


def _read_after_the_lease(
    database: Path, graph: GraphServer, before: str
) -> tuple[list[tuple[str, Outcome]], list[str]]:
    """Skipped while the dead child's lease holds; read once it has run out. Returns the
    outcomes of that read and every ticket's summary, after checking that it resumed from
    the sync state before the child's pass and left the inbox empty."""
    state = graph.state
    with _processor(database, graph, seconds_later=LEASE_SECONDS // 2) as early:
        (report,) = early.run_once().mailboxes
    assert report.skipped
    assert report.note is not None
    assert "another runner holds its lease" in report.note

    state.requests.clear()
    with _processor(database, graph, seconds_later=LEASE_SECONDS + 1) as after:
        outcomes = [(o.ref, o.outcome) for o in after.run_once().outcomes]
        summaries = sorted(t.summary for t in after.repository.list_tickets())
    (delta,) = state.calls("GET", "/delta")
    assert delta.query["$deltatoken"] == json.loads(before)["link"].split("=")[-1]
    assert state.in_folder(SUPPORT) == []
    return outcomes, summaries


def test_a_worker_killed_between_commit_and_disposal_loses_nothing(
    tmp_path: Path, graph: GraphServer
) -> None:
    """One email at a time, SIGKILL mid-pass: the next reader finds every undisposed email."""
    # Request 0, and the child's two commits (the second one's disposal never happened).
    database, before, refs = _killed_after_committing(tmp_path, graph, batch_size=1, tickets=3)
    outcomes, summaries = _read_after_the_lease(database, graph, before)
    assert outcomes == [
        (refs[1], Outcome.SKIPPED),  # committed by the child: disposed of, not doubled
        (refs[2], Outcome.CREATED),
        (refs[3], Outcome.CREATED),
    ]
    assert summaries == [f"Request {n}" for n in range(5)]


def test_a_worker_killed_between_a_batch_commit_and_its_disposal_loses_and_doubles_nothing(
    tmp_path: Path, graph: GraphServer
) -> None:
    """Batches of 10, SIGKILL while disposing of a committed batch: the next reader disposes
    of the rest of that batch, each email once, and creates nothing twice."""
    # Request 0, and the child's batch of four committed together before any was moved.
    database, before, refs = _killed_after_committing(tmp_path, graph, batch_size=10, tickets=5)
    outcomes, summaries = _read_after_the_lease(database, graph, before)
    assert outcomes == [(ref, Outcome.SKIPPED) for ref in refs[1:]]
    assert summaries == [f"Request {n}" for n in range(5)]
