"""halomail.toml: the design's example loads, defaults hold, every mistake names its key path."""

from __future__ import annotations

import hashlib
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halomail.config.loader import (
    Config,
    MailboxSettings,
    OutgoingSettings,
    StorageSettings,
    load_config,
    parse_config,
)
from halomail.errors import ConfigError
from halomail.inbound.models import ParseLimits
from halomail.rules import RuleType

# The example of design.md §3, verbatim but for one comment shortened to fit the line.
DESIGN_EXAMPLE = """\
[storage]                   # the embedded default
url = "sqlite:///halomail.db"

[outgoing]                  # default outgoing settings
transport = "smtp"          # smtp | graph | gmail | ews | maildir (.eml files in `path`) | memory
host = "smtp.example.com"
port = 25
security = "starttls"       # none | starttls | tls
# tls_ca_file = "ca.pem"    # optional: trust a private CA (certificates are always verified)
username = "support@example.com"
password_env = "SMTP_PASSWORD"
from_address = "support@example.com"
display_name = "Support"
message_group = "Default"

[[mailboxes]]
name = "Support"
enabled = true
connection = "imap"         # office365 | google | pop3 | imap | ews | maildir | mbox | eml-dir
host = "imap.example.com"
port = 993
security = "tls"
username = "support@example.com"
password_env = "IMAP_PASSWORD"
# path = "inbox"            # for maildir | mbox | eml-dir (relative to the config file)
folder = "INBOX"
processed = "move:Deleted Items"   # | "delete" | "move:<folder>"
ticket_type = "Incident"
record = "ticket"           # ticket | opportunity
send_acknowledgement = true
subject_tag = "[ID:"        # threading tag, closed by "]"
start_from = "all"          # all | now  (safe onboarding: leave older mail alone)

[mailboxes.outgoing]        # optional override of [outgoing], same keys

[[rules]]
name = "Backups"
type = "service_status"
sequence = 20
mailbox = "*"
from = "backups@example.com"
from_exact = true
service = "Nightly backup"

[[services]]
name = "Nightly backup"
"""

ENV = {"SMTP_PASSWORD": "smtp-Secret-42", "IMAP_PASSWORD": "imap-Secret-43"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "halomail.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    _make_the_files_it_names(tmp_path, textwrap.dedent(text))
    return path


def _make_the_files_it_names(base: Path, text: str) -> None:
    """Create the mailbox folders and credentials files a configuration reads.

    A configuration naming a Maildir or a credentials file that is not there does not
    load (tests/test_check_config.py shows that); the tests here are about other keys.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    mailboxes = data.get("mailboxes", [])
    for mailbox in mailboxes if isinstance(mailboxes, list) else []:
        if not isinstance(mailbox, dict):
            continue
        path, credentials = mailbox.get("path"), mailbox.get("credentials_file")
        if isinstance(path, str) and mailbox.get("connection") in ("maildir", "eml-dir"):
            (base / path).mkdir(parents=True, exist_ok=True)
        for file in (path if mailbox.get("connection") == "mbox" else None, credentials):
            if isinstance(file, str):
                (base / file).parent.mkdir(parents=True, exist_ok=True)
                (base / file).touch()


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    # Most tests here are about one table, not the mailboxes: a file without an enabled
    # mailbox is refused by default (TestNothingToRead), and allowed here.
    env = ENV if env is None else env
    return load_config(_write(tmp_path, text), env=env, require_mailbox=False)


def _error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text, env)
    return info.value


class TestHappyPath:
    def test_the_design_example_loads_with_its_secrets_from_the_environment(
        self, tmp_path: Path
    ) -> None:
        """The full example of design §3 parses; password_env values come from the environment."""
        config = _load(tmp_path, DESIGN_EXAMPLE)
        assert config.path == tmp_path / "halomail.toml"
        assert config.storage == StorageSettings("sqlite:///halomail.db", tmp_path / "halomail.db")
        out = config.outgoing
        assert (out.transport, out.host, out.port, out.security) == (
            "smtp",
            "smtp.example.com",
            25,
            "starttls",
        )
        assert (out.username, out.password, out.password_env) == (
            "support@example.com",
            "smtp-Secret-42",
            "SMTP_PASSWORD",
        )
        assert (out.from_address, out.display_name, out.message_group) == (
            "support@example.com",
            "Support",
            "Default",
        )
        (mailbox,) = config.mailboxes
        assert mailbox.name == "Support"
        assert (mailbox.connection, mailbox.host, mailbox.port, mailbox.security) == (
            "imap",
            "imap.example.com",
            993,
            "tls",
        )
        assert (mailbox.password, mailbox.password_env) == ("imap-Secret-43", "IMAP_PASSWORD")
        assert (mailbox.folder, mailbox.processed, mailbox.processed_folder) == (
            "INBOX",
            "move:Deleted Items",
            "Deleted Items",
        )
        assert (mailbox.ticket_type, mailbox.record, mailbox.subject_tag) == (
            "Incident",
            "ticket",
            "[ID:",
        )
        assert (mailbox.send_acknowledgement, mailbox.start_from, mailbox.hijack) == (
            True,
            "all",
            "new-ticket",
        )
        # An empty [mailboxes.outgoing] overrides nothing.
        assert mailbox.effective_outgoing(config.outgoing) == config.outgoing
        (rule,) = config.rules
        assert (rule.name, rule.type, rule.sequence, rule.mailbox) == (
            "Backups",
            RuleType.SERVICE_STATUS,
            20,
            "*",
        )
        assert (rule.from_, rule.from_exact, rule.service) == (
            ("backups@example.com",),
            True,
            "Nightly backup",
        )
        assert [service.name for service in config.services] == ["Nightly backup"]
        assert config.processing.domain == "example.com"
        assert config.limits == ParseLimits()

    def test_an_empty_file_gives_the_documented_defaults(self, tmp_path: Path) -> None:
        """With nothing written: SQLite beside the file, SMTP 25 with STARTTLS, design §4 limits.

        (Only when no mailbox is required: by default an empty file is an error.)
        """
        config = _load(tmp_path, "")
        assert config.storage.sqlite_path == tmp_path / "halomail.db"
        assert (config.outgoing.transport, config.outgoing.port, config.outgoing.security) == (
            "smtp",
            25,
            "starttls",
        )
        assert (config.outgoing.message_group, config.outgoing.timeout) == ("Default", 30.0)
        assert config.mailboxes == ()
        assert config.rules == ()
        assert config.limits == ParseLimits(25 * 1024 * 1024, 32, 500, 256 * 1024)
        processing = config.processing
        assert (processing.bulk, processing.ack_throttle_count) == ("ticket", 10)
        assert (processing.ack_throttle_window_minutes, processing.max_send_attempts) == (10.0, 8)
        assert processing.domain == "halomail.invalid"
        assert processing.concurrent_mailboxes == 16

    def test_the_default_loop_token_is_stable_and_differs_between_installations(
        self, tmp_path: Path
    ) -> None:
        """The derived loop token is stable across loads and changes with sender or storage."""
        base = '[outgoing]\ntransport = "memory"\nfrom_address = "help@a.example"\n'
        first = _load(tmp_path, base).processing.loop_token
        assert _load(tmp_path, base).processing.loop_token == first
        seed = b"halomail-loop\nhelp@a.example\nsqlite:///halomail.db"
        assert first == hashlib.sha256(seed).hexdigest()[:32]
        other_sender = _load(tmp_path, base.replace("a.example", "b.example"))
        assert other_sender.processing.loop_token != first
        other_store = _load(tmp_path, base + '[storage]\nurl = "sqlite:///other.db"\n')
        assert other_store.processing.loop_token != first

    def test_processing_and_limits_tables_are_read(self, tmp_path: Path) -> None:
        """Every [processing] and [limits] key lands in its setting."""
        config = _load(
            tmp_path,
            """
            [processing]
            loop_token = "my-token"
            bulk = "ignore"
            ack_throttle_count = 3
            ack_throttle_window_minutes = 2.5
            max_send_attempts = 4
            domain = "Helpdesk.Example"
            copies = "process"

            [limits]
            max_message_bytes = 1000
            max_depth = 5
            max_parts = 6
            max_header_bytes = 700
            """,
        )
        p = config.processing
        assert (p.loop_token, p.bulk, p.ack_throttle_count) == ("my-token", "ignore", 3)
        assert (p.ack_throttle_window_minutes, p.max_send_attempts, p.domain) == (
            2.5,
            4,
            "helpdesk.example",
        )
        assert p.copies == "process"
        assert _load(tmp_path, "").processing.copies == "skip"  # one ticket by default
        assert config.limits == ParseLimits(1000, 5, 6, 700)

    def test_relative_paths_are_relative_to_the_config_file_not_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """path, outgoing.path and the SQLite file resolve against the file's folder."""
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        conf_dir = tmp_path / "conf"
        conf_dir.mkdir()
        (conf_dir / "ca.pem").write_text("x")
        (conf_dir / "mail" / "inbox").mkdir(parents=True)
        path = conf_dir / "halomail.toml"
        path.write_text(
            textwrap.dedent(
                """
                [storage]
                url = "sqlite:///data/h.db"
                [outgoing]
                transport = "maildir"
                path = "outbox"
                tls_ca_file = "ca.pem"
                [[mailboxes]]
                name = "Local"
                connection = "maildir"
                path = "mail/inbox"
                """
            )
        )
        config = load_config(path)
        assert config.storage.sqlite_path == conf_dir / "data" / "h.db"
        assert config.outgoing.path == conf_dir / "outbox"
        assert config.outgoing.tls_ca_file == conf_dir / "ca.pem"
        assert config.mailboxes[0].path == conf_dir / "mail" / "inbox"

    def test_absolute_and_in_memory_storage_urls(self, tmp_path: Path) -> None:
        """sqlite:////abs/x.db is absolute; memory:// has no SQLite file."""
        absolute = tmp_path / "abs" / "x.db"
        config = _load(tmp_path, f'[storage]\nurl = "sqlite:///{absolute}"\n')
        assert config.storage.sqlite_path == absolute
        assert _load(tmp_path, '[storage]\nurl = "memory://"\n').storage.sqlite_path is None

    @pytest.mark.parametrize(
        ("connection", "security", "port"),
        [
            ("imap", "tls", 993),
            ("imap", "starttls", 143),
            ("pop3", "tls", 995),
            ("pop3", "none", 110),
            ("office365", "tls", None),
        ],
    )
    def test_a_blank_mailbox_port_follows_the_connection_and_security(
        self, tmp_path: Path, connection: str, security: str, port: int | None
    ) -> None:
        """IMAP 993/143 and POP3 995/110 by security; cloud mailboxes have no port."""
        config = _load(
            tmp_path,
            f"""
            [[mailboxes]]
            name = "M"
            connection = "{connection}"
            host = "mail.example.com"
            security = "{security}"
            user_id = "support@example.com"
            """,
        )
        assert config.mailboxes[0].port == port

    def test_a_blank_smtp_port_is_25_or_465_for_implicit_tls(self, tmp_path: Path) -> None:
        """As in HaloPSA, a blank SMTP port means 25; with security = "tls" it means 465."""
        base = '[outgoing]\nhost = "smtp.example.com"\n'
        assert _load(tmp_path, base).outgoing.port == 25
        assert _load(tmp_path, base + 'security = "none"\n').outgoing.port == 25
        assert _load(tmp_path, base + 'security = "tls"\n').outgoing.port == 465
        assert _load(tmp_path, base + "port = 587\n").outgoing.port == 587

    def test_defaults_of_processed_depend_on_the_connection(self, tmp_path: Path) -> None:
        """By default mbox keeps its file, POP3 deletes, other mailboxes move to Deleted Items."""
        config = _load(
            tmp_path,
            """
            [[mailboxes]]
            name = "A"
            connection = "mbox"
            path = "a.mbox"
            [[mailboxes]]
            name = "B"
            connection = "pop3"
            host = "pop.example.com"
            [[mailboxes]]
            name = "C"
            connection = "eml-dir"
            path = "drop"
            """,
        )
        assert [m.processed for m in config.mailboxes] == ["keep", "delete", "move:Deleted Items"]
        assert [m.processed_folder for m in config.mailboxes] == [None, None, "Deleted Items"]

    def test_connector_specific_keys_are_kept_in_extra(self, tmp_path: Path) -> None:
        """Keys later connectors use are validated and kept in extra, env secrets resolved."""
        config = _load(
            tmp_path,
            """
            [[mailboxes]]
            name = "O365"
            connection = "office365"
            tenant_id = "t-1"
            client_id = "c-1"
            client_secret_env = "GRAPH_SECRET"
            user_id = "support@example.com"
            credentials_file = "creds.json"
            token_env = "O365_TOKEN"
            auth = "xoauth2"
            leave_on_server = true
            poll_interval = 30
            batch_size = 25
            timeout = 12.5
            """,
            env={"GRAPH_SECRET": "graph-Secret-44", "O365_TOKEN": "tok-Secret-45"},
        )
        assert dict(config.mailboxes[0].extra) == {
            "tenant_id": "t-1",
            "client_id": "c-1",
            "client_secret": "graph-Secret-44",
            "client_secret_env": "GRAPH_SECRET",
            "user_id": "support@example.com",
            "credentials_file": tmp_path / "creds.json",
            "token": "tok-Secret-45",
            "token_env": "O365_TOKEN",
            "auth": "xoauth2",
            "leave_on_server": True,
            "poll_interval": 30.0,
            "batch_size": 25,
            "timeout": 12.5,
        }

    def test_a_disabled_mailbox_tolerates_its_unset_secret(self, tmp_path: Path) -> None:
        """enabled = false with an unset password_env loads; the password is None."""
        config = _load(
            tmp_path,
            """
            [[mailboxes]]
            name = "Old"
            enabled = false
            connection = "imap"
            host = "imap.example.com"
            password_env = "GONE"
            """,
            env={},
        )
        assert (config.mailboxes[0].enabled, config.mailboxes[0].password) == (False, None)

    def test_a_utf8_byte_order_mark_is_accepted(self, tmp_path: Path) -> None:
        """A file saved with a BOM by a Windows editor loads."""
        path = tmp_path / "halomail.toml"
        path.write_bytes(b'\xef\xbb\xbf[outgoing]\nhost = "smtp.example.com"\n')
        assert load_config(path, require_mailbox=False).outgoing.host == "smtp.example.com"

    def test_mailbox_lookup_is_case_insensitive_and_unknown_names_raise_config_error(
        self, tmp_path: Path
    ) -> None:
        """Config.mailbox finds "support" for "Support"; an unknown name is a ConfigError."""
        config = _load(tmp_path, DESIGN_EXAMPLE)
        assert config.mailbox("support").name == "Support"
        with pytest.raises(ConfigError) as info:
            config.mailbox("Sales")
        assert info.value.key_path == "mailboxes"
        assert "'Sales'" in info.value.message
        assert "'Support'" in info.value.message

    def test_parse_config_accepts_a_dict(self, tmp_path: Path) -> None:
        """parse_config validates an in-memory table with paths relative to base_dir."""
        (tmp_path / "in").mkdir()
        config = parse_config(
            {"mailboxes": [{"name": "M", "connection": "maildir", "path": "in"}]},
            base_dir=tmp_path,
            env={},
        )
        assert config.path is None
        assert config.mailboxes[0].path == tmp_path / "in"


SECRETS_TOML = """
[outgoing]
host = "smtp.example.com"
password = "inline-Secret-1"
from_address = "support@example.com"
client_secret = "outgoing-Secret-2"

[processing]
loop_token = "loop-Secret-3"

[[mailboxes]]
name = "A"
connection = "imap"
host = "imap.example.com"
password_env = "IMAP_PASSWORD"
client_secret_env = "CS"
token_env = "TOKEN"

[mailboxes.outgoing]
password = "override-Secret-4"
"""


class TestSecrets:
    def test_repr_of_the_config_never_contains_a_secret(self, tmp_path: Path) -> None:
        """Passwords, client secrets, tokens and the loop token are absent from repr(config)."""
        env = {"IMAP_PASSWORD": "imap-Secret-5", "CS": "cs-Secret-6", "TOKEN": "tok-Secret-7"}
        config = _load(tmp_path, SECRETS_TOML, env=env)
        mailbox = config.mailboxes[0]
        merged = mailbox.effective_outgoing(config.outgoing)
        # The secrets were loaded …
        assert merged.password == "override-Secret-4"
        assert mailbox.extra["token"] == "tok-Secret-7"
        # … and no repr shows one.
        shown = repr(config) + repr(merged) + str(config) + repr(mailbox.extra)
        for secret in (
            "inline-Secret-1",
            "outgoing-Secret-2",
            "loop-Secret-3",
            "override-Secret-4",
            "imap-Secret-5",
            "cs-Secret-6",
            "tok-Secret-7",
        ):
            assert secret not in shown
        assert "IMAP_PASSWORD" in shown  # the variable's name is fine to show
        assert "'client_secret': '***'" in shown

    def test_a_secret_of_the_wrong_type_is_not_echoed_in_the_error(self, tmp_path: Path) -> None:
        """password = 12345678 is reported as "got an integer", without the digits."""
        error = _error(tmp_path, '[outgoing]\nhost = "h.example"\npassword = 12345678\n')
        assert error.key_path == "outgoing.password"
        assert error.message == "expected a string, got an integer"
        assert "12345678" not in str(error)

    def test_a_missing_environment_variable_names_the_variable_not_a_value(
        self, tmp_path: Path
    ) -> None:
        """An unset password_env fails with the key path and the variable's name."""
        error = _error(
            tmp_path,
            """
            [[mailboxes]]
            name = "A"
            connection = "imap"
            host = "imap.example.com"
            password_env = "IMAP_PASSWORD"
            """,
            env={"OTHER": "x"},
        )
        assert error.key_path == "mailboxes[0].password_env"
        assert error.message == "environment variable 'IMAP_PASSWORD' is not set or is empty"


class TestOutgoingPrecedence:
    TOP = """
    [outgoing]
    transport = "smtp"
    host = "smtp.top.example"
    port = 587
    security = "tls"
    username = "top"
    password_env = "TOP_PASSWORD"
    from_address = "support@top.example"
    display_name = "Top"
    tenant_id = "top-tenant"
    client_id = "top-client"

    [[mailboxes]]
    name = "Sales"
    connection = "maildir"
    path = "sales"
    """

    def _merged(self, tmp_path: Path, override: str, top: str | None = None) -> OutgoingSettings:
        text = (
            textwrap.dedent(top or self.TOP) + "[mailboxes.outgoing]\n" + textwrap.dedent(override)
        )
        config = _load(tmp_path, text, env={"TOP_PASSWORD": "pw-top", "BOX_PASSWORD": "pw-box"})
        return config.mailboxes[0].effective_outgoing(config.outgoing)

    def test_mailbox_values_win_then_outgoing_then_defaults(self, tmp_path: Path) -> None:
        """[mailboxes.outgoing] keys win, then [outgoing] keys, then the built-in defaults."""
        merged = self._merged(
            tmp_path, 'host = "smtp.sales.example"\nfrom_address = "sales@top.example"\n'
        )
        assert (merged.host, merged.from_address) == ("smtp.sales.example", "sales@top.example")
        assert (merged.port, merged.security, merged.username, merged.display_name) == (
            587,
            "tls",
            "top",
            "Top",
        )
        assert (merged.password, merged.password_env) == ("pw-top", "TOP_PASSWORD")
        assert (merged.message_group, merged.reply_address) == ("Default", None)

    def test_a_value_written_in_the_mailbox_wins_even_when_it_equals_the_default(
        self, tmp_path: Path
    ) -> None:
        """security = "starttls" in the mailbox beats "tls" above, though it is the default."""
        assert self._merged(tmp_path, 'security = "starttls"\n').security == "starttls"

    def test_the_port_is_derived_from_the_merged_security_when_nobody_wrote_one(
        self, tmp_path: Path
    ) -> None:
        """No port written and security = "tls" in the mailbox: the port is 465, not 25."""
        top = """
        [outgoing]
        host = "smtp.top.example"
        [[mailboxes]]
        name = "Sales"
        connection = "maildir"
        path = "sales"
        """
        merged = self._merged(tmp_path, 'security = "tls"\n', top=top)
        assert (merged.security, merged.port) == ("tls", 465)

    def test_a_mailbox_password_replaces_the_password_env_above_it(self, tmp_path: Path) -> None:
        """password and password_env are one setting: the mailbox's password replaces both."""
        inline = self._merged(tmp_path, 'password = "pw-inline"\n')
        assert (inline.password, inline.password_env) == ("pw-inline", None)
        by_env = self._merged(tmp_path, 'password_env = "BOX_PASSWORD"\n')
        assert (by_env.password, by_env.password_env) == ("pw-box", "BOX_PASSWORD")

    def test_extra_keys_merge_key_by_key(self, tmp_path: Path) -> None:
        """tenant_id from the mailbox wins; client_id comes from [outgoing]."""
        merged = self._merged(tmp_path, 'tenant_id = "sales-tenant"\n')
        assert dict(merged.extra) == {"tenant_id": "sales-tenant", "client_id": "top-client"}

    def test_without_an_override_the_top_level_settings_are_used_as_they_are(
        self, tmp_path: Path
    ) -> None:
        """A mailbox with no [mailboxes.outgoing] sends with Config.outgoing itself."""
        config = _load(tmp_path, self.TOP, env={"TOP_PASSWORD": "pw-top"})
        assert config.mailboxes[0].outgoing is None
        assert config.mailboxes[0].effective_outgoing(config.outgoing) is config.outgoing

    def test_settings_built_in_python_merge_by_their_non_default_values(self) -> None:
        """effective_outgoing merges settings built in Python, values set on purpose winning."""
        top = OutgoingSettings(host="smtp.example.com", port=2525, from_address="a@example.com")
        box = MailboxSettings(
            "M", "maildir", outgoing=OutgoingSettings(from_address="b@example.com")
        )
        merged = box.effective_outgoing(top)
        assert (merged.host, merged.port, merged.from_address) == (
            "smtp.example.com",
            2525,
            "b@example.com",
        )


MAILBOX = '[[mailboxes]]\nname = "A"\nconnection = "maildir"\npath = "in"\n'
IMAP = '[[mailboxes]]\nname = "A"\nconnection = "imap"\nhost = "imap.example.com"\n'


@pytest.mark.parametrize(
    ("toml", "key_path", "message"),
    [
        pytest.param(
            MAILBOX + 'port = "abc"\n',
            "mailboxes[0].port",
            "expected an integer, got 'abc'",
            id="wrong-type",
        ),
        pytest.param(
            MAILBOX + "port = 70000\n",
            "mailboxes[0].port",
            "expected a port from 1 to 65535, got 70000",
            id="port-range",
        ),
        pytest.param(
            MAILBOX + "port = true\n",
            "mailboxes[0].port",
            "expected an integer, got true",
            id="bool-is-not-int",
        ),
        pytest.param(
            '[outgoing]\nsecurity = "ssl3"\n',
            "outgoing.security",
            "expected one of 'none', 'starttls', 'tls', got 'ssl3'",
            id="enum",
        ),
        pytest.param(
            '[outgoing]\ntransport = "smpt"\n',
            "outgoing.transport",
            "expected one of 'smtp', 'graph', 'gmail', 'ews', 'maildir', 'memory', got 'smpt' "
            "(did you mean 'smtp'?)",
            id="enum-typo",
        ),
        pytest.param(
            '[[mailboxes]]\nname = "A"\nconnection = "carrier-pigeon"\n',
            "mailboxes[0].connection",
            "expected one of 'office365', 'google', 'pop3', 'imap', 'ews', 'maildir', 'mbox', "
            "'eml-dir', got 'carrier-pigeon'",
            id="connection",
        ),
        pytest.param(
            '[[mailboxes]]\nconnection = "imap"\n',
            "mailboxes[0].name",
            "required (a string)",
            id="missing-name",
        ),
        pytest.param(
            '[[mailboxes]]\nname = "A"\n',
            "mailboxes[0].connection",
            "required (one of 'office365', 'google', 'pop3', 'imap', 'ews', 'maildir', 'mbox', "
            "'eml-dir')",
            id="missing-connection",
        ),
        pytest.param(
            '[[mailboxes]]\nname = "A"\nconnection = "mbox"\n',
            "mailboxes[0].path",
            "required when connection = 'mbox' (relative to this file)",
            id="missing-path",
        ),
        pytest.param(
            '[[mailboxes]]\nname = "A"\nconnection = "imap"\n',
            "mailboxes[0].host",
            "required when connection = 'imap'",
            id="missing-host",
        ),
        pytest.param(
            MAILBOX + '[[mailboxes]]\nname = "a"\nconnection = "mbox"\npath = "x"\n',
            "mailboxes[1].name",
            "duplicate mailbox name 'a' (also mailboxes[0]); names must be unique, ignoring case",
            id="duplicate-name",
        ),
        pytest.param(
            IMAP + 'pasword = "x"\n',
            "mailboxes[0].pasword",
            "unknown key 'pasword' (did you mean 'password'?)",
            id="unknown-key",
        ),
        pytest.param(
            '[mailbox]\nname = "A"\n',
            "mailbox",
            "unknown key 'mailbox' (did you mean 'mailboxes'?)",
            id="unknown-table",
        ),
        pytest.param(
            '[outgoing]\n"odd key" = 1\n',
            'outgoing."odd key"',
            "unknown key 'odd key'; known keys:",
            id="unknown-quoted-key",
        ),
        pytest.param(
            '[mailboxes]\nname = "A"\n',
            "mailboxes",
            "expected an array of tables ([[mailboxes]]), got a table",
            id="table-not-array",
        ),
        pytest.param(
            '[storage]\nurl = "mysql://app:hunter2@db/x"\n',
            "storage.url",
            "unsupported storage url 'mysql://app:***@db/x'; the supported schemes are sqlite "
            "('sqlite:///path/to/file.db'), postgresql ('postgresql://user@host:port/dbname') "
            "and memory ('memory://')",
            id="storage-url",
        ),
        pytest.param(
            '[outgoing]\ntransport = "smtp"\nfrom_address = "a@b.example"\n',
            "outgoing.host",
            "required when transport = 'smtp'",
            id="smtp-needs-host",
        ),
        pytest.param(
            '[outgoing]\ntransport = "maildir"\n',
            "outgoing.path",
            "required when transport = 'maildir' (the folder .eml files go to)",
            id="maildir-needs-path",
        ),
        pytest.param(
            '[outgoing]\ntransport = "memory"\n'
            + MAILBOX
            + '[mailboxes.outgoing]\ntransport = "smtp"\n',
            "mailboxes[0].outgoing.host",
            "required when transport = 'smtp'",
            id="override-incomplete",
        ),
        pytest.param(
            MAILBOX + '[mailboxes.outgoing]\nsecurity = "ssl"\n',
            "mailboxes[0].outgoing.security",
            "expected one of 'none', 'starttls', 'tls', got 'ssl'",
            id="override-key-path",
        ),
        pytest.param(
            '[outgoing]\nhost = "h"\npassword = "x"\npassword_env = "Y"\n',
            "outgoing.password_env",
            "give either 'password' or 'password_env', not both",
            id="password-twice",
        ),
        pytest.param(
            '[outgoing]\nhost = "h"\npassword_env = "not a name"\n',
            "outgoing.password_env",
            "expected an environment variable name like 'IMAP_PASSWORD', got 'not a name'",
            id="env-name",
        ),
        pytest.param(
            '[outgoing]\nhost = "h"\ndisplay_name = "Support\\r\\nBcc: victim@example.com"\n',
            "outgoing.display_name",
            "must not contain control characters (line breaks, NUL …)",
            id="header-injection",
        ),
        pytest.param(
            '[outgoing]\nhost = "h"\nfrom_address = "support"\n',
            "outgoing.from_address",
            "expected an email address like 'support@example.com', got 'support'",
            id="address",
        ),
        pytest.param(
            '[outgoing]\nhost = "h"\ntls_ca_file = "missing.pem"\n',
            "outgoing.tls_ca_file",
            "no such file: ",
            id="ca-file",
        ),
        pytest.param(
            '[outgoing]\nhost = "h"\ntimeout = 0\n',
            "outgoing.timeout",
            "expected a positive number, got 0",
            id="timeout",
        ),
        pytest.param(
            MAILBOX + 'processed = "archive"\n',
            "mailboxes[0].processed",
            "expected one of 'move:<folder>', 'delete', got 'archive'",
            id="processed",
        ),
        pytest.param(
            MAILBOX + 'processed = "keep"\n',
            "mailboxes[0].processed",
            "expected one of 'move:<folder>', 'delete', got 'keep'",
            id="keep-only-for-mbox",
        ),
        pytest.param(
            MAILBOX + 'processed = "move:../../etc"\n',
            "mailboxes[0].processed",
            "folder name '../../etc' must not contain '/' or '\\' or start with '.'",
            id="folder-escape",
        ),
        pytest.param(
            '[[mailboxes]]\nname = "A"\nconnection = "pop3"\nhost = "h"\nprocessed = "move:X"\n',
            "mailboxes[0].processed",
            "POP3 has no folders to move to: use 'delete', not 'move:X'",
            id="pop3-move",
        ),
        pytest.param(
            MAILBOX + 'quarantine_folder = ".."\n',
            "mailboxes[0].quarantine_folder",
            "folder name '..' must not contain '/' or '\\' or start with '.'",
            id="quarantine-folder",
        ),
        pytest.param(
            MAILBOX + 'subject_tag = ":"\n',
            "mailboxes[0].subject_tag",
            "':' has no text to recognise, e.g. '[ID:'",
            id="subject-tag",
        ),
        pytest.param(
            MAILBOX + 'record = "deal"\n',
            "mailboxes[0].record",
            "expected one of 'ticket', 'opportunity', got 'deal'",
            id="record",
        ),
        pytest.param(
            MAILBOX + 'start_from = "today"\n',
            "mailboxes[0].start_from",
            "expected one of 'all', 'now', got 'today'",
            id="start-from",
        ),
        pytest.param(
            MAILBOX + 'hijack = "ignore"\n',
            "mailboxes[0].hijack",
            "expected one of 'new-ticket', 'quarantine', got 'ignore'",
            id="hijack",
        ),
        pytest.param(
            MAILBOX + 'enabled = "yes"\n',
            "mailboxes[0].enabled",
            "expected true or false, got 'yes'",
            id="bool",
        ),
        pytest.param(
            '[[mailboxes]]\nname = "  "\nconnection = "maildir"\npath = "x"\n',
            "mailboxes[0].name",
            "must not be empty",
            id="empty-name",
        ),
        pytest.param(
            IMAP + 'auth = "kerberos"\n',
            "mailboxes[0].auth",
            "expected one of 'password', 'xoauth2', 'oauthbearer', 'oauth2-microsoft', "
            "'oauth2-google', 'oauth2-static', got 'kerberos'",
            id="auth",
        ),
        pytest.param(
            IMAP + "batch_size = 0\n",
            "mailboxes[0].batch_size",
            "must be at least 1, got 0",
            id="batch-size",
        ),
        pytest.param(
            '[[rules]]\nname = "R"\ntype = "ignore"\n',
            "rules[0].sequence",
            "required (an integer; lower runs first)",
            id="rule-sequence-missing",
        ),
        pytest.param(
            '[[rules]]\nname = "R"\ntype = "ignore"\nsequence = 1.5\n',
            "rules[0].sequence",
            "expected an integer, got 1.5",
            id="rule-sequence-type",
        ),
        pytest.param(
            '[[rules]]\nname = "R"\ntype = "delete_all"\nsequence = 1\n',
            "rules[0].type",
            "expected one of ignore, help_request, service_status, alert, "
            "apply_template, formatted_email, file_transfer, inventory, virus, "
            "off_alert, got 'delete_all'",
            id="rule-type",
        ),
        pytest.param(
            '[[rules]]\ntype = "ignore"\nsequence = 1\n',
            "rules[0].name",
            "required (a string)",
            id="rule-name",
        ),
        pytest.param(
            "rules = [1]\n",
            "rules[0]",
            "expected a table, got 1",
            id="rule-not-table",
        ),
        pytest.param(
            "[limits]\nmax_depth = 0\n",
            "limits.max_depth",
            "must be at least 1, got 0",
            id="limits",
        ),
        pytest.param(
            "[limits]\nmax_parts = 1e3\n",
            "limits.max_parts",
            "expected an integer, got 1000.0",
            id="limits-float",
        ),
        pytest.param(
            '[processing]\nbulk = "drop"\n',
            "processing.bulk",
            "expected one of 'ticket', 'ignore', got 'drop'",
            id="bulk",
        ),
        pytest.param(
            '[processing]\ncopies = "merge"\n',
            "processing.copies",
            "expected one of 'skip', 'process', got 'merge'",
            id="copies",
        ),
        pytest.param(
            '[processing]\ndomain = "not a domain"\n',
            "processing.domain",
            "expected a domain name like 'example.com', got 'not a domain'",
            id="domain",
        ),
        pytest.param(
            "[processing]\nmax_send_attempts = 0\n",
            "processing.max_send_attempts",
            "must be at least 1, got 0",
            id="send-attempts",
        ),
        pytest.param(
            "[processing]\nack_throttle_window_minutes = 1970-01-01T00:00:00Z\n",
            "processing.ack_throttle_window_minutes",
            "expected a number, got a date/time",
            id="datetime",
        ),
        pytest.param(
            "outgoing = 5\n",
            "outgoing",
            "expected a table, got 5",
            id="section-type",
        ),
    ],
)
def test_every_mistake_names_its_key_path_and_what_is_allowed(
    tmp_path: Path, toml: str, key_path: str, message: str
) -> None:
    """Each invalid value raises ConfigError with the exact key path and an explanation."""
    error = _error(tmp_path, toml)
    assert error.key_path == key_path
    assert error.message.startswith(message)
    assert str(error) == f"{key_path}: {error.message}"


class TestFileErrors:
    def test_a_toml_syntax_error_has_no_key_path_and_gives_line_and_column(
        self, tmp_path: Path
    ) -> None:
        """Broken TOML is a ConfigError with key path "" and tomllib's line and column."""
        error = _error(tmp_path, '[outgoing]\nhost = "unterminated\n')
        assert error.key_path == ""
        assert "invalid TOML" in error.message
        assert "(at line 2, column 21)" in error.message
        assert str(tmp_path / "halomail.toml") in error.message

    def test_a_missing_file_is_a_config_error_naming_it(self, tmp_path: Path) -> None:
        """load_config of a path that does not exist names the file."""
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path / "nope.toml")
        assert info.value.key_path == ""
        assert info.value.message == f"{tmp_path / 'nope.toml'}: no such configuration file"

    def test_a_folder_is_not_a_config_file(self, tmp_path: Path) -> None:
        """load_config of a folder says so instead of raising IsADirectoryError."""
        with pytest.raises(ConfigError, match="is a folder"):
            load_config(tmp_path)

    def test_a_file_that_is_not_utf8_is_a_config_error(self, tmp_path: Path) -> None:
        """Latin-1 bytes give a ConfigError with the line and offset, not UnicodeDecodeError."""
        path = tmp_path / "halomail.toml"
        path.write_bytes(b'[outgoing]\ndisplay_name = "Caf\xe9"\n')
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.message.endswith(
            "not UTF-8 text (invalid byte at line 2, byte offset 30)"
        )

    def test_deeply_nested_arrays_are_a_config_error_not_a_recursion_error(
        self, tmp_path: Path
    ) -> None:
        """A file nesting arrays thousands deep fails cleanly."""
        path = tmp_path / "halomail.toml"
        path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.key_path == ""

    def test_parse_config_rejects_a_top_level_that_is_not_a_table(self, tmp_path: Path) -> None:
        """parse_config of a list is a ConfigError at the root."""
        with pytest.raises(ConfigError) as info:
            parse_config([1, 2], base_dir=tmp_path)  # type: ignore[arg-type]
        assert (info.value.key_path, info.value.message) == ("", "expected a table, got an array")


_KEYS = sorted(
    {
        "storage", "outgoing", "mailboxes", "rules", "processing", "limits", "url",
        "transport", "host", "port", "security", "username", "password", "password_env",
        "from_address", "display_name", "path", "timeout", "name", "enabled", "connection",
        "processed", "quarantine_folder", "subject_tag", "record", "start_from", "hijack",
        "tenant_id", "client_secret_env", "auth", "batch_size", "sequence", "type",
        "loop_token", "bulk", "domain", "max_depth", "tls_ca_file", "token_env",
    }
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["imap", "maildir", "tls", "smtp", "move:X", "delete", "keep", "ENV"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6))
def test_arbitrary_tables_raise_only_config_error(data: dict[str, Any]) -> None:
    """Whatever the tables hold, parse_config returns a Config or raises ConfigError only."""
    try:
        config = parse_config(data, base_dir=Path("/nonexistent-base"), env={"ENV": "v"})
    except ConfigError as exc:
        error: ConfigError | None = exc
    else:
        assert isinstance(config, Config)
        error = None
    if error is not None:
        assert error.message


AGENTS_AND_TEAMS = """
[processing]
ticket_url = "https://desk.example.com/tickets/{id}"

[[message_groups]]
name = "Friendly"
[message_groups.templates.ticket_closed]
subject = "$tag All done: $summary"
text = "Hi $username, we closed $ticketid."

[[teams]]
name = "Service Desk"

[[teams]]
name = "Sales"
message_group = "Friendly"

[[agents]]
name = "Amy Pond"
email = "Amy@Helpdesk.example"
team = "Service Desk"
signature = \"\"\"
Amy Pond
Service Desk, Example Ltd
\"\"\"

[[mailboxes]]
name = "Sales"
connection = "maildir"
path = "sales"
allowed_teams = ["Sales"]
signature = "The Sales Team"
[mailboxes.agent_signatures]
"amy@helpdesk.example" = "Amy, on behalf of Sales"
"""


class TestAgentsTeamsAndSignatures:
    def test_agents_teams_signatures_and_the_ticket_url_load(self, tmp_path: Path) -> None:
        """[[agents]], [[teams]], a mailbox's restriction and signatures load as written."""
        config = _load(tmp_path, AGENTS_AND_TEAMS)
        assert [(t.name, t.message_group) for t in config.teams] == [
            ("Service Desk", None),
            ("Sales", "Friendly"),
        ]
        (amy,) = config.agents
        assert (amy.name, amy.email, amy.team) == (
            "Amy Pond",
            "amy@helpdesk.example",
            "Service Desk",
        )
        assert amy.signature == "Amy Pond\nService Desk, Example Ltd"
        sales = config.mailbox("Sales")
        assert sales.allowed_teams == ("Sales",)
        assert sales.signature == "The Sales Team"
        assert dict(sales.agent_signatures) == {"amy@helpdesk.example": "Amy, on behalf of Sales"}
        assert config.processing.ticket_url == "https://desk.example.com/tickets/{id}"
        assert [group.name for group in config.message_groups] == ["Friendly"]

    @pytest.mark.parametrize(
        ("change", "key_path", "message"),
        [
            (('team = "Service Desk"', 'team = "Nobody"'), "agents[0].team", "no [[teams]] named"),
            (('allowed_teams = ["Sales"]', 'allowed_teams = ["Sails"]'),
             "mailboxes[0].allowed_teams[0]", "no [[teams]] named 'Sails'"),
            (('allowed_teams = ["Sales"]', "allowed_teams = [3]"),
             "mailboxes[0].allowed_teams[0]", "expected a name"),
            (('"amy@helpdesk.example" =', '"amy" ='),
             'mailboxes[0].agent_signatures.amy', "agent's email address"),
            (('signature = "The Sales Team"', 'signature = "The\\u0000Team"'),
             "mailboxes[0].signature", "control characters"),
            (("tickets/{id}", "tickets/"), "processing.ticket_url", "{id}"),
            (('name = "Sales"\nmessage_group', 'name = "service desk"\nmessage_group'),
             "teams[1].name", "duplicate team"),
            (('message_group = "Friendly"', 'message_group = "Frendly"'),
             "teams[1].message_group", "no message group 'Frendly' (known: Default, Friendly)"),
            (("$ticketid.", "$ticktid."), "message_groups[0].templates.ticket_closed.text",
             "unknown variable"),
        ],
    )  # fmt: skip
    def test_mistakes_name_their_key_path(
        self, tmp_path: Path, change: tuple[str, str], key_path: str, message: str
    ) -> None:
        """Each mistake in agents, teams, restrictions or signatures names its key path."""
        old, new = change
        assert old in AGENTS_AND_TEAMS
        error = _error(tmp_path, AGENTS_AND_TEAMS.replace(old, new, 1))
        assert error.key_path == key_path
        assert message in str(error)


OAUTH_MAILBOX = """
[[mailboxes]]
name = "Exchange"
connection = "ews"
host = "mail.example.com"
username = "EXAMPLE\\\\helpdesk"
password = "pw"
user_id = "helpdesk@example.com"
access_type = "impersonation"
delete_type = "MoveToDeletedItems"

[[mailboxes]]
name = "Office"
connection = "office365"
auth = "oauth2-microsoft"
tenant_id = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
refresh_token_env = "REFRESH"
authority = "https://login.microsoftonline.us/contoso.onmicrosoft.com"
scopes = ["https://graph.microsoft.com/Mail.ReadWrite", "offline_access"]
token_cache = "tokens/office.json"
user_id = "support@contoso.com"
"""


class TestConnectorKeys:
    def test_oauth_and_exchange_keys_reach_the_connectors(self, tmp_path: Path) -> None:
        """OAuth2 and EWS keys are validated and handed to the connectors in extra."""
        config = _load(tmp_path, OAUTH_MAILBOX, env={"REFRESH": "rt-secret"})
        exchange, office = config.mailboxes
        assert exchange.extra["access_type"] == "impersonation"
        assert exchange.extra["delete_type"] == "MoveToDeletedItems"
        assert office.extra["auth"] == "oauth2-microsoft"
        assert office.extra["refresh_token"] == "rt-secret"
        assert office.extra["refresh_token_env"] == "REFRESH"
        assert office.extra["scopes"] == (
            "https://graph.microsoft.com/Mail.ReadWrite",
            "offline_access",
        )
        assert office.extra["token_cache"] == tmp_path / "tokens" / "office.json"
        assert "rt-secret" not in repr(office)

    @pytest.mark.parametrize(
        ("change", "key_path"),
        [
            (('authority = "https://', 'authority = "http://'), "mailboxes[1].authority"),
            (('access_type = "impersonation"', 'access_type = "admin"'),
             "mailboxes[0].access_type"),
            (('delete_type = "MoveToDeletedItems"', 'delete_type = "Shred"'),
             "mailboxes[0].delete_type"),
            (('scopes = ["https', 'scopes = [1, "https'), "mailboxes[1].scopes[0]"),
        ],
    )  # fmt: skip
    def test_bad_connector_keys_name_their_key_path(
        self, tmp_path: Path, change: tuple[str, str], key_path: str
    ) -> None:
        """A wrong OAuth2 or EWS value is refused at its key path."""
        old, new = change
        assert old in OAUTH_MAILBOX
        error = _error(tmp_path, OAUTH_MAILBOX.replace(old, new, 1), env={"REFRESH": "x"})
        assert error.key_path == key_path


def test_the_example_in_docs_configuration_loads(tmp_path: Path) -> None:
    """The annotated halomail.toml in docs/configuration.md is a valid configuration."""
    import re
    import tomllib

    text = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert block is not None
    (tmp_path / "inbox").mkdir()  # the Maildir it reads
    config = parse_config(
        tomllib.loads(block.group(1)),
        base_dir=tmp_path,
        env={"SMTP_PASSWORD": "x", "SMS_PIN": "1234"},
    )
    assert [m.name for m in config.mailboxes] == ["Support"]
    assert [g.name for g in config.message_groups] == ["Friendly"]
    assert config.sms is not None
    assert config.agents[0].team == "Service Desk"
