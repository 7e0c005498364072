"""A throwaway Django project with halomail's app, served by ``manage.py runserver``.

What a host developer builds from ``docs/django.md``: ``INSTALLED_APPS`` with the admin
and ``halomail.contrib.django``, ``HALOMAIL = {"config": ...}`` naming a
``halomail.toml`` whose mailbox is a Maildir, a SQLite database, ``migrate``, and a
superuser. :func:`start_site` writes it into a folder, migrates it, and serves it on
a free port of ``127.0.0.1`` (``runserver`` with ``DEBUG`` on serves the admin's static
files); :meth:`DjangoSite.stop` stops the server, and the ``django_site`` fixtures
always do.

Everything runs in subprocesses (``manage.py`` commands), as a host runs it: the test
process never configures Django, so other tests may configure it as they need.

Run alone to see it work: ``python -m tests.servers.django_site`` (prints the admin's
address until Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "DjangoSite",
    "make_site",
    "running_site",
    "start_site",
]

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-pw-4c1e"  # a test fixture, not a secret
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 20.0
_COMMAND_TIMEOUT = 180

SETTINGS = """\
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET_KEY = "test-only-not-a-secret"
DEBUG = True  # runserver serves the admin's CSS and JavaScript
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "halomail.contrib.django",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "site_urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": HERE / "site.db",
        # The server and the tests' commands share the file: writers queue for the lock.
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
HALOMAIL = {"config": str(HERE / "halomail.toml")}
"""

URLS = """\
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
"""

MANAGE = """\
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

CONFIG = """\
[outgoing]
transport = "maildir"
path = "{root}/sent"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "{root}/inbox"
processed = "move:Processed"
hijack = "{hijack}"
"""


class DjangoSite:
    """The project in ``root``, its ``manage.py`` commands, and its running server.

    Attributes:
        root: The project's folder (settings, database, Maildir, halomail.toml).
        url: The server's base address, ``http://127.0.0.1:PORT``.
    """

    def __init__(self, root: Path, port: int, *, database_url: str | None = None) -> None:
        self.root = root
        self.database_url = database_url
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.inbox = root / "inbox"
        self._server: subprocess.Popen[bytes] | None = None
        self._log = root / "runserver.log"

    def write(self, *, hijack: str = "quarantine") -> None:
        """Write the project's files; ``hijack`` is the mailbox's setting for strangers."""
        (self.root / "site_settings.py").write_text(SETTINGS + _database(self.database_url))
        (self.root / "site_urls.py").write_text(URLS)
        (self.root / "manage.py").write_text(MANAGE)
        self.configure(hijack=hijack)
        for sub in ("cur", "new", "tmp"):
            (self.inbox / sub).mkdir(parents=True, exist_ok=True)

    def configure(self, *, hijack: str) -> None:
        """Rewrite ``halomail.toml``: what the next run (or release) reads."""
        (self.root / "halomail.toml").write_text(CONFIG.format(root=self.root, hijack=hijack))

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run ``manage.py ARGS`` in the project; its output, or an error with its stderr."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)}: {done.returncode}\n{done.stderr}")
        return done.stdout

    def python(self, code: str) -> Any:
        """Run ``code`` in ``manage.py shell``; it prints one JSON value, returned here."""
        out = self.manage("shell", "--no-imports", "-c", code)
        return json.loads(out.strip().splitlines()[-1])

    def deliver(self, name: str, raw: bytes) -> None:
        """Put an email into the Maildir's ``new``, as a mail server would."""
        (self.inbox / "new" / name).write_bytes(raw)

    def run_once(self) -> list[dict[str, Any]]:
        """``manage.py halomail_run --once --json``: one object per email processed."""
        out = self.manage("halomail_run", "--once", "--json")
        objects = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [o for o in objects if o.get("event", "email") == "email"]

    def start(self) -> None:
        """Serve the project and wait until the admin's login page answers."""
        log = self._log.open("ab")
        self._server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers():
            if self._server.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"runserver did not start:\n{self.log()}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            login = f"{self.url}/admin/login/"  # http on loopback, built here
            with urllib.request.urlopen(login, timeout=5) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        """What the server wrote (requests, tracebacks)."""
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def stop(self) -> None:
        """Stop the server (killed if it does not stop when asked)."""
        if self._server is None:
            return
        self._server.terminate()
        try:
            self._server.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait(timeout=_STOP_TIMEOUT)
        self._server = None


def _database(url: str | None) -> str:
    """Settings lines putting the default database on PostgreSQL ``url`` (none for SQLite)."""
    if url is None:
        return ""
    parts = urllib.parse.urlsplit(url)
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": urllib.parse.unquote(parts.username or ""),
        "PASSWORD": urllib.parse.unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
    }
    return f"DATABASES = {{'default': {database!r}}}\n"


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_site(
    root: Path,
    *,
    users: Sequence[tuple[str, str, bool]] = (),
    database_url: str | None = None,
) -> DjangoSite:
    """Write and migrate a project in ``root``, with the superuser and ``users``; not served.

    Args:
        root: An empty folder.
        users: More logins, as (username, password, is_staff).
        database_url: An empty PostgreSQL database for Django's; ``None`` for a SQLite
            file in ``root``.
    """
    site = DjangoSite(root, _free_port(), database_url=database_url)
    site.write()
    site.manage("migrate", "--noinput")
    site.manage(
        "createsuperuser",
        "--noinput",
        f"--username={ADMIN_USER}",
        "--email=admin@helpdesk.example",
        env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
    )
    for username, password, is_staff in users:
        site.python(
            "from django.contrib.auth.models import User\n"
            f"User.objects.create_user({username!r}, password={password!r}, "
            f"is_staff={is_staff!r})\n"
            "print('true')"
        )
    return site


def start_site(root: Path, *, users: Sequence[tuple[str, str, bool]] = ()) -> DjangoSite:
    """:func:`make_site`, served: stop it with :meth:`DjangoSite.stop`."""
    site = make_site(root, users=users)
    site.start()
    return site


@contextlib.contextmanager
def running_site(root: Path, **kwargs: Any) -> Iterator[DjangoSite]:
    """:func:`start_site`, stopped when the block ends, even on an error."""
    site = start_site(root, **kwargs)
    try:
        yield site
    finally:
        site.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder, running_site(Path(folder)) as demo:
        print(f"{demo.url}/admin/  ({ADMIN_USER} / {ADMIN_PASSWORD}); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)
