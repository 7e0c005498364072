"""Spam marked by the filter upstream, end to end: never acknowledged, disposed of as
``[processing] spam`` says, and within reach of rules (issue 15, point 7).

Real spam from the SpamAssassin corpus (``HALOMAIL_CORPUS``), given the headers
SpamAssassin adds when it flags mail, goes through the real command (``halomail run
--once``) from a Maildir into SQLite, with acknowledgements written as ``.eml`` files.
One email from a person rides along in every run: it is acknowledged, so a run that
acknowledged nothing at all could not pass.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from halomail.cli import main
from halomail.config.loader import parse_config
from halomail.inbound.classify import classify
from halomail.inbound.parse import parse_email
from tests.conftest import make_email

SPAM_COUNT = 100

# What SpamAssassin (spamd, amavis, MIMEDefang) adds to mail it flags: the flag, the
# level in stars, and the status with the score, the threshold and the rules hit.
SPAMASSASSIN_HEADERS = (
    b"X-Spam-Checker-Version: SpamAssassin 3.4.6 (2021-04-09) on mx1.helpdesk.example\n"
    b"X-Spam-Flag: YES\n"
    b"X-Spam-Level: *********\n"
    b"X-Spam-Status: Yes, score=9.4 required=5.0 tests=BAYES_99,HTML_MESSAGE,\n"
    b"\tMIME_HTML_ONLY,RCVD_IN_SBL autolearn=spam autolearn_force=no version=3.4.6\n"
)

CONFIG = """\
[storage]
url = "sqlite:///data/halomail.db"

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"

[processing]
spam = "{spam}"
ack_throttle_count = 1000
ack_daily_count = 1000

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
{rules}"""

SPAM_FLAG_RULE = """
[[rules]]
name = "Flagged spam"
type = "help_request"
sequence = 10
header = { name = "x-spam-flag", contains = "yes" }
ticket_type = "Spam"
"""

PERSON = make_email(
    subject="VPN drops every ten minutes",
    sender="Bob Stone <bob@customer.example>",
    message_id="<person-1@customer.example>",
)


def _corpus() -> Path:
    folder = os.environ.get("HALOMAIL_CORPUS", "")
    if not folder or not Path(folder).is_dir():
        pytest.fail(
            f"HALOMAIL_CORPUS is not set to the SpamAssassin corpus folder (got {folder!r}); "
            "scripts/test sets it from ../shared/corpus/spamassassin"
        )
    return Path(folder)


def _flagged(raw: bytes) -> bytes:
    """``raw`` as SpamAssassin passes it on: its headers first, below an mbox From line."""
    if raw.startswith(b"From "):
        envelope, _, rest = raw.partition(b"\n")
        return envelope + b"\n" + SPAMASSASSIN_HEADERS + rest
    return SPAMASSASSIN_HEADERS + raw


def _spam_sample() -> list[bytes]:
    """The first 100 spam emails (by file name) that would otherwise open a ticket each.

    Left out, and counted: emails with no sender address (quarantined whatever the
    filter said), bounces (attached to the ticket whose mail bounced), and repeats of
    an email already taken (the same Message-ID, or the same sender and subject, which
    the duplicate and loop checks handle before spam is considered).
    """
    taken: list[bytes] = []
    seen: set[object] = set()
    left_out: Counter[str] = Counter()
    for path in sorted(_corpus().glob("spam-*.eml")):
        raw = _flagged(path.read_bytes())
        parsed = parse_email(raw)
        key = (parsed.sender.normalized if parsed.sender else None, parsed.subject)
        if parsed.sender is None or parsed.quarantine_reason:
            left_out["no sender or over a limit"] += 1
        elif classify(parsed).bounce:
            left_out["bounce"] += 1
        elif parsed.message_id in seen or key in seen:
            left_out["repeat"] += 1
        else:
            seen.update({parsed.message_id, key} - {None})
            taken.append(raw)
            if len(taken) == SPAM_COUNT:
                break
    assert len(taken) == SPAM_COUNT, left_out
    # Most spam qualifies: the sample is the corpus, not a hand-picked corner of it.
    assert sum(left_out.values()) < SPAM_COUNT // 2, left_out
    return taken


@pytest.fixture(scope="module")
def spam_sample() -> list[bytes]:
    """The flagged spam sample, read once for the module."""
    return _spam_sample()


def _mailbox(tmp_path: Path, spam: list[bytes], *, setting: str, rules: str = "") -> Path:
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG.format(spam=setting, rules=rules))
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    for index, raw in enumerate(spam):
        (tmp_path / "inbox" / "new" / f"spam-{index:03d}.eml").write_bytes(raw)
    (tmp_path / "inbox" / "new" / "person.eml").write_bytes(PERSON)
    return config


def _run(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]]]:
    code = main(["-c", str(config), "run", "--once", "--json", "--fail-on", "quarantine"])
    lines = capsys.readouterr().out.splitlines()
    return code, [e for e in map(json.loads, lines) if e["event"] == "email"]


def _acknowledged_addresses(tmp_path: Path) -> list[str]:
    """Whom the acknowledgements written to the outbox folder are addressed to."""
    parser = email.parser.BytesParser(policy=email.policy.default)
    return sorted(
        str(parser.parsebytes(path.read_bytes())["To"])
        for path in (tmp_path / "outbox").rglob("*.eml")
    )


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(list(args)) == 0
    result: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return result


def _spam_outcomes(emails: list[dict[str, object]]) -> Counter[tuple[object, object]]:
    return Counter(
        (e["outcome"], e["reason"])
        for e in emails
        if e["message_id"] != "person-1@customer.example"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "outcome", "exit_code"),
    [("ticket", "created", 0), ("ignore", "ignored", 0), ("quarantine", "quarantined", 1)],
)
def test_100_flagged_spam_emails_get_no_acknowledgement_and_the_outcome_the_setting_says(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spam_sample: list[bytes],
    setting: str,
    outcome: str,
    exit_code: int,
) -> None:
    """Under each `spam` setting, 100 flagged spam emails end as it says, unacknowledged."""
    config = _mailbox(tmp_path, spam_sample, setting=setting)
    code, emails = _run(config, capsys)
    assert code == exit_code
    assert _spam_outcomes(emails) == {(outcome, "spam"): SPAM_COUNT}
    # Only the person is answered: the outbox really sends, and sends no spam a reply.
    assert _acknowledged_addresses(tmp_path) == ["bob@customer.example"]
    tickets = _json(capsys, "-c", str(config), "tickets", "--json", "--limit", "500")
    quarantine = _json(capsys, "-c", str(config), "quarantine", "--json", "--limit", "500")
    spam_tickets = SPAM_COUNT if setting == "ticket" else 0
    assert len(tickets) == spam_tickets + 1
    assert Counter(str(q["reason"]) for q in quarantine) == (
        {"spam": SPAM_COUNT} if setting == "quarantine" else {}
    )
    if setting == "quarantine":
        assert len(list((tmp_path / "inbox" / ".Quarantine" / "cur").iterdir())) == SPAM_COUNT


@pytest.mark.slow
def test_running_again_over_the_same_spam_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spam_sample: list[bytes]
) -> None:
    """The same 100 spam emails delivered again are duplicates: no ticket, no reply."""
    config = _mailbox(tmp_path, spam_sample, setting="ticket")
    _run(config, capsys)
    for index, raw in enumerate(spam_sample):  # delivered again, as a second copy in the inbox
        (tmp_path / "inbox" / "new" / f"again-{index:03d}.eml").write_bytes(raw)
    code, emails = _run(config, capsys)
    assert code == 0
    assert _spam_outcomes(emails) == {("skipped", "duplicate"): SPAM_COUNT}
    assert _acknowledged_addresses(tmp_path) == ["bob@customer.example"]
    tickets = _json(capsys, "-c", str(config), "tickets", "--json", "--limit", "500")
    assert len(tickets) == SPAM_COUNT + 1


@pytest.mark.slow
def test_a_rule_on_x_spam_flag_takes_the_spam_and_does_what_it_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spam_sample: list[bytes]
) -> None:
    """A help_request rule on X-Spam-Flag files all 100 as "Spam" tickets, unanswered,
    even with `spam = "quarantine"` (a rule is the administrator's explicit choice)."""
    config = _mailbox(tmp_path, spam_sample, setting="quarantine", rules=SPAM_FLAG_RULE)
    code, emails = _run(config, capsys)
    assert code == 0
    taken = [e for e in emails if e["message_id"] != "person-1@customer.example"]
    assert Counter((e["outcome"], e["rule"], e["reason"]) for e in taken) == {
        ("created", "Flagged spam", "spam"): SPAM_COUNT
    }
    person = next(e for e in emails if e["message_id"] == "person-1@customer.example")
    assert (person["outcome"], person["rule"]) == ("created", None)
    assert _acknowledged_addresses(tmp_path) == ["bob@customer.example"]
    tickets = _json(capsys, "-c", str(config), "tickets", "--json", "--limit", "500")
    assert Counter(t["ticket_type"] for t in tickets) == {"Spam": SPAM_COUNT, "Incident": 1}


# -- simulate: the classification and the acknowledgement, with and without rules ----------

FLAGGED = make_email(
    subject="Cheap watches",
    sender="Deals <deals@spam.example>",
    message_id="<spam-9@spam.example>",
    headers={"X-Spam-Flag": "YES", "X-Spam-Status": "Yes, score=9.1 required=5.0"},
)


def _simulate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, *args: str
) -> tuple[int, str]:
    sample = tmp_path / "sample.eml"
    sample.write_bytes(raw)
    code = main(["-c", str(tmp_path / "halomail.toml"), "simulate", str(sample), *args])
    return code, capsys.readouterr().out


def _config(tmp_path: Path, *, setting: str = "ticket", rules: str = "") -> None:
    _mailbox(tmp_path, [], setting=setting, rules=rules)
    (tmp_path / "inbox" / "new" / "person.eml").unlink()


def test_simulate_json_shows_the_spam_verdict_and_why_nothing_is_acknowledged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without rules, `simulate --json` gives the flags, their reasons and the ack verdict."""
    _config(tmp_path)
    code, out = _simulate(tmp_path, capsys, FLAGGED, "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["outcome"], result["reason"], result["acknowledge"]) == (
        "created",
        "spam",
        False,
    )
    assert result["classification"] == {
        "flags": ["spam"],
        "reasons": [
            "spam: X-Spam-Flag: YES",
            "spam: X-Spam-Status: Yes, score=9.1 required=5.0",
        ],
        "may_acknowledge": False,
    }
    assert result["acknowledgement"] == {
        "would": False,
        "reasons": [
            "classified: spam: X-Spam-Flag: YES",
            "classified: spam: X-Spam-Status: Yes, score=9.1 required=5.0",
        ],
    }
    assert result["rules"] is None


def test_simulate_text_shows_a_persons_email_would_be_acknowledged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A person's email: no flag, and an acknowledgement would be sent."""
    _config(tmp_path)
    code, out = _simulate(tmp_path, capsys, PERSON)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("created, acknowledgement — 'VPN drops every ten minutes'")
    assert lines[1:4] == [
        "    Classification: none (mail from a person)",
        "    Acknowledgement: would be sent",
        "      a new ticket from a sender who may be answered automatically",
    ]


def test_simulate_text_with_rules_and_quarantine_says_every_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `spam = "quarantine"` and a rule that does not match, the text names the
    outcome, the classification, every reason against acknowledging, and the rules."""
    rules = '\n[[rules]]\nname = "Invoices"\ntype = "help_request"\nsequence = 5\n'
    rules += 'subject = "invoice"\n'
    _config(tmp_path, setting="quarantine", rules=rules)
    code, out = _simulate(tmp_path, capsys, FLAGGED)
    assert code == 1  # quarantined, as `run` would
    lines = out.splitlines()
    assert "quarantined (spam)" in lines[0]
    assert lines[1:7] == [
        "    Classification: spam",
        "      spam: X-Spam-Flag: YES",
        "      spam: X-Spam-Status: Yes, score=9.1 required=5.0",
        "    Acknowledgement: would not be sent",
        "      no new ticket (quarantined: spam)",
        "      classified: spam: X-Spam-Flag: YES",
    ]
    assert any("Invoices" in line and "subject: does not contain" in line for line in lines)


def test_simulate_names_a_rule_that_sends_no_acknowledgement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule with send_acknowledgement = false is named as the reason, even for a person."""
    rules = '\n[[rules]]\nname = "Quiet"\ntype = "help_request"\nsequence = 5\n'
    rules += "send_acknowledgement = false\n"
    _config(tmp_path, rules=rules)
    code, out = _simulate(tmp_path, capsys, PERSON, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["rule"] == "Quiet"
    assert result["acknowledgement"] == {
        "would": False,
        "reasons": ["rule 'Quiet': send_acknowledgement = false"],
    }


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_wrong_spam_setting_is_a_configuration_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`spam = "delete"` exits 2 naming processing.spam and the allowed values."""
    _config(tmp_path, setting="delete")
    code = main(["-c", str(tmp_path / "halomail.toml"), command])
    assert code == 2
    err = capsys.readouterr().err
    assert "processing.spam" in err
    assert "expected one of 'ticket', 'ignore', 'quarantine', got 'delete'" in err


def test_check_config_accepts_each_spam_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ticket, ignore and quarantine are each a valid `[processing] spam`."""
    for setting in ("ticket", "ignore", "quarantine"):
        folder = tmp_path / setting
        folder.mkdir()
        _config(folder, setting=setting)
        assert main(["-c", str(folder / "halomail.toml"), "check-config"]) == 0, setting
    capsys.readouterr()


def test_the_spam_setting_of_docs_processing_loads_as_written(tmp_path: Path) -> None:
    """docs/processing.md's `[processing] spam` block is valid and names the default."""
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    text = (Path(__file__).parent.parent / "docs" / "processing.md").read_text()
    (block,) = [b for b in re.findall(r"^```toml\n(.*?)^```", text, re.M | re.S) if "spam =" in b]
    mailbox = '[[mailboxes]]\nname = "Support"\nconnection = "maildir"\npath = "inbox"\n'
    config = parse_config(tomllib.loads(block + mailbox), base_dir=tmp_path)
    assert config.processing.spam == "ticket"
