"""The documentation site builds strictly, offline, with every page and the API reference (#19).

``mkdocs build --strict`` (mkdocs.yml at the root, the ``docs`` extra) fails on any
warning: a broken link or anchor, a page missing from the nav, a docstring griffe cannot
read. The build runs once per module, with every proxy pointing at a closed port, so a
theme or plugin that fetched anything from the network would fail it.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import griffe
import pytest
import yaml

import halomail

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"

# The pages of each audience's path, and what the index sends each audience to.
AUDIENCES = ("start-developer", "start-operator", "start-administrator")
# Reference pages and a name each must document (rendered from its docstring).
REFERENCE = {
    "reference/processor": ("MailProcessor", "build_processor", "open_repository", "run_once"),
    "reference/repository": ("TicketRepository", "IngestLedger", "enqueue_outgoing"),
    "reference/repositories": ("SQLiteTicketRepository", "PostgreSQLTicketRepository"),
    "reference/models": ("NewTicket", "OutboxMail", "QuarantineEntry"),
    "reference/notifier": ("Notifier", "ticket_email", "expand_text", "Notice"),
    "reference/config": ("Config", "MailboxSettings", "StorageSettings"),
    "reference/testing": ("TicketRepositoryContract", "TransactionContract"),
    "reference/errors": ("RepositoryError", "DuplicateKeyError"),
    "reference/mail": ("parse_email", "InboundEmail", "ParseLimits"),
    "reference/connectors": ("MailboxConnector", "MaildirConnector", "MailTransport"),
    "reference/rules": ("EmailRule", "RuleEngine", "ServiceDefinition", "Template"),
    "reference/logging": ("RedactingFilter",),
}
# What reStructuredText would look like had it reached the page unconverted.
RST_LEFT = re.compile(r":(?:class|meth|func|data|attr|mod|exc|obj):`|\.\. version\w+::")
# The docstring of a value's type (str, bool) shown as if it were an attribute's own.
BORROWED = re.compile(r"str\(object=''\)|bool\(x\) -> bool|int\(\[x\]\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once by ``mkdocs build --strict`` with no network to reach."""
    out = tmp_path_factory.mktemp("site")
    closed = "http://127.0.0.1:9"  # the discard port: nothing answers there
    env = {
        **os.environ,
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "http_proxy": closed,
        "https_proxy": closed,
        "NO_PROXY": "",
        "no_proxy": "",
        "NO_MKDOCS_2_WARNING": "1",
    }
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-6000:]
    warnings = [line for line in built.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [], "\n".join(warnings)
    return out


def _text(site: Path, page: str) -> str:
    """The visible text of a built page (``page`` as in the nav, without ``.md``)."""
    document = (site / page / "index.html").read_text(encoding="utf-8")
    article = re.search(r"<article.*?</article>", document, flags=re.DOTALL)
    assert article is not None, page
    return html.unescape(re.sub(r"<[^>]+>", "", article.group(0)))


def _nav_pages(nav: object) -> list[str]:
    """Every page file the nav of mkdocs.yml names, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def test_the_site_builds_strictly_and_offline(site: Path) -> None:
    """mkdocs build --strict succeeds with no warning, and no page loads web fonts."""
    assert (site / "index.html").is_file()
    pages = list(site.rglob("*.html"))
    assert len(pages) > 25
    assert not [p for p in pages if "fonts.googleapis.com" in p.read_text(encoding="utf-8")]


def test_every_page_of_docs_is_in_the_nav() -> None:
    """Each docs/*.md and docs/reference/*.md is in mkdocs.yml's nav, and the nav names no other."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = _nav_pages(config["nav"])
    on_disk = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(in_nav) == on_disk
    assert len(in_nav) == len(set(in_nav)), "a page is in the nav twice"


def test_the_index_sends_each_audience_down_its_path(site: Path) -> None:
    """The home page links to the developer, operator and administrator paths."""
    index = (site / "index.html").read_text(encoding="utf-8")
    for page in AUDIENCES:
        assert f'href="{page}/"' in index, page
    assert 'href="reference/"' in index


@pytest.mark.parametrize("page", sorted(REFERENCE))
def test_the_reference_documents_the_public_api(site: Path, page: str) -> None:
    """Each reference page shows its objects, their own docstrings rendered as Markdown."""
    text = _text(site, page)
    for name in REFERENCE[page]:
        assert name in text, f"{page} does not document {name}"
    assert not RST_LEFT.search(text), RST_LEFT.findall(text)[:5]
    assert not BORROWED.search(text), BORROWED.findall(text)[:5]


def test_every_name_halomail_exports_is_in_the_reference(site: Path) -> None:
    """Each name of halomail.__all__ has its entry (an anchor) on a reference page."""
    anchors: set[str] = set()
    for page in (site / "reference").rglob("*.html"):
        anchors |= set(re.findall(r'id="(halomail\.[\w.]+)"', page.read_text(encoding="utf-8")))
    names = [name for name in halomail.__all__ if name != "__version__"]
    missing = [name for name in names if not any(a.endswith(f".{name}") for a in anchors)]
    assert missing == []


def test_ticket_email_reference_shows_its_arguments_and_reasons(site: Path) -> None:
    """The Notifier page renders ticket_email's parameters and its Raises table."""
    text = _text(site, "reference/notifier")
    section = text[text.index("ticket_email(") :]
    for word in ("ticket_id", "note", "agent", "KeyError", "SendingRestrictedError"):
        assert word in section[:4000], word


def test_agent_replies_are_in_the_site_with_their_transaction_rules(site: Path) -> None:
    """The agent-replies page is built, and says replies commit with their email or not at all."""
    text = _text(site, "agent-replies")
    assert "ticket_email" in text
    assert "rolls back both" in text
    assert "Transactions do not nest" in text


# -- the griffe extension that turns reStructuredText into Markdown ----------------------------


def _extension() -> ModuleType:
    """scripts/griffe_rst.py, loaded from its file as mkdocs loads it."""
    spec = importlib.util.spec_from_file_location("griffe_rst", ROOT / "scripts/griffe_rst.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        (":class:`~halomail.errors.RepositoryError`", "`RepositoryError`"),
        (":class:`halomail.Notice`", "`halomail.Notice`"),
        (":meth:`~halomail.runner.MailProcessor.send_outbox`", "`send_outbox()`"),
        (":data:`the limit <halomail.testing.MAX>`", "`the limit`"),
        (".. versionadded:: 0.1.0", "*Added in version 0.1.0*."),
        (
            "Text.\n\n    .. versionchanged:: 0.5.0\n       ``status`` and\n       ``site``.",
            "Text.\n\n    *Changed in version 0.5.0*: ``status`` and ``site``.",
        ),
        ("the fixture::\n\n    code", "the fixture:\n\n    code"),
        (
            "A ``literal`` stays; so does a dict: {'a': 1}",
            "A ``literal`` stays; so does a dict: {'a': 1}",
        ),
    ],
)
def test_the_extension_shows_rst_as_sphinx_would(written: str, shown: str) -> None:
    """Roles become code, version directives sentences, and '::' one colon."""
    assert _extension().markdown(written) == shown


def test_an_attrs_class_gets_the_init_attrs_makes(tmp_path: Path) -> None:
    """AttrsInit reads an attrs class's fields into __init__: aliases, factories, kw_only, init."""
    (tmp_path / "shapes.py").write_text(
        "from typing import ClassVar\n"
        "import attrs\n\n"
        "@attrs.frozen\n"
        "class Base:\n"
        "    name: str\n\n"
        "@attrs.frozen(kw_only=True)\n"
        "class Shape(Base):\n"
        "    kinds: ClassVar[tuple[str, ...]] = ()\n"
        "    sides: int = 3\n"
        "    tags: list[str] = attrs.field(factory=list)\n"
        "    _secret: str = attrs.field(alias='secret', default='x')\n"
        "    cache: dict[str, int] = attrs.field(init=False)\n",
        encoding="utf-8",
    )
    extension = _extension()
    module = griffe.load(
        "shapes", search_paths=[tmp_path], extensions=griffe.Extensions(extension.AttrsInit())
    )
    init = module["Shape"].members["__init__"]
    shown = [(p.name, p.kind.value, str(p.default)) for p in init.parameters][1:]
    assert shown == [
        ("name", "positional or keyword", "None"),
        ("sides", "keyword-only", "3"),
        ("tags", "keyword-only", "list()"),
        ("secret", "keyword-only", "'x'"),
    ]


def test_the_extension_reads_a_hostile_docstring_in_bounded_work() -> None:
    """A docstring of 200,000 colons and backquotes is rewritten (the patterns are linear)."""
    hostile = (":class:`" * 20_000) + ("::" * 50_000) + (".. versionadded:: " * 5_000)
    assert len(_extension().markdown(hostile)) > 100_000
