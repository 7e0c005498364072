"""``[processing] mailbox_lease_seconds`` and ``outbox_claim_seconds``: leases an operator tunes.

The keys are read and validated from ``halomail.toml``, carried by ``build_processor``
into :class:`ProcessorSettings`, and used: the mailbox lease a runner takes lasts
that long, and mail a runner claimed and could not send is taken over by another
runner once the claim has run out, not before.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from halomail import build_processor, load_config
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import ConfigError
from halomail.runner import Mailbox, MailProcessor, ProcessorSettings
from halomail.tickets.models import NewOutgoing
from halomail.tickets.sqlite import SQLiteTicketRepository
from tests.conftest import make_email

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "memory"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"

[processing]
loop_token = "lease-settings-token"
{processing}
"""


def _config(tmp_path: Path, processing: str) -> Path:
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "halomail.toml"
    path.write_text(CONFIG.format(processing=textwrap.dedent(processing)), encoding="utf-8")
    return path


def test_the_defaults_are_five_minutes_each(tmp_path: Path) -> None:
    """Without the keys, a mailbox lease and an outbox claim last five minutes, as before."""
    config = load_config(_config(tmp_path, ""))
    assert config.processing.mailbox_lease_seconds == 300
    assert config.processing.outbox_claim_seconds == 300
    with build_processor(config) as processor:
        assert processor.settings.mailbox_lease == dt.timedelta(minutes=5)
        assert processor.settings.outbox_claim == dt.timedelta(minutes=5)


def test_the_keys_reach_the_processor_settings(tmp_path: Path) -> None:
    """Seconds in halomail.toml become the processor's lease and claim durations."""
    path = _config(tmp_path, "mailbox_lease_seconds = 90\noutbox_claim_seconds = 45.5\n")
    with build_processor(load_config(path)) as processor:
        assert processor.settings.mailbox_lease == dt.timedelta(seconds=90)
        assert processor.settings.outbox_claim == dt.timedelta(seconds=45.5)


@pytest.mark.parametrize("key", ["mailbox_lease_seconds", "outbox_claim_seconds"])
@pytest.mark.parametrize("value", ["0", "-30", '"60"', "true", "inf"])
def test_a_duration_that_is_not_positive_is_refused_with_its_key(
    tmp_path: Path, key: str, value: str
) -> None:
    """Zero, negative, infinite or non-numeric durations fail with processing.<key>."""
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, f"{key} = {value}\n"))
    assert info.value.key_path == f"processing.{key}"


def test_the_processor_settings_refuse_a_lease_of_zero() -> None:
    """ProcessorSettings, built by a host without a file, refuses a zero lease or claim."""
    with pytest.raises(ValueError, match="mailbox_lease"):
        ProcessorSettings(loop_token="t", mailbox_lease=dt.timedelta(0))
    with pytest.raises(ValueError, match="outbox_claim"):
        ProcessorSettings(loop_token="t", outbox_claim=dt.timedelta(seconds=-1))


class RecordingRepository(SQLiteTicketRepository):
    """A real SQLite repository that also notes how long each lease asked for lasts."""

    ttls: list[dt.timedelta]

    def acquire_lease(self, name: str, owner: str, *, now: dt.datetime, ttl: dt.timedelta) -> bool:
        """Note ``ttl``, then take the lease as SQLite does."""
        self.ttls.append(ttl)
        return super().acquire_lease(name, owner, now=now, ttl=ttl)


def test_the_runner_takes_its_mailbox_lease_for_mailbox_lease(tmp_path: Path) -> None:
    """With a 40 s setting the lease is asked for 40 s; another runner is kept out that long."""
    settings = ProcessorSettings(loop_token="t", mailbox_lease=dt.timedelta(seconds=40))
    with RecordingRepository(tmp_path / "halomail.db") as repository:
        repository.ttls = []
        processor = MailProcessor(
            repository, [Mailbox(MemoryConnector("Support", [make_email()]))], settings
        )
        assert len(processor.run_once().outcomes) == 1
        assert repository.ttls == [dt.timedelta(seconds=40)]
        # A lease taken for that long by a runner that then died, at T0:
        assert repository.acquire_lease("mailbox:Support", "dead", now=T0, ttl=repository.ttls[0])
    now = [T0]
    with SQLiteTicketRepository(tmp_path / "halomail.db") as repository:
        other = MailProcessor(
            repository, [Mailbox(MemoryConnector("Support"))], settings, clock=lambda: now[0]
        )
        for seconds, held in ((39, True), (41, False)):
            now[0] = T0 + dt.timedelta(seconds=seconds)
            (report,) = other.run_once().mailboxes
            assert report.skipped is held


def test_mail_a_runner_claimed_is_taken_over_when_outbox_claim_runs_out(tmp_path: Path) -> None:
    """A claims Sales' mail it cannot send; B sends it only after A's 60 s claim has run out."""
    settings = ProcessorSettings(loop_token="t", outbox_claim=dt.timedelta(seconds=60))
    now = [T0]
    with (
        SQLiteTicketRepository(tmp_path / "halomail.db") as repo_a,
        SQLiteTicketRepository(tmp_path / "halomail.db") as repo_b,
    ):
        with repo_a.transaction():
            repo_a.enqueue_outgoing(
                NewOutgoing("ack-1@helpdesk.example", ("c@customer.example",), "Hi", "Received.")
            )
        # A reads Support only and has a transport for it alone: Sales' mail stays
        # claimed by A, unsent, until the claim runs out.
        a = MailProcessor(
            repo_a,
            [Mailbox(MemoryConnector("Support"), transport=MemoryTransport())],
            settings,
            clock=lambda: now[0],
        )
        sent = MemoryTransport()
        b = MailProcessor(
            repo_b,
            [Mailbox(MemoryConnector("Sales"))],
            settings,
            transport=sent,
            clock=lambda: now[0],
        )
        assert a.send_outbox().sent == 0
        now[0] = T0 + dt.timedelta(seconds=59)
        assert b.send_outbox().sent == 0
        assert sent.sent == []
        now[0] = T0 + dt.timedelta(seconds=61)
        assert b.send_outbox().sent == 1
        assert [m.message_id for m in sent.sent] == ["ack-1@helpdesk.example"]
