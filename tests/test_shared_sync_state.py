"""Connector sync state in the ledger: any processor continues a mailbox where the last left it.

Two processors share one SQLite file (two repository objects, as two workers would
have) and one local Graph or Gmail endpoint; each has its own connector, built fresh.
What the servers received says whether a processor listed the folder in full or
continued from the stored delta link or history id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from halomail.backends.auth.oauth import StaticTokenProvider
from halomail.backends.base import SyncState
from halomail.backends.gmail import GmailConnector, GmailRetry
from halomail.backends.graph import GraphConnector, GraphRetry
from halomail.outbound.outbox import SenderIdentity
from halomail.runner import Mailbox, MailProcessor, Outcome, ProcessorSettings
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import LOOP_TOKEN, make_email
from tests.servers.gmail import GmailServer, GmailState, running_gmail_server
from tests.servers.graph import GraphServer, GraphState, running_graph_server

SUPPORT = "support@contoso.example"
GRAPH_TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6.graph-access-token.c2ln"
GMAIL_TOKEN = "ya29.a0AfB_gmail-access-token-never-logged"
SYNC_KEY = "mailbox:Support:sync"


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphServer]:
    """One Graph endpoint for the module; each test installs its own store."""
    with running_graph_server() as server:
        yield server


@pytest.fixture(scope="module")
def gmail() -> Iterator[GmailServer]:
    """One Gmail endpoint for the module; each test installs its own store."""
    with running_gmail_server() as server:
        yield server


@pytest.fixture
def graph_state(graph: GraphServer) -> GraphState:
    """A fresh Graph store with the support mailbox."""
    store = GraphState(tokens={GRAPH_TOKEN})
    store.mailbox(SUPPORT)
    graph.state = store
    return store


@pytest.fixture
def gmail_state(gmail: GmailServer) -> GmailState:
    """A fresh Gmail store with the support mailbox."""
    store = GmailState(tokens={GMAIL_TOKEN: SUPPORT})
    store.mailbox(SUPPORT)
    gmail.state = store
    return store


@pytest.fixture
def processors(tmp_path: Path) -> Iterator[Callable[[object], MailProcessor]]:
    """Make processors on one shared SQLite file, each with its own repository object."""
    made: list[MailProcessor] = []

    def make(connector: object) -> MailProcessor:
        processor = MailProcessor(
            SQLiteTicketRepository(tmp_path / "halomail.db"),
            [Mailbox(connector)],  # type: ignore[arg-type]
            ProcessorSettings(
                loop_token=LOOP_TOKEN,
                domain="helpdesk.example",
                default_sender=SenderIdentity(SUPPORT, "Support"),
            ),
            owns_repository=True,
        )
        made.append(processor)
        return processor

    yield make
    for processor in made:
        processor.close()


def _graph_connector(graph: GraphServer) -> GraphConnector:
    return GraphConnector(
        "Support",
        user_id=SUPPORT,
        token_provider=StaticTokenProvider(GRAPH_TOKEN),
        base_url=graph.url,
        retry=GraphRetry(sleep=lambda _seconds: None),
    )


def _gmail_connector(gmail: GmailServer) -> GmailConnector:
    return GmailConnector(
        "Support",
        token_provider=StaticTokenProvider(GMAIL_TOKEN),
        user_id=SUPPORT,
        api_endpoint=gmail.url,
        retry=GmailRetry(sleep=lambda _seconds: None),
    )


def _mail(n: int) -> bytes:
    return make_email(subject=f"Printer {n} is jammed", message_id=f"<jam-{n}@customer.example>")


def _summaries(processor: MailProcessor) -> list[str]:
    return sorted(t.summary for t in processor.repository.list_tickets())


# -- Graph -------------------------------------------------------------------------------


def test_a_second_graph_processor_continues_from_the_stored_delta_link(
    graph: GraphServer, graph_state: GraphState, processors: Callable[[object], MailProcessor]
) -> None:
    """A fresh processor asks Graph only for changes since the link the first one stored."""
    first_ids = [graph_state.deliver(SUPPORT, _mail(n)) for n in range(3)]
    first = processors(_graph_connector(graph))
    assert [o.outcome for o in first.run_once().outcomes] == [Outcome.CREATED] * 3
    stored = json.loads(first.repository.get_state(SYNC_KEY) or "{}")
    assert stored["kind"] == "graph-delta"
    assert stored["pending"] == []  # all three were moved to Deleted Items
    (new,) = [graph_state.deliver(SUPPORT, _mail(3))]
    graph_state.requests.clear()

    second = processors(_graph_connector(graph))
    report = second.run_once()

    assert [(o.ref, o.outcome) for o in report.outcomes] == [(new, Outcome.CREATED)]
    deltas = graph_state.calls("GET", "/delta")
    assert [r.query.get("$deltatoken") for r in deltas] == [stored["link"].split("=")[-1]]
    assert graph_state.calls("GET", "/messages?") == []  # no full listing either
    assert [m.id for m in graph_state.in_folder(SUPPORT, "deleteditems")] == [*first_ids, new]
    assert _summaries(second) == [f"Printer {n} is jammed" for n in range(4)]


def test_a_graph_message_the_first_processor_left_is_read_by_the_second(
    graph: GraphServer, graph_state: GraphState, processors: Callable[[object], MailProcessor]
) -> None:
    """The move of one message fails; a fresh processor reads it from the stored pending set."""
    kept, moved = (graph_state.deliver(SUPPORT, _mail(n)) for n in range(2))
    graph_state.fail("POST", f"{kept}/move", 500)
    first = processors(_graph_connector(graph))
    assert len(first.run_once().outcomes) == 2
    assert [m.id for m in graph_state.in_folder(SUPPORT)] == [kept]  # committed, not moved
    graph_state.requests.clear()

    second = processors(_graph_connector(graph))
    report = second.run_once()

    # Nothing changed on the server since the stored link: only the pending set has it.
    assert [(o.ref, o.outcome) for o in report.outcomes] == [(kept, Outcome.SKIPPED)]
    assert all(r.query.get("$deltatoken") for r in graph_state.calls("GET", "/delta"))
    assert graph_state.in_folder(SUPPORT) == []
    assert {m.id for m in graph_state.in_folder(SUPPORT, "deleteditems")} == {kept, moved}
    assert len(second.repository.list_tickets()) == 2


def test_a_processor_with_stale_memory_takes_the_newer_stored_state(
    graph: GraphServer, graph_state: GraphState, processors: Callable[[object], MailProcessor]
) -> None:
    """A reads, B reads newer mail, A again: A continues from B's link, reading nothing twice."""
    graph_state.deliver(SUPPORT, _mail(0))
    a = processors(_graph_connector(graph))
    b = processors(_graph_connector(graph))
    a.run_once()
    b_ids = [graph_state.deliver(SUPPORT, _mail(n)) for n in (1, 2)]
    assert [o.ref for o in b.run_once().outcomes] == b_ids
    b_link = json.loads(b.repository.get_state(SYNC_KEY) or "{}")["link"]
    graph_state.requests.clear()

    report = a.run_once()

    assert report.outcomes == ()
    (delta,) = graph_state.calls("GET", "/delta")
    assert delta.query["$deltatoken"] == b_link.split("=")[-1]
    assert graph_state.calls("GET", "$value") == []  # B's messages are not fetched again


def test_an_unreadable_stored_state_means_one_full_round_and_no_doubles(
    graph: GraphServer, graph_state: GraphState, processors: Callable[[object], MailProcessor]
) -> None:
    """Garbage under the sync key is ignored with a log line; the folder is read in full."""
    graph_state.deliver(SUPPORT, _mail(0))
    first = processors(_graph_connector(graph))
    first.run_once()
    first.repository.set_state(SYNC_KEY, '{"kind": "graph-delta", "version": 99}')
    graph_state.deliver(SUPPORT, _mail(1))
    graph_state.requests.clear()

    second = processors(_graph_connector(graph))
    report = second.run_once()

    assert [o.outcome for o in report.outcomes] == [Outcome.CREATED]
    assert [r.query.get("$deltatoken") for r in graph_state.calls("GET", "/delta")] == [None]
    assert json.loads(second.repository.get_state(SYNC_KEY) or "{}")["version"] == 1
    assert len(second.repository.list_tickets()) == 2


# -- Gmail -------------------------------------------------------------------------------


def test_a_second_gmail_processor_continues_from_the_stored_history_id(
    gmail: GmailServer, gmail_state: GmailState, processors: Callable[[object], MailProcessor]
) -> None:
    """A fresh processor asks Gmail for the history since the id the first one stored."""
    for n in range(3):
        gmail_state.deliver(SUPPORT, _mail(n))
    first = processors(_gmail_connector(gmail))
    assert [o.outcome for o in first.run_once().outcomes] == [Outcome.CREATED] * 3
    stored = json.loads(first.repository.get_state(SYNC_KEY) or "{}")
    assert stored["kind"] == "gmail-history"
    new = gmail_state.deliver(SUPPORT, _mail(3))
    gmail_state.requests.clear()

    second = processors(_gmail_connector(gmail))
    report = second.run_once()

    assert [(o.ref, o.outcome) for o in report.outcomes] == [(new, Outcome.CREATED)]
    (history,) = gmail_state.calls("GET", "/history")
    assert history.param("startHistoryId") == stored["history_id"]
    assert gmail_state.calls("GET", "/profile") == []  # no full listing
    assert gmail_state.labelled(SUPPORT, "INBOX") == []
    assert _summaries(second) == [f"Printer {n} is jammed" for n in range(4)]


def test_a_gmail_message_the_first_processor_left_is_read_by_the_second(
    gmail: GmailServer, gmail_state: GmailState, processors: Callable[[object], MailProcessor]
) -> None:
    """The trash of one message fails; a fresh processor reads it from the stored pending set."""
    kept = gmail_state.deliver(SUPPORT, _mail(0))
    gmail_state.deliver(SUPPORT, _mail(1))
    gmail_state.fail("POST", f"{kept}/trash", 400)
    first = processors(_gmail_connector(gmail))
    assert len(first.run_once().outcomes) == 2
    assert [m.id for m in gmail_state.labelled(SUPPORT, "INBOX")] == [kept]
    gmail_state.requests.clear()

    second = processors(_gmail_connector(gmail))
    report = second.run_once()

    assert [(o.ref, o.outcome) for o in report.outcomes] == [(kept, Outcome.SKIPPED)]
    assert gmail_state.calls("GET", "/profile") == []
    assert gmail_state.labelled(SUPPORT, "INBOX") == []
    assert len(second.repository.list_tickets()) == 2


# -- the text itself ---------------------------------------------------------------------


def test_graph_and_gmail_connectors_have_the_sync_state_capability(
    graph: GraphServer, gmail: GmailServer
) -> None:
    """Both are SyncState; before any listing they have nothing to export."""
    for connector in (_graph_connector(graph), _gmail_connector(gmail)):
        assert isinstance(connector, SyncState)
        assert connector.export_sync_state() is None
        connector.close()


@pytest.mark.parametrize(
    "text",
    [
        "not json at all",
        "[1, 2]",
        '{"kind": "gmail-history", "version": 1, "scope": {}, "history_id": "1", "pending": []}',
        '{"kind": "graph-delta", "version": 1, "scope": {"folder": "Inbox", "user": "x"}}',
        '{"kind": "graph-delta", "version": 1, "scope": {"folder": "Inbox", "user": '
        '"support@contoso.example"}, "link": 5, "pending": []}',
    ],
)
def test_an_unusable_state_is_ignored_with_a_warning_and_never_raises(
    graph: GraphServer, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage, another kind, another mailbox or a malformed field: nothing restored."""
    connector = _graph_connector(graph)
    connector.restore_sync_state(text)
    assert connector.export_sync_state() is None
    assert "the stored sync state is ignored" in caplog.text
    connector.close()


def test_a_state_of_another_folder_is_not_taken_over(
    graph: GraphServer, graph_state: GraphState
) -> None:
    """A delta link stored for Inbox is ignored by a connector now reading Archive."""
    graph_state.deliver(SUPPORT, _mail(0))
    inbox = _graph_connector(graph)
    list(inbox.fetch())
    stored = inbox.export_sync_state()
    assert stored is not None
    archive = GraphConnector(
        "Support",
        user_id=SUPPORT,
        token_provider=StaticTokenProvider(GRAPH_TOKEN),
        folder="Archive",
        base_url=graph.url,
    )
    archive.restore_sync_state(stored)
    assert archive.export_sync_state() is None
    same = _graph_connector(graph)
    same.restore_sync_state(stored)
    assert same.export_sync_state() == stored
    for connector in (inbox, archive, same):
        connector.close()


class CountingRepository(SQLiteTicketRepository):
    """A real SQLite repository that also counts the state keys written."""

    written: list[str]

    def set_state(self, key: str, value: str) -> None:
        """Note ``key``, then write as SQLite does."""
        self.written.append(key)
        super().set_state(key, value)


def test_the_sync_state_is_written_once_per_pass_not_per_email(
    graph: GraphServer, graph_state: GraphState, tmp_path: Path
) -> None:
    """Ten emails, one pass: one sync-state write; a pass that changed nothing writes none."""
    for n in range(10):
        graph_state.deliver(SUPPORT, _mail(n))
    with CountingRepository(tmp_path / "counting.db") as repository:
        repository.written = []
        processor = MailProcessor(
            repository,
            [Mailbox(_graph_connector(graph))],
            ProcessorSettings(loop_token=LOOP_TOKEN, domain="helpdesk.example"),
        )
        assert len(processor.run_once().outcomes) == 10
        assert repository.written.count(SYNC_KEY) == 1
        assert [k for k in repository.written if k.startswith("mailbox:")] == [SYNC_KEY]
        processor.close()


def test_a_pass_that_changed_nothing_writes_no_sync_state(
    gmail: GmailServer, gmail_state: GmailState, tmp_path: Path
) -> None:
    """Gmail's history id stays put when nothing happened: the second pass writes nothing."""
    gmail_state.deliver(SUPPORT, _mail(0))
    with CountingRepository(tmp_path / "counting.db") as repository:
        repository.written = []
        processor = MailProcessor(
            repository,
            [Mailbox(_gmail_connector(gmail))],
            ProcessorSettings(loop_token=LOOP_TOKEN, domain="helpdesk.example"),
        )
        assert len(processor.run_once().outcomes) == 1
        assert repository.written.count(SYNC_KEY) == 1
        processor.run_once()  # sees the history of its own trashing: a newer id, one write
        repository.written.clear()
        gmail_state.requests.clear()
        assert processor.run_once().outcomes == ()
        assert len(gmail_state.calls("GET", "/history")) == 1  # it did ask
        assert repository.written == []
        processor.close()
