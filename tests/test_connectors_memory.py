"""MemoryConnector and MemoryTransport: the scriptable mailbox and transport for pipeline tests."""

from __future__ import annotations

import pytest

from halomail.backends.base import (
    Disposition,
    FetchedMessage,
    MailboxConnector,
    MailTransport,
    OutgoingEmail,
)
from halomail.backends.memory import MemoryConnector, MemoryTransport
from halomail.errors import (
    ConnectorError,
    PermanentTransportError,
    TransientTransportError,
)

ONE = b"From: a@example.com\r\nSubject: one\r\n\r\nfirst\r\n"
TWO = b"From: b@example.com\r\nSubject: two\r\n\r\nsecond\r\n"
THREE = b"From: c@example.com\r\nSubject: three\r\n\r\nthird\r\n"


def _email(message_id: str = "m1@helpdesk.example") -> OutgoingEmail:
    return OutgoingEmail(message_id, "support@helpdesk.example", ("a@example.com",), b"data")


class TestMemoryConnector:
    def test_it_satisfies_the_connector_protocol(self) -> None:
        """MemoryConnector is a MailboxConnector."""
        assert isinstance(MemoryConnector("Support"), MailboxConnector)

    def test_fetch_yields_every_message_oldest_first_and_changes_nothing(self) -> None:
        """Two fetches in a row yield the same messages, refs "1", "2" … in delivery order."""
        connector = MemoryConnector("Support", [ONE, TWO])
        assert connector.add(THREE) == "3"
        expected = [
            FetchedMessage("1", ONE, len(ONE)),
            FetchedMessage("2", TWO, len(TWO)),
            FetchedMessage("3", THREE, len(THREE)),
        ]
        assert list(connector.fetch()) == expected
        assert list(connector.fetch()) == expected
        assert connector.acks == []

    def test_processed_and_quarantined_acks_remove_the_message_and_retry_leaves_it(self) -> None:
        """PROCESSED moves to .processed, QUARANTINED to .quarantined, RETRY keeps it in place."""
        connector = MemoryConnector("Support", [ONE, TWO, THREE])
        connector.ack("1", Disposition.PROCESSED)
        connector.ack("2", Disposition.QUARANTINED)
        connector.ack("3", Disposition.RETRY)
        assert connector.processed == [ONE]
        assert connector.quarantined == [TWO]
        assert [m.ref for m in connector.fetch()] == ["3"]
        assert connector.remaining == [THREE]
        assert connector.acks == [
            ("1", Disposition.PROCESSED),
            ("2", Disposition.QUARANTINED),
            ("3", Disposition.RETRY),
        ]

    def test_ack_is_idempotent_and_ignores_unknown_refs(self) -> None:
        """A second ack of the same ref, or an ack of a ref never handed out, changes nothing."""
        connector = MemoryConnector("Support", [ONE])
        connector.ack("1", Disposition.PROCESSED)
        connector.ack("1", Disposition.PROCESSED)
        connector.ack("1", Disposition.QUARANTINED)
        connector.ack("99", Disposition.PROCESSED)
        assert connector.processed == [ONE]
        assert connector.quarantined == []
        assert len(connector.acks) == 4

    def test_a_message_acked_during_a_fetch_is_not_yielded_later_in_it(self) -> None:
        """The processor acks while iterating: what is acked mid-fetch is not yielded afterwards."""
        connector = MemoryConnector("Support", [ONE, TWO, THREE])
        seen = []
        for message in connector.fetch():
            seen.append(message.ref)
            if message.ref == "1":
                connector.ack("2", Disposition.PROCESSED)
        assert seen == ["1", "3"]

    def test_refs_are_never_reused_after_a_message_is_removed(self) -> None:
        """After "2" is processed, the next delivery is "4", not "2"."""
        connector = MemoryConnector("Support", [ONE, TWO, THREE])
        connector.ack("2", Disposition.PROCESSED)
        assert connector.add(TWO) == "4"

    def test_messages_over_the_size_limit_are_fetched_as_too_large_without_bytes(self) -> None:
        """A bigger email than max_message_bytes comes with too_large=True, raw=b"" and its size."""
        big = ONE + b"x" * 100
        connector = MemoryConnector("Support", [ONE, big], max_message_bytes=len(ONE))
        small, large = connector.fetch()
        assert (small.raw, small.too_large) == (ONE, False)
        assert (large.raw, large.size, large.too_large) == (b"", len(big), True)

    def test_fail_fetch_makes_every_fetch_raise(self) -> None:
        """A connector built with fail_fetch raises it from each fetch, like a broken mailbox."""
        connector = MemoryConnector("Broken", [ONE], fail_fetch=ConnectorError("refused"))
        for _ in range(2):
            with pytest.raises(ConnectorError, match="refused"):
                list(connector.fetch())

    def test_close_is_counted(self) -> None:
        """Each close() increments .closes."""
        connector = MemoryConnector("Support")
        connector.close()
        connector.close()
        assert connector.closes == 2

    def test_repr_does_not_dump_the_messages(self) -> None:
        """The repr names the mailbox and counts its messages."""
        assert (
            repr(MemoryConnector("Support", [ONE, TWO])) == "MemoryConnector('Support', 2 messages)"
        )


class TestMemoryTransport:
    def test_it_satisfies_the_transport_protocol(self) -> None:
        """MemoryTransport is a MailTransport."""
        assert isinstance(MemoryTransport(), MailTransport)

    def test_sent_email_is_recorded_in_order(self) -> None:
        """Without a handler every email sent lands in .sent."""
        transport = MemoryTransport()
        first, second = _email("a@x"), _email("b@x")
        transport.send(first)
        transport.send(second)
        assert transport.sent == [first, second]
        assert transport.attempts == [first, second]

    def test_a_handler_fails_once_then_lets_the_email_through(self) -> None:
        """A scripted transient failure is raised to the caller; the retry is recorded as sent."""
        calls: list[str] = []

        def fail_once(email: OutgoingEmail) -> None:
            calls.append(email.message_id)
            if len(calls) == 1:
                raise TransientTransportError("451 try again later")

        transport = MemoryTransport(fail_once)
        email = _email()
        with pytest.raises(TransientTransportError, match="451"):
            transport.send(email)
        assert transport.sent == []
        transport.send(email)
        assert transport.sent == [email]
        assert transport.attempts == [email, email]
        assert calls == ["m1@helpdesk.example", "m1@helpdesk.example"]

    def test_a_permanent_failure_is_raised_and_nothing_is_recorded_as_sent(self) -> None:
        """A handler raising PermanentTransportError leaves .sent empty."""

        def refuse(email: OutgoingEmail) -> None:
            raise PermanentTransportError("550 no such user")

        transport = MemoryTransport(refuse)
        with pytest.raises(PermanentTransportError):
            transport.send(_email())
        assert transport.sent == []
        assert len(transport.attempts) == 1
