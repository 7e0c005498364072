"""Tickets: the models, the :class:`~halomail.tickets.repository.TicketRepository` protocol a
host implements, and the in-memory and SQLite repositories that ship."""
