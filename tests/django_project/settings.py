"""Settings of the test project: halomail's app on the SQLite file ``HALOMAIL_TEST_DB``.

``HALOMAIL_TEST_CONFIG`` names the ``halomail.toml`` of ``settings.HALOMAIL``.
"""

from __future__ import annotations

import os

SECRET_KEY = "halomail-tests-only"  # a test project's key, never deployed
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["halomail.contrib.django"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("HALOMAIL_TEST_DB", "halomail-django.db"),
        # Writers queue for SQLite's lock instead of failing half-way (Django 5.1+).
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
    }
}
HALOMAIL = {"config": os.environ.get("HALOMAIL_TEST_CONFIG", "halomail.toml")}
