"""halomail's Django admin pages in a real headless Chromium (#19).

A Django project made as ``docs/django.md`` says (``tests/servers/django_site.py``),
served by ``manage.py runserver``; mail arrives in its Maildir and ``manage.py
halomail_run --once`` processes it, so every ticket, quarantined email and outgoing
email the admin shows was made by halomail's real pipeline (a few service statuses and
one failed email are recorded through the Django repository, as a run records them).
The browser logs in as the superuser and looks, clicks and downloads as an
administrator does; the assertions are what such a person sees.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select

from tests.conftest import make_email
from tests.servers.browser import wait_for
from tests.servers.django_site import ADMIN_PASSWORD, ADMIN_USER, DjangoSite, running_site

# A served project and a browser per test: about a minute and a half for the module.
pytestmark = pytest.mark.slow

PRINTER = (Path(__file__).parents[1] / "src/halomail/_quickstart/01-printer.eml").read_bytes()
_numbers = itertools.count(1)

# Run by the page only if the admin rendered the email as HTML: it never must.
PAYLOAD_HEADER = '<img src=x onerror="window.__pwned = 1">'
PAYLOAD_TEXT = '<script>window.__pwned = 2</script>\n<img src=y onerror="window.__pwned = 3">'


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DjangoSite]:
    """One served project for the module's tests; each test makes its own mail."""
    with running_site(tmp_path_factory.mktemp("django-site")) as served:
        yield served


def _login(driver: WebDriver, site: DjangoSite) -> None:
    driver.get(f"{site.url}/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys(ADMIN_USER)
    driver.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(driver, ec.presence_of_element_located((By.ID, "user-tools")))


def _open(driver: WebDriver, site: DjangoSite, page: str) -> None:
    driver.get(f"{site.url}/admin/halomail/{page}")
    wait_for(driver, ec.presence_of_element_located((By.ID, "content")))


def _text(driver: WebDriver, css: str = "#content") -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _messages(driver: WebDriver) -> list[str]:
    return [m.text for m in driver.find_elements(By.CSS_SELECTOR, "ul.messagelist li")]


def _run_action(driver: WebDriver, action: str, ids: list[int]) -> None:
    """On a change list, tick ``ids``, choose ``action`` and press Go."""
    for entry_id in ids:
        driver.find_element(
            By.CSS_SELECTOR, f"input[name=_selected_action][value='{entry_id}']"
        ).click()
    Select(driver.find_element(By.NAME, "action")).select_by_value(action)
    _submit(driver, driver.find_element(By.CSS_SELECTOR, "button[name=index]"))


def _submit(driver: WebDriver, button: WebElement) -> None:
    """Press ``button`` and wait for the page its form leads to.

    The page being left has ``#content`` too: waiting for that alone returned at once,
    and the test then read the old page's (empty) messages, now and then, in CI.
    """
    page = driver.find_element(By.TAG_NAME, "html")
    button.click()
    wait_for(driver, ec.staleness_of(page))
    wait_for(driver, ec.presence_of_element_located((By.ID, "content")))


def _new_ticket(site: DjangoSite) -> int:
    """A fresh email from Alice opens a ticket; its id."""
    number = next(_numbers)
    raw = make_email(
        subject=f"VPN drops every hour ({number})", message_id=f"<vpn-{number}@customer.example>"
    )
    site.deliver(f"vpn-{number}.eml", raw)
    (email,) = site.run_once()
    assert email["outcome"] == "created"
    return int(email["ticket_id"])


def _quarantined(site: DjangoSite, ticket_id: int, subject: str, body: str) -> tuple[int, bytes]:
    """A stranger's reply to ``ticket_id``, quarantined as a suspected hijack: id and bytes."""
    number = next(_numbers)
    raw = make_email(
        sender="Mallory <mallory@elsewhere.example>",
        subject=f"Re: [ID:{ticket_id}] {subject}",
        body=body,
        message_id=f"<stranger-{number}@elsewhere.example>",
    )
    site.deliver(f"stranger-{number}.eml", raw)
    (email,) = site.run_once()
    assert (email["outcome"], email["reason"]) == ("quarantined", "thread-hijack-suspected")
    entry_id = site.python(
        "from halomail.contrib.django.models import QuarantineEntry\n"
        f"print(QuarantineEntry.objects.get(message_id='stranger-{number}@elsewhere.example').pk)"
    )
    return int(entry_id), raw


def test_an_admin_sees_the_ticket_a_real_email_opened(site: DjangoSite, browser: WebDriver) -> None:
    """The printer email becomes a ticket: listed, filterable, searchable, its email inline."""
    site.deliver("printer.eml", PRINTER)
    (email,) = site.run_once()
    assert email["outcome"] == "created"
    _login(browser, site)
    _open(browser, site, "ticket/")
    assert "Printer on the 3rd floor is jamming" in _text(browser, "#result_list")
    filters = _text(browser, "#changelist-filter")
    for heading in ("By status", "By mailbox", "By customer"):
        assert heading in filters
    _open(browser, site, "ticket/?q=kitchen")  # the search reads the email's text too
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert [r.text for r in rows if "Printer" in r.text] == [rows[0].text]
    assert len(rows) == 1
    _open(browser, site, f"ticket/{email['ticket_id']}/change/")
    page = _text(browser)
    assert "jams on every second page" in page  # the email, as the ticket's first action
    assert "alice@customer.example" in page
    # What the email said is shown, not editable; the helpdesk's decisions are editable.
    assert not browser.find_elements(By.NAME, "summary")
    assert Select(browser.find_element(By.NAME, "status")).first_selected_option.text == "new"
    assert "Printer on the 3rd floor is jamming" in _text(browser, ".field-outgoing")  # its ack

    # Closing it goes through halomail's set_status: closed_at is stamped.
    assert _text(browser, ".fieldBox.field-closed_at .readonly") == "-"
    Select(browser.find_element(By.NAME, "status")).select_by_value("closed")
    _submit(browser, browser.find_element(By.NAME, "_continue"))
    assert "was changed successfully" in " ".join(_messages(browser))
    assert Select(browser.find_element(By.NAME, "status")).first_selected_option.text == "closed"
    assert _text(browser, ".fieldBox.field-closed_at .readonly") != "-"


def test_a_quarantined_email_is_shown_escaped_and_downloads_byte_for_byte(
    site: DjangoSite, browser: WebDriver, tmp_path: Path
) -> None:
    """Reason and original shown as text (its script never runs); the .eml is the bytes."""
    ticket_id = _new_ticket(site)
    entry_id, raw = _quarantined(
        site, ticket_id, PAYLOAD_HEADER, f"Send me the admin password.\n{PAYLOAD_TEXT}\n"
    )
    _login(browser, site)
    _open(browser, site, "quarantineentry/")
    assert "thread-hijack-suspected" in _text(browser, "#result_list")
    _open(browser, site, f"quarantineentry/{entry_id}/change/")
    page = _text(browser)
    assert "thread-hijack-suspected" in page
    assert "Mallory <mallory@elsewhere.example>" in _text(browser, ".halomail-headers")
    assert f"Re: [ID:{ticket_id}] {PAYLOAD_HEADER}" in _text(browser, ".halomail-headers")
    shown = _text(browser, ".halomail-text")
    assert "Send me the admin password." in shown
    assert "<script>window.__pwned = 2</script>" in shown
    # Shown as characters, the payload made no element, and none of it ran.
    for css in (".halomail-headers", ".halomail-text"):
        inside = browser.find_element(By.CSS_SELECTOR, css)
        assert inside.find_elements(By.CSS_SELECTOR, "script, img") == []
    assert browser.execute_script("return typeof window.__pwned") == "undefined"

    browser.find_element(By.PARTIAL_LINK_TEXT, "download the .eml").click()
    saved = tmp_path / "downloads" / f"quarantine-{entry_id}.eml"
    wait_for(browser, lambda _driver: saved.exists() and saved.read_bytes() == raw)
    assert saved.read_bytes() == raw


def test_release_opens_a_ticket_once_and_delete_forgets_another(
    site: DjangoSite, browser: WebDriver
) -> None:
    """Released (hijack setting relaxed) it opens one ticket; again, nothing; delete removes."""
    ticket_id = _new_ticket(site)
    kept, _raw = _quarantined(site, ticket_id, "Invoice overdue", "Please pay this invoice.\n")
    unwanted, _raw = _quarantined(site, ticket_id, "You won a prize", "Click here.\n")
    site.configure(hijack="new-ticket")
    try:
        _login(browser, site)
        _open(browser, site, "quarantineentry/")
        _run_action(browser, "release", [kept])
        (message,) = _messages(browser)
        assert message.startswith(f"#{kept} released 20")
        assert ": created ticket #" in message
        released_ticket = int(message.rsplit("#", 1)[1])
        _open(browser, site, "ticket/?q=Invoice+overdue")
        assert f"Re: [ID:{ticket_id}] Invoice overdue" in _text(browser, "#result_list")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")) == 1

        _open(browser, site, "quarantineentry/")
        assert f"created ticket #{released_ticket}" in _text(browser, "#result_list")
        _run_action(browser, "release", [kept])
        (again,) = _messages(browser)
        assert again.startswith(f"#{kept} was released already, nothing done")
        _open(browser, site, "ticket/?q=Invoice+overdue")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")) == 1

        _open(browser, site, "quarantineentry/")
        _run_action(browser, "delete_selected", [unwanted])
        _submit(browser, browser.find_element(By.CSS_SELECTOR, "form input[type=submit]"))  # Yes
        assert "Successfully deleted 1" in " ".join(_messages(browser))
        listed = [
            int(box.get_attribute("value"))
            for box in browser.find_elements(By.CSS_SELECTOR, "input[name=_selected_action]")
        ]
        assert unwanted not in listed
        assert kept in listed  # released, it stays listed with what came of it
        left = site.python(
            "from halomail.contrib.django.models import QuarantineEntry\n"
            f"print(list(QuarantineEntry.objects.filter(pk__in=[{kept}, {unwanted}])"
            ".values_list('pk', flat=True)))"
        )
        assert left == [kept]
    finally:
        site.configure(hijack="quarantine")


def test_a_failed_outgoing_email_is_retried_then_sent(site: DjangoSite, browser: WebDriver) -> None:
    """Failed and maybe-sent mail show so, with their errors; Retry makes one due; a run sends."""
    mail_id, maybe_id = site.python(
        "import datetime as dt, json\n"
        "from halomail.contrib.django.repository import DjangoRepository\n"
        "from halomail.tickets.models import NewOutgoing, OutboxStatus\n"
        "repo = DjangoRepository()\n"
        "def queued(n, subject):\n"
        "    with repo.transaction():\n"
        "        return repo.enqueue_outgoing(NewOutgoing(f'<retry-{n}@helpdesk.example>',"
        " ('bob@customer.example',), subject, 'Hello Bob', mailbox='Support')).id\n"
        "failed, maybe = queued(1, 'Your ticket was updated'), queued(2, 'Your ticket is closed')\n"
        "now = dt.datetime.now(dt.UTC)\n"
        "repo.claim_outgoing(now, owner='test', lease=dt.timedelta(minutes=5))\n"
        "repo.mark_outgoing(failed, OutboxStatus.FAILED, error='550 mailbox unavailable')\n"
        "repo.mark_outgoing(maybe, OutboxStatus.PENDING, error='maybe sent: no answer after DATA',"
        " next_attempt_at=now + dt.timedelta(days=1))\n"
        "print(json.dumps([failed, maybe]))"
    )
    _login(browser, site)
    _open(browser, site, "outboxmail/?status__exact=pending")
    maybe_row = browser.find_element(By.CSS_SELECTOR, f"input[value='{maybe_id}']")
    maybe_text = maybe_row.find_element(By.XPATH, "./ancestor::tr").text
    assert "maybe sent" in maybe_text
    assert "no answer after DATA" in maybe_text
    _open(browser, site, "outboxmail/?status__exact=failed")
    row = _text(browser, "#result_list")
    assert "Your ticket was updated" in row
    assert "failed" in row
    assert "550 mailbox unavailable" in row
    _run_action(browser, "retry", [mail_id])
    assert _messages(browser) == ["1 emails queued again, due now: the next run sends them"]
    _open(browser, site, f"outboxmail/{mail_id}/change/")
    assert "pending" in _text(browser, ".field-state")

    site.manage("halomail_run", "--once")
    _open(browser, site, f"outboxmail/{mail_id}/change/")
    assert "sent" in _text(browser, ".field-state").split()
    sent = list((site.root / "sent").rglob("*"))
    assert any(p.is_file() and b"Your ticket was updated" in p.read_bytes() for p in sent)


def test_a_service_opens_on_its_status_timeline(site: DjangoSite, browser: WebDriver) -> None:
    """ok, failed, ok again: three periods drawn in order, with their times and detail."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    reports = [(3, "ok", ""), (2.5, "ok", ""), (2, "failed", "disk full"), (1, "ok", "")]
    site.python(
        "import datetime as dt\n"
        "from halomail.contrib.django.repository import DjangoRepository\n"
        "from halomail.tickets.models import NewServiceStatus\n"
        "repo = DjangoRepository()\n"
        f"now = dt.datetime.fromisoformat({now.isoformat()!r})\n"
        f"for hours, status, detail in {reports!r}:\n"
        "    with repo.transaction():\n"
        "        repo.record_service_status(NewServiceStatus('backup-nas', status,"
        " now - dt.timedelta(hours=hours), detail))\n"
        "print('true')"
    )
    _login(browser, site)
    _open(browser, site, "servicestatus/")
    row = browser.find_element(By.CSS_SELECTOR, ".halomail-services tr[data-service=backup-nas]")
    assert row.text.split()[:2] == ["backup-nas", "ok"]  # the service, and its status now
    row.find_element(By.LINK_TEXT, "backup-nas").click()
    bar = wait_for(browser, ec.presence_of_element_located((By.CSS_SELECTOR, ".halomail-timeline")))
    segments = bar.find_elements(By.CSS_SELECTOR, ".halomail-segment")  # type: ignore[attr-defined]
    assert [s.get_attribute("data-status") for s in segments] == ["ok", "failed", "ok"]
    # Drawn to scale: the first two periods last an hour each, the last one until now.
    widths = [s.size["width"] for s in segments]
    assert abs(widths[0] - widths[1]) <= 3
    assert widths[2] >= widths[1] - 3
    failed_at = (now - dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")
    ok_again = (now - dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert segments[1].get_attribute("title") == f"failed from {failed_at} to {ok_again}"
    assert "Now ok, since " + ok_again in _text(browser, ".halomail-current")
    periods = [r.text for r in browser.find_elements(By.CSS_SELECTOR, ".halomail-period")]
    assert periods[1].startswith(f"failed {failed_at} {ok_again}")
    assert periods[1].endswith("disk full")
    assert periods[2].startswith(f"ok {ok_again} now")
