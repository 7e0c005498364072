"""halomail as a reusable Django app: add ``"halomail.contrib.django"`` to ``INSTALLED_APPS``.

Install with ``pip install 'halomail[django]'``. The app's label is ``halomail``; its
models (:mod:`halomail.contrib.django.models`) hold tickets, people, assets, files,
the outbox, the quarantine, monitored services and halomail's ledger in Django's
database, and :class:`DjangoRepository` is halomail's repository over them. The
management commands ``halomail_run`` and ``halomail_worker`` run halomail on Django's
database. See ``docs/django.md``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from halomail.contrib.django.repository import DjangoRepository

__all__ = ["DjangoRepository"]


def __getattr__(name: str) -> Any:
    # Imported on first use: Django imports this package while it loads its apps, before
    # the models (which the repository imports) may be.
    if name == "DjangoRepository":
        from halomail.contrib.django.repository import DjangoRepository

        return DjangoRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
