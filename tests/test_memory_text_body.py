"""#18, point 3: a 25 MB text email costs under twice its size while it becomes a ticket.

``tests/test_parse_lazy.py`` bounds parsing and reading the text. Here the whole
pipeline runs on it: the dedupe key, classification, a rule that scans the body, the
loop count (which hashes the body), the ticket, its first action and its
acknowledgement, into a real SQLite file. Python's allocations are measured with
``tracemalloc`` over ``run_once``; the raw email, which the mailbox holds before the
run, is not counted. A rule on the new text (the default for ``body``) makes the email
hold its new text too, a second string of about the body's size (the text trimmed), so
that case is bounded at 2.1x.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from halomail.backends.memory import MemoryConnector
from halomail.inbound.parse import parse_email
from halomail.pipeline.loops import _hash_stripped, repeat_key
from halomail.rules.models import EmailRule, RuleType
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.models import ActionKind, NewAction, NewTicket
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import TEXT_LINE, big_text_email, make_email

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("scan_full_body", "most"), [(True, 2.0), (False, 2.1)], ids=["full body", "new text"]
)
def test_a_25_mb_text_email_becomes_a_ticket_under_twice_its_size(
    tmp_path: Path, settings: ProcessorSettings, scan_full_body: bool, most: float
) -> None:
    """The whole pipeline, with a body rule and an acknowledgement, peaks under 2x the
    body: the text is held once (and its copy while line breaks are normalised), never
    copied again to be hashed, scanned or stored; a rule on the new text adds the new
    text."""
    raw, size = big_text_email()
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    rule = EmailRule(
        name="vendor outage",
        type=RuleType.IGNORE,
        sequence=1,
        body=("service outage",),
        scan_full_body=scan_full_body,
    )
    connector = MemoryConnector("Support", [raw])
    processor = MailProcessor(
        repository, [Mailbox(connector, send_acknowledgement=True)], settings, rules=[rule]
    )
    # The code paths and statements, on a small email first.
    warm = MemoryConnector("Warm-up", [make_email()])
    MailProcessor(repository, [Mailbox(warm)], settings).run_once()
    del raw  # the mailbox holds it: the baseline
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        report = processor.run_once()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    try:
        [outcome] = report.outcomes
        assert outcome.outcome.value == "created"
        assert outcome.acknowledged
        [action] = repository.list_actions(outcome.ticket_id or 0)
        assert len(action.body) == size - size // len(TEXT_LINE)  # every CRLF became one LF
    finally:
        repository.close()
    growth = peak - before
    assert growth < most * size, f"peak {growth / size:.2f}x the body"


@pytest.mark.parametrize(
    "text",
    [
        "",
        " \n\t ",
        "  Hello,\r\n the printer jams.  \n\n",
        "\u3000全角スペース\u3000",  # ideographic spaces are whitespace too
        "\xa0non-breaking\u2028separators\x1c",
        "lone \ud800 surrogate and a pair \ud83d\ude00",
        " " * 70_000 + "x" + "\n" * 70_000,  # whitespace runs longer than a chunk
        "a" * 200_000 + " \ud800",  # a surrogate on a chunk's edge
    ],
)
def test_the_loop_key_hashes_the_stripped_text_as_one_piece_would(text: str) -> None:
    """Hashed a chunk at a time, the text gives the digest of ``text.strip()`` encoded at
    once: loop counts recorded before keep counting."""
    chunked = hashlib.sha256()
    _hash_stripped(chunked, text)
    whole = hashlib.sha256(text.strip().encode("utf-8", "replace"))
    assert chunked.hexdigest() == whole.hexdigest()


def test_the_loop_key_is_the_one_earlier_versions_wrote() -> None:
    """A key recorded before this change, for the same content, is found again."""
    email = make_email(
        sender="Alice <alice@customer.example>", subject="  Printer   JAMS ", body="  Help!\n\n"
    )
    digest = hashlib.sha256()
    for part in ("Support", "alice@customer.example", "printer jams", "Help!"):
        digest.update(part.encode() + b"\x00")
    assert repeat_key("Support", parse_email(email)) == "loop:" + digest.hexdigest()


FRENCH = "Le cœur déçu mais l'âme plutôt naïve, Louÿs rêva de crapaüter en canoë.\n"


@pytest.mark.parametrize(
    "text",
    [FRENCH * 70_000, "Съешь же ещё этих мягких французских булок.\n" * 100_000 + "😀"],
    ids=["French", "Russian and an emoji"],
)
def test_a_long_text_beyond_ascii_is_stored_as_text_and_keeps_no_utf8_copy(
    tmp_path: Path, text: str
) -> None:
    """A ticket's details and an action's body of several MB beyond ASCII are stored as
    TEXT, equal to what was given, and the str is left as it was: no UTF-8 copy of it
    kept for its life, and at most its UTF-8 size (plus a chunk) allocated meanwhile."""
    repository = SQLiteTicketRepository(tmp_path / "halomail.db")
    try:
        utf8_size = len(text.encode())
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            ticket = repository.create_ticket(
                NewTicket(summary="Log", details=text, ticket_type="Incident", user_email="a@b.c")
            )
            repository.add_action(NewAction(ticket.id, ActionKind.EMAIL_IN, text))
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert after - before < 0.05 * utf8_size, "a UTF-8 copy of the text is kept"
        assert peak - before < 1.2 * utf8_size, f"peak {(peak - before) / utf8_size:.2f}x"
        assert repository.get_ticket(ticket.id).details == text  # type: ignore[union-attr]
        [action] = repository.list_actions(ticket.id)
        assert action.body == text
    finally:
        repository.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "halomail.db")) as connection:
        stored = connection.execute(
            "SELECT typeof(t.details), typeof(a.body), t.details = a.body, length(t.details) "
            "FROM tickets t JOIN actions a ON a.ticket_id = t.id"
        ).fetchone()
    assert stored == ("text", "text", 1, len(text))  # length() counts characters in TEXT
