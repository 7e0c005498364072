"""Integrations with host frameworks: ``halomail.contrib.django``.

Nothing in halomail imports this package; it sits on top of every layer.
"""
