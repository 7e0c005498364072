"""Local mailboxes (Maildir, mbox, a folder of .eml files) and the .eml transport, on disk."""

from __future__ import annotations

import mailbox
import os
from pathlib import Path

import pytest

from halomail.backends.base import (
    Disposition,
    MailboxConnector,
    MailTransport,
    OutgoingEmail,
)
from halomail.backends.files import EmlFileTransport
from halomail.backends.local import (
    EmlDirConnector,
    MaildirConnector,
    MboxConnector,
    open_local_connector,
)
from halomail.config.loader import MailboxSettings, parse_config
from halomail.errors import (
    ConfigError,
    ConnectorError,
    TransientConnectorError,
    TransientTransportError,
)


def _raw(n: int, body: bytes = b"") -> bytes:
    """A small email with CRLF endings and an 8-bit body, so byte-exactness is visible."""
    return (
        f"From: user{n}@customer.example\r\nSubject: Mail {n}\r\n"
        f"Message-ID: <m{n}@customer.example>\r\n\r\n".encode()
        + "Grüße\r\n".encode()
        + body
    )


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# -- Maildir -----------------------------------------------------------------------


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    """An empty Maildir (cur, new, tmp) called inbox."""
    root = tmp_path / "inbox"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    return root


def _deliver(
    root: Path, name: str, raw: bytes, *, sub: str = "new", mtime: int = 1_700_000_000
) -> Path:
    path = root / sub / name
    path.write_bytes(raw)
    os.utime(path, (mtime, mtime))
    return path


class TestMaildir:
    def test_it_satisfies_the_connector_protocol(self, maildir: Path) -> None:
        """MaildirConnector is a MailboxConnector."""
        assert isinstance(MaildirConnector("Support", maildir), MailboxConnector)

    def test_fetch_reads_new_and_cur_oldest_first_by_mtime_then_key(self, maildir: Path) -> None:
        """Messages come ordered by modification time, ties by key; refs are keys without flags."""
        _deliver(maildir, "050.c.host", _raw(3), mtime=1_700_000_300)
        _deliver(maildir, "200.b.host:2,S", _raw(2), sub="cur", mtime=1_700_000_100)
        _deliver(maildir, "100.a.host", _raw(1), mtime=1_700_000_100)
        fetched = list(MaildirConnector("Support", maildir).fetch())
        # 050.c sorts first by name but arrived last.
        assert [m.ref for m in fetched] == ["100.a.host", "200.b.host", "050.c.host"]
        assert [m.raw for m in fetched] == [_raw(1), _raw(2), _raw(3)]
        assert [m.size for m in fetched] == [len(_raw(1)), len(_raw(2)), len(_raw(3))]

    def test_fetch_changes_nothing_on_disk(self, maildir: Path) -> None:
        """After a full fetch every file is where it was, with the same bytes."""
        _deliver(maildir, "1.a", _raw(1))
        _deliver(maildir, "2.b:2,", _raw(2), sub="cur")
        before = _tree(maildir)
        assert len(list(MaildirConnector("Support", maildir).fetch())) == 2
        assert _tree(maildir) == before

    def test_tmp_dot_files_symlinks_and_folders_are_not_read(
        self, maildir: Path, tmp_path: Path
    ) -> None:
        """Only regular files of new/ and cur/ are messages; a planted symlink is ignored."""
        _deliver(maildir, "1.a", _raw(1))
        (maildir / "tmp" / "2.b").write_bytes(_raw(2))
        (maildir / "new" / ".hidden").write_bytes(_raw(3))
        (maildir / "new" / "subdir").mkdir()
        secret = tmp_path / "secret.txt"
        secret.write_bytes(b"root:x:0:0\n")
        (maildir / "new" / "4.link").symlink_to(secret)
        assert [m.ref for m in MaildirConnector("Support", maildir).fetch()] == ["1.a"]

    def test_processed_moves_into_a_maildirplusplus_folder_marked_seen(self, maildir: Path) -> None:
        """PROCESSED creates Maildir++ .Deleted Items and moves the file to its cur/ as :2,S."""
        _deliver(maildir, "1.a", _raw(1))
        connector = MaildirConnector("Support", maildir)
        (message,) = connector.fetch()
        connector.ack(message.ref, Disposition.PROCESSED)
        folder = maildir / ".Deleted Items"
        assert sorted(p.name for p in folder.iterdir()) == ["cur", "maildirfolder", "new", "tmp"]
        assert (folder / "maildirfolder").read_bytes() == b""
        assert _tree(folder) == {"cur/1.a:2,S": _raw(1), "maildirfolder": b""}
        assert list((maildir / "new").iterdir()) == []
        assert list(connector.fetch()) == []

    def test_existing_flags_are_kept_and_seen_added_in_order(self, maildir: Path) -> None:
        """A message flagged :2,RF lands as :2,FRS (flags sorted, seen added)."""
        _deliver(maildir, "1.a:2,RF", _raw(1), sub="cur")
        connector = MaildirConnector("Support", maildir, processed="move:Archive")
        connector.ack(next(connector.fetch()).ref, Disposition.PROCESSED)
        assert _tree(maildir / ".Archive") == {"cur/1.a:2,FRS": _raw(1), "maildirfolder": b""}

    def test_delete_removes_the_file_and_creates_no_folder(self, maildir: Path) -> None:
        """processed="delete": the message is gone and no Maildir++ folder appears."""
        _deliver(maildir, "1.a", _raw(1))
        connector = MaildirConnector("Support", maildir, processed="delete")
        connector.ack("1.a", Disposition.PROCESSED)
        assert _tree(maildir) == {}
        assert sorted(p.name for p in maildir.iterdir()) == ["cur", "new", "tmp"]

    def test_quarantined_moves_to_the_quarantine_folder_still_unread(self, maildir: Path) -> None:
        """QUARANTINED moves the file to .Quarantine/cur without the seen flag."""
        _deliver(maildir, "1.a", _raw(1))
        connector = MaildirConnector("Support", maildir)
        connector.ack("1.a", Disposition.QUARANTINED)
        assert _tree(maildir / ".Quarantine") == {"cur/1.a:2,": _raw(1), "maildirfolder": b""}
        assert (maildir / ".Quarantine" / "maildirfolder").exists()

    def test_retry_leaves_the_message_untouched(self, maildir: Path) -> None:
        """RETRY changes nothing; the message is fetched again."""
        _deliver(maildir, "1.a", _raw(1))
        connector = MaildirConnector("Support", maildir)
        before = _tree(maildir)
        connector.ack("1.a", Disposition.RETRY)
        assert _tree(maildir) == before
        assert [m.ref for m in connector.fetch()] == ["1.a"]

    def test_ack_is_idempotent_and_safe_for_unknown_or_hostile_refs(self, maildir: Path) -> None:
        """A repeated ack, an unknown key, or a path-like ref is a no-op that raises nothing."""
        _deliver(maildir, "1.a", _raw(1))
        outside = maildir.parent / "outside.eml"
        outside.write_bytes(b"keep me")
        connector = MaildirConnector("Support", maildir)
        connector.ack("1.a", Disposition.PROCESSED)
        after_first = _tree(maildir)
        connector.ack("1.a", Disposition.PROCESSED)
        connector.ack("1.a", Disposition.QUARANTINED)
        connector.ack("nope", Disposition.PROCESSED)
        connector.ack("../../outside.eml", Disposition.PROCESSED)
        assert _tree(maildir) == after_first
        assert outside.read_bytes() == b"keep me"

    def test_a_fresh_connector_acks_by_key_without_fetching_first(self, maildir: Path) -> None:
        """After a restart the ack finds the message by its key (crash between commit and ack)."""
        _deliver(maildir, "1.a", _raw(1))
        MaildirConnector("Support", maildir).ack("1.a", Disposition.PROCESSED)
        assert _tree(maildir / ".Deleted Items") == {"cur/1.a:2,S": _raw(1), "maildirfolder": b""}

    def test_a_message_another_client_moved_from_new_to_cur_is_still_found(
        self, maildir: Path
    ) -> None:
        """The ref survives a mail client renaming new/1.a to cur/1.a:2,S between fetch and ack."""
        _deliver(maildir, "1.a", _raw(1))
        connector = MaildirConnector("Support", maildir)
        (message,) = connector.fetch()
        os.rename(maildir / "new" / "1.a", maildir / "cur" / "1.a:2,S")
        connector.ack(message.ref, Disposition.PROCESSED)
        assert _tree(maildir / ".Deleted Items") == {"cur/1.a:2,S": _raw(1), "maildirfolder": b""}

    def test_acks_during_the_fetch_are_honoured(self, maildir: Path) -> None:
        """Acking each message while iterating, as the processor does, disposes of all of them."""
        for n in range(3):
            _deliver(maildir, f"{n}.a", _raw(n), mtime=1_700_000_000 + n)
        connector = MaildirConnector("Support", maildir)
        refs = []
        for message in connector.fetch():
            refs.append(message.ref)
            connector.ack(message.ref, Disposition.PROCESSED)
        assert refs == ["0.a", "1.a", "2.a"]
        assert sorted(_tree(maildir)) == [
            ".Deleted Items/cur/0.a:2,S",
            ".Deleted Items/cur/1.a:2,S",
            ".Deleted Items/cur/2.a:2,S",
            ".Deleted Items/maildirfolder",
        ]

    def test_a_message_over_the_limit_is_too_large_and_not_read(self, maildir: Path) -> None:
        """Over max_message_bytes: too_large, raw=b"", size from the file; smaller ones are read."""
        _deliver(maildir, "1.small", _raw(1), mtime=1_700_000_000)
        big = _raw(2, b"x" * 5000)
        _deliver(maildir, "2.big", big, mtime=1_700_000_001)
        small, large = MaildirConnector("Support", maildir, max_message_bytes=1000).fetch()
        assert (small.raw, small.too_large) == (_raw(1), False)
        assert (large.ref, large.raw, large.size, large.too_large) == ("2.big", b"", len(big), True)

    def test_a_missing_maildir_fails_the_fetch_unless_create_is_set(self, tmp_path: Path) -> None:
        """A missing folder raises ConnectorError naming it; create=True makes cur/new/tmp."""
        missing = tmp_path / "nothere"
        connector = MaildirConnector("Support", missing)
        with pytest.raises(ConnectorError, match="nothere is not a Maildir"):
            list(connector.fetch())
        created = MaildirConnector("Support", missing, create=True)
        assert list(created.fetch()) == []
        assert sorted(p.name for p in missing.iterdir()) == ["cur", "new", "tmp"]

    def test_a_folder_without_cur_and_new_is_not_a_maildir(self, tmp_path: Path) -> None:
        """A plain folder is refused rather than read as an empty mailbox."""
        (tmp_path / "plain").mkdir()
        with pytest.raises(ConnectorError, match="has no new/ folder"):
            list(MaildirConnector("Support", tmp_path / "plain").fetch())

    @pytest.mark.parametrize(
        ("processed", "quarantine"),
        [
            ("archive", "Quarantine"),
            ("keep", "Quarantine"),
            ("move:a/b", "Quarantine"),
            ("delete", "../x"),
        ],
    )
    def test_invalid_dispositions_are_config_errors(
        self, maildir: Path, processed: str, quarantine: str
    ) -> None:
        """processed must be move:<folder> or delete, and folders must stay inside the Maildir."""
        with pytest.raises(ConfigError):
            MaildirConnector("Support", maildir, processed=processed, quarantine_folder=quarantine)


# -- a folder of .eml files ------------------------------------------------------------


class TestEmlDir:
    def test_only_eml_files_directly_in_the_folder_are_read_sorted_by_name(
        self, tmp_path: Path
    ) -> None:
        """*.eml files come sorted by name; other files, dot files and subfolders are skipped."""
        (tmp_path / "b.eml").write_bytes(_raw(2))
        (tmp_path / "a.EML").write_bytes(_raw(1))
        (tmp_path / "c.eml").write_bytes(_raw(3))
        (tmp_path / "notes.txt").write_bytes(b"not mail")
        (tmp_path / ".partial.eml").write_bytes(b"half")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "d.eml").write_bytes(_raw(4))
        connector = EmlDirConnector("Drop", tmp_path)
        assert isinstance(connector, MailboxConnector)
        fetched = list(connector.fetch())
        assert [(m.ref, m.raw) for m in fetched] == [
            ("a.EML", _raw(1)),
            ("b.eml", _raw(2)),
            ("c.eml", _raw(3)),
        ]

    def test_processed_and_quarantined_files_move_into_subfolders(self, tmp_path: Path) -> None:
        """PROCESSED moves to Deleted Items/, QUARANTINED to Quarantine/, RETRY leaves the file."""
        for n in (1, 2, 3):
            (tmp_path / f"{n}.eml").write_bytes(_raw(n))
        connector = EmlDirConnector("Drop", tmp_path)
        connector.ack("1.eml", Disposition.PROCESSED)
        connector.ack("2.eml", Disposition.QUARANTINED)
        connector.ack("3.eml", Disposition.RETRY)
        assert _tree(tmp_path) == {
            "3.eml": _raw(3),
            "Deleted Items/1.eml": _raw(1),
            "Quarantine/2.eml": _raw(2),
        }
        assert [m.ref for m in connector.fetch()] == ["3.eml"]

    def test_a_name_already_taken_in_the_folder_gets_a_counter(self, tmp_path: Path) -> None:
        """A second a.eml processed later becomes Deleted Items/a-1.eml; nothing is overwritten."""
        connector = EmlDirConnector("Drop", tmp_path, processed="move:Done")
        (tmp_path / "a.eml").write_bytes(_raw(1))
        connector.ack("a.eml", Disposition.PROCESSED)
        (tmp_path / "a.eml").write_bytes(_raw(2))
        connector.ack("a.eml", Disposition.PROCESSED)
        assert _tree(tmp_path) == {"Done/a.eml": _raw(1), "Done/a-1.eml": _raw(2)}

    def test_delete_removes_the_file(self, tmp_path: Path) -> None:
        """processed="delete" deletes the file and creates no folder."""
        (tmp_path / "a.eml").write_bytes(_raw(1))
        EmlDirConnector("Drop", tmp_path, processed="delete").ack("a.eml", Disposition.PROCESSED)
        assert list(tmp_path.iterdir()) == []

    def test_ack_is_idempotent_and_ignores_path_like_refs(self, tmp_path: Path) -> None:
        """Acking twice, or acking "../x.eml", moves nothing outside the folder."""
        inbox = tmp_path / "drop"
        inbox.mkdir()
        (inbox / "a.eml").write_bytes(_raw(1))
        (tmp_path / "x.eml").write_bytes(b"outside")
        connector = EmlDirConnector("Drop", inbox)
        connector.ack("a.eml", Disposition.PROCESSED)
        connector.ack("a.eml", Disposition.PROCESSED)
        connector.ack("../x.eml", Disposition.PROCESSED)
        assert _tree(inbox) == {"Deleted Items/a.eml": _raw(1)}
        assert (tmp_path / "x.eml").read_bytes() == b"outside"

    def test_too_large_files_are_not_read(self, tmp_path: Path) -> None:
        """A file over max_message_bytes is fetched as too_large with its size."""
        (tmp_path / "a.eml").write_bytes(b"x" * 2000)
        (message,) = EmlDirConnector("Drop", tmp_path, max_message_bytes=100).fetch()
        assert (message.raw, message.size, message.too_large) == (b"", 2000, True)

    def test_a_missing_folder_fails_the_fetch(self, tmp_path: Path) -> None:
        """Fetching a folder that does not exist raises ConnectorError naming the mailbox."""
        with pytest.raises(ConnectorError, match=r"^Drop: .*missing is not a folder"):
            list(EmlDirConnector("Drop", tmp_path / "missing").fetch())


# -- mbox --------------------------------------------------------------------------------


def _mbox_bytes(*bodies: bytes) -> bytes:
    return b"".join(
        b"From sender@example.com Thu Jan  1 00:00:00 2026\n" + body + b"\n" for body in bodies
    )


def _lf(n: int) -> bytes:
    return f"From: user{n}@customer.example\nSubject: Mail {n}\n\nbody {n}\n".encode()


@pytest.fixture
def mbox(tmp_path: Path) -> Path:
    """An mbox file holding three messages, Mail 1 to Mail 3."""
    path = tmp_path / "import.mbox"
    path.write_bytes(_mbox_bytes(_lf(1), _lf(2), _lf(3)))
    return path


class TestMbox:
    def test_keep_reads_every_message_and_never_changes_the_file(self, mbox: Path) -> None:
        """With processed="keep", acks and close leave the file byte-identical."""
        before = mbox.read_bytes()
        connector = MboxConnector("Import", mbox)
        assert isinstance(connector, MailboxConnector)
        fetched = list(connector.fetch())
        assert [m.raw for m in fetched] == [_lf(1), _lf(2), _lf(3)]
        for message in fetched:
            connector.ack(message.ref, Disposition.PROCESSED)
        connector.close()
        assert mbox.read_bytes() == before
        assert sorted(p.name for p in mbox.parent.iterdir()) == ["import.mbox"]

    def test_refs_are_stable_across_runs_and_after_earlier_messages_are_removed(
        self, mbox: Path
    ) -> None:
        """A message keeps its ref on a second run and after the message before it is deleted."""
        first = [m.ref for m in MboxConnector("Import", mbox).fetch()]
        assert [m.ref for m in MboxConnector("Import", mbox).fetch()] == first
        deleting = MboxConnector("Import", mbox, processed="delete")
        deleting.ack(first[0], Disposition.PROCESSED)
        deleting.close()
        assert [m.ref for m in MboxConnector("Import", mbox).fetch()] == first[1:]

    def test_identical_messages_get_distinct_refs(self, tmp_path: Path) -> None:
        """Two byte-identical messages are told apart by their occurrence: …-0 and …-1."""
        path = tmp_path / "dup.mbox"
        path.write_bytes(_mbox_bytes(_lf(1), _lf(1)))
        refs = [m.ref for m in MboxConnector("Import", path).fetch()]
        assert refs[0].endswith("-0")
        assert refs[1] == refs[0][:-1] + "1"

    def test_delete_removes_processed_messages_on_close(self, mbox: Path) -> None:
        """Acked messages vanish from the file at close(); until then they are not fetched again."""
        connector = MboxConnector("Import", mbox, processed="delete")
        refs = [m.ref for m in connector.fetch()]
        connector.ack(refs[0], Disposition.PROCESSED)
        connector.ack(refs[2], Disposition.PROCESSED)
        connector.ack(refs[1], Disposition.RETRY)
        assert [m.ref for m in connector.fetch()] == [refs[1]]
        connector.close()
        assert [m.raw for m in MboxConnector("Import", mbox).fetch()] == [_lf(2)]
        assert not (mbox.parent / "import.mbox.lock").exists()

    def test_move_appends_to_a_sibling_mbox_and_removes_from_the_source(self, mbox: Path) -> None:
        """move:Done sends processed mail to ./Done and quarantined mail to ./Quarantine."""
        connector = MboxConnector("Import", mbox, processed="move:Done")
        refs = [m.ref for m in connector.fetch()]
        connector.ack(refs[0], Disposition.PROCESSED)
        connector.ack(refs[1], Disposition.QUARANTINED)
        connector.close()
        assert [m.raw for m in MboxConnector("Import", mbox).fetch()] == [_lf(3)]
        done = list(MboxConnector("Done", mbox.parent / "Done").fetch())
        assert [(m.ref, m.raw) for m in done] == [(refs[0], _lf(1))]
        quarantine = list(MboxConnector("Q", mbox.parent / "Quarantine").fetch())
        assert [m.raw for m in quarantine] == [_lf(2)]
        # The From_ line travels with the message.
        assert (
            (mbox.parent / "Done")
            .read_bytes()
            .startswith(b"From sender@example.com Thu Jan  1 00:00:00 2026\n")
        )

    def test_a_move_repeated_after_a_crash_leaves_one_copy(self, mbox: Path) -> None:
        """A message already in the destination (a crash mid-move) is not appended a second time."""
        refs = [m.ref for m in MboxConnector("Import", mbox).fetch()]
        (mbox.parent / "Done").write_bytes(_mbox_bytes(_lf(1)))  # the half-done move
        connector = MboxConnector("Import", mbox, processed="move:Done")
        connector.ack(refs[0], Disposition.PROCESSED)
        connector.close()
        assert [m.raw for m in MboxConnector("Done", mbox.parent / "Done").fetch()] == [_lf(1)]
        assert [m.raw for m in MboxConnector("Import", mbox).fetch()] == [_lf(2), _lf(3)]

    def test_a_last_message_without_final_newline_keeps_its_ref_when_moved(
        self, tmp_path: Path
    ) -> None:
        """The writer adds a line break to the moved copy; the ref still matches."""
        path = tmp_path / "in.mbox"
        path.write_bytes(b"From x Thu Jan  1 00:00:00 2026\nSubject: a\n\nno newline")
        connector = MboxConnector("Import", path, processed="move:Done")
        (message,) = connector.fetch()
        connector.ack(message.ref, Disposition.PROCESSED)
        connector.close()
        (moved,) = MboxConnector("Done", tmp_path / "Done").fetch()
        assert moved.ref == message.ref

    def test_mail_appended_after_the_fetch_is_not_removed(self, mbox: Path) -> None:
        """Removal at close() matches content, so a message delivered meanwhile survives."""
        connector = MboxConnector("Import", mbox, processed="delete")
        refs = [m.ref for m in connector.fetch()]
        box = mailbox.mbox(mbox)
        box.lock()
        box.add(_lf(4))
        box.flush()
        box.unlock()
        box.close()
        for ref in refs:
            connector.ack(ref, Disposition.PROCESSED)
        connector.close()
        assert [m.raw for m in MboxConnector("Import", mbox).fetch()] == [_lf(4)]

    def test_a_locked_mbox_is_a_transient_error_and_nothing_is_lost(self, mbox: Path) -> None:
        """Another program's dot-lock: close() raises TransientConnectorError, the file intact."""
        before = mbox.read_bytes()
        connector = MboxConnector("Import", mbox, processed="delete")
        connector.ack(next(connector.fetch()).ref, Disposition.PROCESSED)
        (mbox.parent / "import.mbox.lock").write_bytes(b"")
        with pytest.raises(TransientConnectorError, match="locked"):
            connector.close()
        assert mbox.read_bytes() == before

    def test_too_large_messages_are_hashed_but_not_returned(self, tmp_path: Path) -> None:
        """Over the limit: too_large, empty raw, full size, and the ref of an unlimited read."""
        path = tmp_path / "big.mbox"
        big = b"Subject: big\n\n" + b"y" * 200_000 + b"\n"
        path.write_bytes(_mbox_bytes(big))
        (limited,) = MboxConnector("Import", path, max_message_bytes=1000).fetch()
        (unlimited,) = MboxConnector("Import", path).fetch()
        assert (limited.raw, limited.size, limited.too_large) == (b"", len(big), True)
        assert limited.ref == unlimited.ref
        assert unlimited.raw == big

    def test_a_missing_file_fails_the_fetch(self, tmp_path: Path) -> None:
        """Fetching an mbox that does not exist raises ConnectorError."""
        with pytest.raises(ConnectorError, match="is not an mbox file"):
            list(MboxConnector("Import", tmp_path / "none.mbox").fetch())


# -- factory ------------------------------------------------------------------------------


class TestOpenLocalConnector:
    def test_each_local_connection_type_gets_its_connector(self, tmp_path: Path) -> None:
        """maildir, mbox and eml-dir settings open the matching connector with their options."""
        (tmp_path / "m").mkdir()
        (tmp_path / "b.mbox").touch()
        (tmp_path / "e").mkdir()
        config = parse_config(
            {
                "mailboxes": [
                    {"name": "M", "connection": "maildir", "path": "m", "processed": "delete"},
                    {"name": "B", "connection": "mbox", "path": "b.mbox"},
                    {"name": "E", "connection": "eml-dir", "path": "e", "quarantine_folder": "Bad"},
                ]
            },
            base_dir=tmp_path,
        )
        maildir, mbox, emldir = (
            open_local_connector(m, max_message_bytes=123) for m in config.mailboxes
        )
        assert isinstance(maildir, MaildirConnector)
        assert (maildir.name, maildir.path, maildir.max_message_bytes) == ("M", tmp_path / "m", 123)
        assert isinstance(mbox, MboxConnector)
        assert mbox.path == tmp_path / "b.mbox"
        assert isinstance(emldir, EmlDirConnector)
        assert emldir.quarantine_folder == "Bad"

    def test_a_remote_connection_type_is_a_config_error_with_its_key_path(
        self, tmp_path: Path
    ) -> None:
        """An imap mailbox handed to open_local_connector names mailboxes[i].connection."""
        (tmp_path / "m").mkdir()
        config = parse_config(
            {
                "mailboxes": [
                    {"name": "L", "connection": "maildir", "path": "m"},
                    {"name": "I", "connection": "imap", "host": "imap.example.com"},
                ]
            },
            base_dir=tmp_path,
        )
        with pytest.raises(ConfigError) as info:
            open_local_connector(config.mailboxes[1])
        assert info.value.key_path == "mailboxes[1].connection"

    def test_settings_built_in_python_with_a_bad_folder_give_a_config_error(
        self, tmp_path: Path
    ) -> None:
        """A MailboxSettings made in code with processed="move:../x" is refused with a key path."""
        settings = MailboxSettings("M", "maildir", path=tmp_path, processed="move:../x")
        with pytest.raises(ConfigError) as info:
            open_local_connector(settings)
        assert info.value.key_path == "mailboxes.processed"


# -- EmlFileTransport -----------------------------------------------------------------------


def _outgoing(message_id: str, data: bytes = b"Subject: hi\r\n\r\nbody\r\n") -> OutgoingEmail:
    return OutgoingEmail(message_id, "support@helpdesk.example", ("a@customer.example",), data)


class TestEmlFileTransport:
    def test_it_writes_the_data_byte_exact_into_a_created_folder(self, tmp_path: Path) -> None:
        """The .eml file holds email.data exactly, in a created folder, no temporary file left."""
        transport = EmlFileTransport(tmp_path / "out" / "box")
        assert isinstance(transport, MailTransport)
        data = b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n\xc3\xa9\r\n"
        transport.send(_outgoing("halomail.1.abc@helpdesk.example", data))
        (written,) = (tmp_path / "out" / "box").iterdir()
        assert written.read_bytes() == data
        assert written.name.endswith(".eml")
        stamp, _, rest = written.name.partition("-")
        assert len(stamp) == len("20260101T120000.000000Z")
        assert rest.startswith("halomail.1.abc@helpdesk.example~")
        assert transport.file_for("halomail.1.abc@helpdesk.example") == written

    def test_sending_the_same_message_id_twice_leaves_one_file(self, tmp_path: Path) -> None:
        """A retry after a crash (same Message-ID, new instance) does not write a second file."""
        EmlFileTransport(tmp_path).send(_outgoing("m1@h.example", b"first"))
        EmlFileTransport(tmp_path).send(_outgoing("m1@h.example", b"second"))
        EmlFileTransport(tmp_path).send(_outgoing("m2@h.example", b"other"))
        contents = sorted(p.read_bytes() for p in tmp_path.iterdir())
        assert contents == [b"first", b"other"]

    def test_ids_that_sanitize_alike_still_get_their_own_files(self, tmp_path: Path) -> None:
        """ "a/b@x" and "a_b@x" both become a_b@x in the name; the hash keeps them apart."""
        transport = EmlFileTransport(tmp_path)
        transport.send(_outgoing("a/b@x", b"one"))
        transport.send(_outgoing("a_b@x", b"two"))
        assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"one", b"two"]

    def test_a_hostile_message_id_cannot_write_outside_the_folder(self, tmp_path: Path) -> None:
        """A Message-ID of ../../etc/passwd yields a file inside the folder."""
        outbox = tmp_path / "outbox"
        EmlFileTransport(outbox).send(_outgoing("../../etc/passwd\x00<>"))
        (written,) = outbox.iterdir()
        assert "/" not in written.name
        assert written.parent == outbox
        assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox"]

    def test_a_failed_write_leaves_no_file_and_is_transient(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When fsync fails (disk full) nothing is left behind, not even the temporary file."""

        def disk_full(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", disk_full)
        transport = EmlFileTransport(tmp_path)
        with pytest.raises(TransientTransportError, match="No space left on device"):
            transport.send(_outgoing("m1@h.example"))
        assert list(tmp_path.iterdir()) == []
        monkeypatch.undo()
        transport.send(_outgoing("m1@h.example"))
        assert len(list(tmp_path.glob("*.eml"))) == 1
