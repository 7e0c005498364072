"""The key path → line locator of `check-config`'s messages (#17)."""

from __future__ import annotations

import pytest

from halomail.config._lines import KeyLines, line_of

TOML = '''\
# halomail.toml
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "smtp"
host = "smtp.example"

[[mailboxes]]
name = "Support"
port = 993
signature = """
name = "not a key: inside a multi-line string"
"""

[[mailboxes]]
name = "Sales"
"port" = 994
allowed_teams = ["Desk", "Field"]

[mailboxes.outgoing]   # the second mailbox's
host = "relay.example"

[[rules]]
name = "Invoices"
match.subject = "invoice"
'''


@pytest.mark.parametrize(
    ("key_path", "line"),
    [
        ("storage.url", 3),
        ("outgoing", 5),
        ("outgoing.security", 5),  # not written: its table's header
        ("mailboxes[0].name", 10),
        ("mailboxes[0].port", 11),
        ("mailboxes[0].signature", 12),
        ("mailboxes[1]", 16),
        ("mailboxes[1].name", 17),
        ("mailboxes[1].port", 18),  # a quoted key
        ("mailboxes[1].allowed_teams[1]", 19),  # an array's item: the array's line
        ("mailboxes[1].outgoing", 21),
        ("mailboxes[1].outgoing.host", 22),
        ("mailboxes[1].outgoing.port", 21),
        ("rules[0].match.subject", 26),  # a dotted key
        ("rules[0].type", 24),
        ("mailboxes", 9),
    ],
)
def test_each_key_path_is_found_on_its_line(key_path: str, line: int) -> None:
    """A key path gives its own line, or its nearest written parent's."""
    assert line_of(TOML, key_path) == line


def test_a_key_in_no_table_written_has_no_line() -> None:
    """Nothing of `teams[0].name` is in the file: no line, rather than a wrong one."""
    assert line_of(TOML, "teams[0].name") is None
    assert line_of(TOML, "") is None


def test_a_hostile_file_is_scanned_once_line_by_line() -> None:
    """100,000 lines of unclosed quotes and brackets, and lines of 200,000 spaces or dots
    that never reach "=": the scan goes through them (no backtracking), and finds the key."""
    hostile = ('"' * 50 + "[" * 50 + " = '\n") * 100_000 + "[[a]]\n" + "=" * 100_000 + "\n"
    hostile += "a" + " " * 200_000 + "\n" + "a" + " ." * 100_000 + "\n"
    locator = KeyLines(hostile + "[late]\nkey = 1\n")
    assert locator.line("late.key") == 100_006
    assert locator.line("a[0]") == 100_001
