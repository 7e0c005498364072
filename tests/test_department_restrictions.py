"""Sending restrictions by department, as well as by team, from ``halomail.toml``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from halomail import ConfigError, MailProcessor, MessageKind, SendingRestrictedError
from halomail.app import build_processor
from halomail.config.loader import load_config
from tests.conftest import make_email

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"

[[teams]]
name = "Service Desk"

[[teams]]
name = "Sales"

[[agents]]
name = "Amy Pond"
email = "amy@helpdesk.example"
team = "Service Desk"
department = "Finance"

[[agents]]
name = "Rory Williams"
email = "rory@helpdesk.example"
team = "Sales"
department = "Field Sales"

[[agents]]
name = "Clara Oswald"
email = "clara@helpdesk.example"
team = "Sales"
department = "Accounts"

[[mailboxes]]
name = "Billing"
connection = "maildir"
path = "inbox"
allowed_teams = ["Service Desk"]
allowed_departments = ["accounts"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    """``text`` as tmp_path/halomail.toml, with the Maildir it reads."""
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    config = tmp_path / "halomail.toml"
    config.write_text(text, encoding="utf-8")
    return config


@pytest.fixture
def processor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MailProcessor]:
    """The Billing helpdesk on a real SQLite file, with ticket 1 logged from an email."""
    monkeypatch.chdir(tmp_path)
    config = load_config(_write(tmp_path, CONFIG))
    (tmp_path / "inbox" / "new" / "1.eml").write_bytes(make_email(subject="Invoice 77"))
    with build_processor(config) as built:
        built.run_once()
        yield built


def test_an_agent_of_an_allowed_department_may_send_though_their_team_may_not(
    processor: MailProcessor, tmp_path: Path
) -> None:
    """Clara (Sales, Accounts) sends from Billing: her department is allowed."""
    notice = processor.notifier.ticket_email(
        1, MessageKind.TICKET_UPDATE, note="Refund issued.", agent="clara@helpdesk.example"
    )
    assert notice.queued is not None
    assert processor.send_outbox().sent == 1
    bodies = [path.read_bytes() for path in (tmp_path / "outbox").rglob("*.eml")]
    assert sum(b"Refund issued." in body for body in bodies) == 1


def test_an_agent_of_an_allowed_team_may_send_whatever_their_department(
    processor: MailProcessor,
) -> None:
    """Amy (Service Desk, Finance) sends from Billing: her team is allowed."""
    notice = processor.notifier.ticket_email(
        1, MessageKind.TICKET_UPDATE, note="On it.", agent="amy@helpdesk.example"
    )
    assert notice.queued is not None


def test_an_agent_in_neither_is_refused_naming_team_and_department(
    processor: MailProcessor,
) -> None:
    """Rory (Sales, Field Sales) may not send from Billing, and nothing is queued."""
    with pytest.raises(SendingRestrictedError) as refused:
        processor.notifier.ticket_email(
            1, MessageKind.TICKET_UPDATE, note="Buy more!", agent="rory@helpdesk.example"
        )
    assert str(refused.value) == (
        "rory@helpdesk.example (Sales, Field Sales) may not send from mailbox 'Billing': "
        "only Service Desk, accounts may"
    )
    # run_once sent the acknowledgement already; nothing was queued for Rory.
    assert processor.send_outbox().sent == 0


def test_a_department_no_agent_is_in_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    """A typo in allowed_departments is a configuration error with the key path."""
    config = _write(tmp_path, CONFIG.replace('["accounts"]', '["Acounts"]'))
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert refused.value.key_path == "mailboxes[0].allowed_departments[0]"
    assert "known: Accounts, Field Sales, Finance" in str(refused.value)


def test_the_agents_department_loads(tmp_path: Path) -> None:
    """[[agents]] department reaches the agent, allowed_departments the mailbox."""
    config = load_config(_write(tmp_path, CONFIG))
    assert [(a.email, a.department) for a in config.agents] == [
        ("amy@helpdesk.example", "Finance"),
        ("rory@helpdesk.example", "Field Sales"),
        ("clara@helpdesk.example", "Accounts"),
    ]
    assert config.mailbox("Billing").allowed_departments == ("accounts",)
