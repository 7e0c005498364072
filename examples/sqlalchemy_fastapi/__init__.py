"""halomail embedded in a SQLAlchemy 2 + FastAPI helpdesk (see README.md in this folder).

- :mod:`.models`: the host's tables (tickets, actions, people, assets) and halomail's
  ledger and outbox, as SQLAlchemy declarative models;
- :mod:`.repository`: :class:`~.repository.SQLAlchemyTicketRepository`, halomail's
  repository over those models, proven by halomail's contract suite;
- :mod:`.app`: the FastAPI app: ``GET /tickets`` and the agent reply
  ``POST /tickets/{id}/replies``, recorded and emailed in one transaction;
- ``python -m sqlalchemy_fastapi MAILDIR DATABASE``: a Maildir processed into the database.
"""
