"""Mail backends: connectors that read mailboxes and transports that send mail.

The contracts are in :mod:`halomail.backends.base`; each backend is one module beside it.
"""
