"""halomail as a reusable Django app: add ``"halomail.contrib.django"`` to ``INSTALLED_APPS``.

Install with ``pip install 'halomail[django]'``. The app's label is ``halomail``; its
models (:mod:`halomail.contrib.django.models`) hold tickets, people, assets, files,
the outbox, the quarantine, monitored services and halomail's ledger in Django's
database. See ``docs/django.md``.

.. versionadded:: 0.1.0
"""
