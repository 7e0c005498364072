"""The operator's commands of issue 17: `tickets` filtered and paged, `ticket N` with every
field a rule sets and the mail sent about it, `rules` in evaluation order, `outbox --all`.

Each runs the real `halomail` command (in-process `main`) on a real SQLite file.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from halomail.cli import main
from halomail.tickets.models import (
    MAYBE_SENT,
    NewOutgoing,
    NewTicket,
    OutboxStatus,
    TicketStatus,
)
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
processed = "move:Processed"
{rules}
"""

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def _config(tmp_path: Path, rules: str = "") -> Path:
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG.format(rules=rules))
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    return config


def _ticket(summary: str, **changes: object) -> NewTicket:
    fields: dict[str, object] = {
        "summary": summary,
        "details": "details",
        "ticket_type": "Incident",
        "user_email": "alice@customer.example",
        "mailbox": "Support",
    }
    return NewTicket(**(fields | changes))  # type: ignore[arg-type]


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def _listed(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> list[str]:
    """The summaries `tickets --json` lists with these arguments."""
    assert main(["-c", str(config), "tickets", "--json", *args]) == 0
    return [t["summary"] for t in json.loads(capsys.readouterr().out)]


def test_tickets_filters_by_status_mailbox_and_since(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--status`, `--mailbox` and `--since` (ISO or 7d/24h) each narrow the listing."""
    config = _config(tmp_path)
    old = SQLiteTicketRepository(tmp_path / "halomail.db", clock=lambda: NOW - dt.timedelta(10))
    with old:
        old.create_ticket(_ticket("ten days old"))
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repo:
        closed = repo.create_ticket(_ticket("closed one"))
        repo.set_status(closed.id, TicketStatus.CLOSED)
        repo.create_ticket(_ticket("sales one", mailbox="Sales"))
        repo.create_ticket(_ticket("new one"))
    assert _listed(capsys, config) == ["new one", "sales one", "closed one", "ten days old"]
    assert _listed(capsys, config, "--status", "closed") == ["closed one"]
    assert _listed(capsys, config, "--status", "new", "--mailbox", "support") == [
        "new one",
        "ten days old",
    ]
    assert _listed(capsys, config, "--mailbox", "Sales") == ["sales one"]
    assert _listed(capsys, config, "--since", "7d") == ["new one", "sales one", "closed one"]
    assert _listed(capsys, config, "--since", "24h", "--status", "new") == ["new one", "sales one"]
    since = (NOW - dt.timedelta(days=11)).date().isoformat()
    assert len(_listed(capsys, config, "--since", since)) == 4


def test_tickets_pages_with_limit_page_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--limit` sizes a page, `--page N` and `--offset` pick it; the text says where more is."""
    config = _config(tmp_path)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repo:
        for n in range(1, 8):
            repo.create_ticket(_ticket(f"ticket {n}"))
    assert _listed(capsys, config, "--limit", "3") == ["ticket 7", "ticket 6", "ticket 5"]
    assert _listed(capsys, config, "--limit", "3", "--page", "2") == [
        "ticket 4",
        "ticket 3",
        "ticket 2",
    ]
    assert _listed(capsys, config, "--limit", "3", "--page", "3") == ["ticket 1"]
    assert _listed(capsys, config, "--limit", "2", "--offset", "5") == ["ticket 2", "ticket 1"]
    assert main(["-c", str(config), "tickets", "--limit", "3"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 4  # the heading and three tickets
    assert "more with --offset 3" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last week"], "argument --since: expected an ISO date"),
        (["--page", "0"], "argument --page: must be 1 or more, got 0"),
        (["--offset", "-1"], "argument --offset: must be 0 or more, got -1"),
        (["--page", "2", "--offset", "4"], "not allowed with argument"),
        (["--status", "pending"], "argument --status: invalid choice"),
    ],
)
def test_tickets_refuses_bad_filters_as_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """A bad filter or page exits 2 with argparse's message, never a traceback."""
    config = _config(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["-c", str(config), "tickets", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_ticket_shows_every_field_a_rule_sets_and_the_mail_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Priority, category, team, agent, asset, alert key, custom fields, then each mail
    with its delivery state (sent with its time, maybe sent, failed with its error)."""
    config = _config(tmp_path)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repo:
        ticket = repo.create_ticket(
            _ticket(
                "Disk full on srv01",
                priority="P1",
                category="Storage",
                team="Infra",
                agent="bob@helpdesk.example",
                asset_id=42,
                alert_key="alert:nagios:srv01/disk",
                custom_fields={"Serial Number": "SN-991", "Site": "Leeds"},
            )
        )
        repo.create_ticket(_ticket("Another ticket"))
        mails = {}
        for kind in ("acknowledgement", "update", "agent"):
            mails[kind] = repo.enqueue_outgoing(
                NewOutgoing(
                    f"{kind}@helpdesk.example",
                    ("alice@customer.example",),
                    f"[ID:{ticket.id}] {kind}",
                    "text",
                    mailbox="Support",
                    kind=kind,
                    ticket_id=ticket.id,
                )
            )
        repo.mark_outgoing(mails["acknowledgement"].id, OutboxStatus.SENT)
        repo.mark_outgoing(
            mails["update"].id,
            OutboxStatus.PENDING,
            error=f"{MAYBE_SENT}read timed out",
            next_attempt_at=NOW,
        )
        repo.mark_outgoing(mails["agent"].id, OutboxStatus.FAILED, error="550 no such user")
    assert main(["-c", str(config), "ticket", str(ticket.id)]) == 0
    out = capsys.readouterr().out
    for line in (
        "  priority: P1",
        "  category: Storage",
        "  team: Infra",
        "  agent: bob@helpdesk.example",
        "  asset id: 42",
        "  alert key: alert:nagios:srv01/disk",
        "  CF_Serial Number: SN-991",
        "  CF_Site: Leeds",
    ):
        assert line in out.splitlines(), line
    mail = out.split("Mail about this ticket:\n")[1].splitlines()
    assert mail[0].startswith(f"  #{mails['acknowledgement'].id} sent 20")
    assert (
        f"acknowledgement to alice@customer.example: '[ID:{ticket.id}] acknowledgement'"
        in (mail[0])
    )
    assert mail[1].startswith(f"  #{mails['update'].id} maybe sent, update to")
    assert mail[2] == "      last error: maybe sent: read timed out"
    assert mail[3].startswith(f"  #{mails['agent'].id} failed, agent to")
    assert mail[4] == "      last error: 550 no such user"
    assert main(["-c", str(config), "ticket", str(ticket.id), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["priority"], data["team"], data["asset_id"]) == ("P1", "Infra", 42)
    assert data["custom_fields"] == {"Serial Number": "SN-991", "Site": "Leeds"}
    assert [(m["kind"], m["state"]) for m in data["mail"]] == [
        ("acknowledgement", "sent"),
        ("update", "maybe sent"),
        ("agent", "failed"),
    ]
    assert data["mail"][0]["sent_at"] is not None


def test_ticket_after_a_run_shows_its_acknowledgement_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real run: the ticket a rule typed shows its type and the acknowledgement, sent."""
    rule = (
        '\n[[rules]]\nname = "Printers"\ntype = "help_request"\nsequence = 10\n'
        'subject = "printer"\nticket_type = "Hardware"\n'
    )
    config = _config(tmp_path, rule)
    (tmp_path / "inbox" / "new" / "1.eml").write_bytes(make_email(subject="Printer jammed"))
    assert main(["-c", str(config), "run", "--once"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "ticket", "1"]) == 0
    out = capsys.readouterr().out
    assert "type Hardware" in out
    (mail,) = [line for line in out.splitlines() if line.startswith("  #")]
    assert " sent " in mail
    assert "new_ticket_logged to alice@customer.example" in mail


RULES = """
[processing]
spam = "quarantine"

[[rules]]
name = "Zeta backups"
type = "ignore"
sequence = 20
from = "backups@example.com"
from_exact = true

[[rules]]
name = "Alpha disk alerts"
type = "help_request"
sequence = 20
mailbox = "Support"
subject = ["disk", "cpu"]
ticket_type = "Problem"
send_acknowledgement = false
[[rules.header]]
name = "X-Monitor"
contains = ["nagios"]
[[rules.fields]]
target = "priority"
match = "line"
label = "Priority:"

[[rules]]
name = "First"
type = "help_request"
sequence = 5
enabled = false
body = "urgent"
"""


def test_rules_lists_them_in_evaluation_order_with_what_they_match_and_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By sequence then name (as the engine), disabled marked, and the fallbacks for spam."""
    config = _config(tmp_path, RULES)
    assert main(["-c", str(config), "rules"]) == 0
    out = capsys.readouterr().out
    headings = [line for line in out.splitlines() if line[:5].strip().rstrip(".").isdigit()]
    assert headings == [
        "  1. [5] First (help_request)  (disabled: never matches)",
        "  2. [20] Alpha disk alerts (help_request)",
        "  3. [20] Zeta backups (ignore)",
    ]
    assert (
        "     matches: mailbox 'Support', subject contains 'disk' or 'cpu', "
        "header X-Monitor contains 'nagios'"
    ) in out
    assert (
        "     does:    send acknowledgement no, ticket type 'Problem', "
        "sets priority from the body on the line of 'Priority:'"
    ) in out
    assert "     matches: from is 'backups@example.com'" in out
    assert "     matches: new text contains 'urgent'" in out
    assert "spam (an upstream filter's mark): quarantine" in out
    assert "A matching ignore rule wins before threading and bounces" in out
    assert main(["-c", str(config), "rules", "--json"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["event"] for o in objects] == ["rule", "rule", "rule", "unmatched"]
    assert [o.get("name") for o in objects[:3]] == ["First", "Alpha disk alerts", "Zeta backups"]
    assert objects[2]["matches"] == {"from": ["backups@example.com"], "from_exact": True}
    assert objects[1]["does"]["fields"][0]["label"] == "Priority:"
    assert objects[3] == {"event": "unmatched", "spam": "quarantine", "bulk": "ticket"}


def test_rules_with_none_says_what_happens_to_mail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No rules: the command says every email is threaded or becomes a ticket."""
    config = _config(tmp_path)
    assert main(["-c", str(config), "rules"]) == 0
    assert _lines(capsys)[0] == "no rules: every email is threaded or becomes a ticket"


def test_outbox_all_lists_sent_mail_and_retry_of_one_id_requeues_only_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`outbox` lists what waits (reasons shown), `--all` adds sent mail, `retry ID` one mail."""
    config = _config(tmp_path)
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repo:
        ids = [
            repo.enqueue_outgoing(
                NewOutgoing(f"m{n}@h", (f"c{n}@customer.example",), f"Mail {n}", "text")
            ).id
            for n in range(3)
        ]
        repo.mark_outgoing(ids[0], OutboxStatus.SENT)
        repo.mark_outgoing(ids[1], OutboxStatus.FAILED, error="550 mailbox unavailable")
        repo.mark_outgoing(ids[2], OutboxStatus.FAILED, error="552 too big")
    assert main(["-c", str(config), "outbox"]) == 0
    out = capsys.readouterr().out
    assert "550 mailbox unavailable" in out
    assert "Mail 0" not in out
    assert main(["-c", str(config), "outbox", "--all", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["outgoing"]
    assert [(m["id"], m["state"]) for m in listed] == [
        (ids[2], "failed"),
        (ids[1], "failed"),
        (ids[0], "sent"),
    ]
    assert main(["-c", str(config), "outbox", "retry", str(ids[1])]) == 0
    assert "1 emails queued again" in capsys.readouterr().out
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repo:
        statuses = [repo.list_outgoing(ticket_id=None)[n].status for n in range(3)]
    assert statuses == [OutboxStatus.FAILED, OutboxStatus.PENDING, OutboxStatus.SENT]
