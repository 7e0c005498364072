"""A minimal Django project for the tests of ``halomail.contrib.django``.

:mod:`.settings` is what the subprocess tests name in ``DJANGO_SETTINGS_MODULE``;
:func:`configure` sets the same up in the test process itself, once, and only when a
Django test asks for it (no other test sees Django configured).
"""
