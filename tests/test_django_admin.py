"""Who may see halomail's Django admin pages (#19): Django's test client, no browser.

The client runs inside the project's ``manage.py shell`` (``tests/servers/django_site.py``),
so this test process never configures Django. Each case checks the answer a person of
that kind gets: sent to the login page, refused, or shown the page; then what the
superuser's *Release* does. Django's database is a SQLite file, then PostgreSQL.
"""

from __future__ import annotations

import pytest

from tests.servers.django_site import ADMIN_PASSWORD, ADMIN_USER, DjangoSite, make_site
from tests.servers.postgres import PostgresServer

PAGES = {
    "tickets": "/admin/halomail/ticket/",
    "quarantine": "/admin/halomail/quarantineentry/",
    "original": "/admin/halomail/quarantineentry/{entry}/original/",
    "outbox": "/admin/halomail/outboxmail/",
    "services": "/admin/halomail/servicestatus/",
    "timeline": "/admin/halomail/servicestatus/timeline/backup-nas/",
}
RAW = (
    b"From: a@customer.example\r\nSubject: Kept aside\r\n"
    b"Message-ID: <kept@customer.example>\r\n\r\nbody\r\n"
)

# Seeds a quarantined email and a service status, then asks every page as each login.
SCRIPT = """\
import datetime as dt, json, re
from django.contrib.auth.models import Permission, User
from django.test import Client
from halomail.contrib.django.repository import DjangoRepository
from halomail.tickets.models import NewQuarantine, NewServiceStatus

repo = DjangoRepository()
with repo.transaction():
    entry = repo.quarantine(NewQuarantine("Support", "processing-error", {raw!r}, "boom"))
    repo.record_service_status(NewServiceStatus("backup-nas", "ok", dt.datetime.now(dt.UTC)))
viewer = User.objects.get(username="viewer")
viewer.user_permissions.add(Permission.objects.get(codename="view_quarantineentry"))
pages = {{name: url.format(entry=entry.id) for name, url in {pages!r}.items()}}
seen = {{}}
for login in (None, "visitor", "clerk", "viewer", {admin!r}):
    client = Client()
    if login is not None:
        assert client.login(username=login, password={admin_pw!r} if login == {admin!r} else "pw")
    answers = {{}}
    for name, url in pages.items():
        response = client.get(url)
        answers[name] = {{
            "status": response.status_code,
            "to_login": response.get("Location", "").startswith("/admin/login/"),
            "body": response.content.decode("latin-1") if name == "original" else "",
            "disposition": response.get("Content-Disposition", ""),
            "release_offered": 'value="release"' in response.content.decode("utf-8", "replace"),
        }}
    seen[login or "anonymous"] = answers

# The superuser releases the email: processed again, it opens a ticket, the list says so.
client = Client()
client.login(username={admin!r}, password={admin_pw!r})
client.post(pages["quarantine"], {{"action": "release", "_selected_action": [entry.id]}})
listed = client.get(pages["quarantine"]).content.decode()
seen["release"] = {{
    "listed": re.findall(r'<td class="field-released">([^<]*)</td>', listed),
    "tickets": [t.summary for t in repo.list_tickets()],
}}

# The superuser releases an email whose mailbox is no longer configured.
with repo.transaction():
    gone = repo.quarantine(NewQuarantine("Gone", "processing-error", {raw!r}, "boom"))
client = Client()
client.login(username={admin!r}, password={admin_pw!r})
page = client.post(
    pages["quarantine"], {{"action": "release", "_selected_action": [gone.id]}}, follow=True
).content.decode()
seen["release_gone"] = {{
    "said": [line.strip() for line in page.splitlines() if "not released" in line],
    "kept": repo.get_quarantine(gone.id) is not None,
    "released": repo.get_state(f"quarantine-release:{{gone.id}}"),
}}
print(json.dumps(seen))
"""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def answers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, dict[str, object]]]:
    """Every page's answer to anonymous, non-staff, staff, quarantine viewer and superuser,
    with Django's database on SQLite, then on the session's PostgreSQL."""
    database_url = None
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        if not server.running():
            server.start()
        database_url = server.new_database()
    site: DjangoSite = make_site(
        tmp_path_factory.mktemp("django-admin"),
        users=[("visitor", "pw", False), ("clerk", "pw", True), ("viewer", "pw", True)],
        database_url=database_url,
    )
    script = SCRIPT.format(raw=RAW, pages=PAGES, admin=ADMIN_USER, admin_pw=ADMIN_PASSWORD)
    seen: dict[str, dict[str, dict[str, object]]] = site.python(script)
    return seen


@pytest.mark.parametrize("login", ["anonymous", "visitor"])
def test_anonymous_and_non_staff_are_sent_to_the_login_page(
    answers: dict[str, dict[str, dict[str, object]]], login: str
) -> None:
    """No page, not even the original's download, shows to someone who is not staff."""
    for name, answer in answers[login].items():
        assert (name, answer["status"], answer["to_login"]) == (name, 302, True)


def test_staff_without_permissions_are_refused_every_page(
    answers: dict[str, dict[str, dict[str, object]]],
) -> None:
    """Staff with no halomail permission get 403 everywhere, the download included."""
    assert {name: a["status"] for name, a in answers["clerk"].items()} == dict.fromkeys(PAGES, 403)


def test_a_quarantine_viewer_sees_it_and_downloads_but_may_not_release(
    answers: dict[str, dict[str, dict[str, object]]],
) -> None:
    """view_quarantineentry alone: the list and the original, no Release action, no outbox."""
    viewer = answers["viewer"]
    assert (viewer["quarantine"]["status"], viewer["original"]["status"]) == (200, 200)
    assert viewer["original"]["body"] == RAW.decode("latin-1")
    assert viewer["quarantine"]["release_offered"] is False
    assert (viewer["tickets"]["status"], viewer["outbox"]["status"]) == (403, 403)
    assert viewer["timeline"]["status"] == 403


def test_the_superuser_sees_every_page_and_gets_the_original_as_a_file(
    answers: dict[str, dict[str, dict[str, object]]],
) -> None:
    """Every page answers 200; the original comes as an attachment, byte for byte."""
    admin = answers[ADMIN_USER]
    assert {name: a["status"] for name, a in admin.items()} == dict.fromkeys(PAGES, 200)
    assert admin["original"]["body"] == RAW.decode("latin-1")
    assert str(admin["original"]["disposition"]).startswith('attachment; filename="quarantine-')
    assert admin["quarantine"]["release_offered"] is True


def test_a_release_into_a_mailbox_no_longer_configured_says_so_and_keeps_it(
    answers: dict[str, dict[str, dict[str, object]]],
) -> None:
    """Release of an email from mailbox "Gone": an error on the page, the entry untouched."""
    outcome = answers["release_gone"]
    (said,) = outcome["said"]
    assert "not released" in str(said)
    assert "no enabled mailbox named &#x27;Gone&#x27;" in str(said)
    assert (outcome["kept"], outcome["released"]) == (True, None)


def test_a_release_opens_a_ticket_and_the_list_says_which(
    answers: dict[str, dict[str, dict[str, object]]],
) -> None:
    """Released by the superuser, the email opens a ticket; its row names that ticket."""
    outcome = answers["release"]
    (row,) = outcome["listed"]
    assert "created ticket #1" in str(row)
    assert outcome["tickets"] == ["Kept aside"]
