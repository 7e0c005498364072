"""``halomail authorize MAILBOX``: sign a mailbox's user in, keep the token where it belongs.

Microsoft 365 (``office365``, or an IMAP/POP3 mailbox with ``tenant_id``) runs msal's
device-code flow: the command prints a page and a code, the user types the code there
on any device, and the sign-in lands in the mailbox's ``token_cache``. Google
(``google``, or ``auth = "oauth2-google"``) runs the installed-app flow: the command
prints (and, without ``--no-browser``, opens) Google's consent page, whose answer comes
back to a one-off server on 127.0.0.1, and writes an ``authorized_user`` file to the
mailbox's ``credentials_file``. A configuration that keeps the refresh token in an
environment variable (``refresh_token_env``) gets the ``export`` line to run instead.

Also here: the lines of ``check-config`` that say how each mailbox sends, since a
mailbox signed in this way sends with that same sign-in.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halomail.backends.auth import signin
from halomail.backends.auth.oauth import (
    GOOGLE_MAIL_SCOPES,
    MICROSOFT_GRAPH_SCOPES,
    MICROSOFT_MAIL_SCOPES,
)
from halomail.config.loader import Config, MailboxSettings, load_config
from halomail.errors import ConfigError

__all__ = ["print_sending_routes", "register"]

EXIT_OK = 0
# The Gmail API's scope, as the google connector asks for it (gmail.modify covers sending).
_GMAIL_API_SCOPES = ("https://www.googleapis.com/auth/gmail.modify",)
_MICROSOFT_LOGIN = "https://login.microsoftonline.com"


def register(commands: Any) -> None:
    """Add ``authorize`` to the command's subparsers."""
    authorize = commands.add_parser(
        "authorize",
        help="sign a mailbox's user in (Microsoft device code, Google consent page) "
        "and store the token where the mailbox's configuration says",
    )
    authorize.add_argument("mailbox", help="the mailbox's name in halomail.toml")
    authorize.add_argument(
        "--no-browser",
        action="store_true",
        help="only print the address to open (for a server without a browser)",
    )
    authorize.set_defaults(handler=_cmd_authorize)


def _cmd_authorize(args: argparse.Namespace) -> int:
    config = load_config(args.config, env=_env_for_sign_in(Path(args.config), args.mailbox))
    settings = _mailbox(config, args.mailbox)
    if _provider(settings) == "microsoft":
        _authorize_microsoft(settings)
    else:
        _authorize_google(settings, open_browser=not args.no_browser)
    return EXIT_OK


def _env_for_sign_in(path: Path, name: str) -> Mapping[str, str]:
    """The environment, where an unset ``refresh_token_env`` of this mailbox is tolerated.

    Signing in is how that variable gets its value: its absence must not stop the
    configuration from loading for this command.
    """
    env = dict(os.environ)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return env  # load_config reports the file's problem itself
    for table in data.get("mailboxes", []):
        if isinstance(table, dict) and str(table.get("name", "")).casefold() == name.casefold():
            variable = table.get("refresh_token_env")
            if isinstance(variable, str) and variable and variable not in env:
                env[variable] = "not-signed-in-yet"
    return env


def _mailbox(config: Config, name: str) -> MailboxSettings:
    for settings in config.mailboxes:
        if settings.name.casefold() == name.casefold():
            return settings
    known = ", ".join(repr(m.name) for m in config.mailboxes)
    raise ConfigError("mailboxes", f"no mailbox named {name!r} (there are {known})")


def _provider(settings: MailboxSettings) -> str:
    extra = settings.extra
    auth = str(extra.get("auth") or "")
    if settings.connection == "office365" or auth == "oauth2-microsoft" or extra.get("tenant_id"):
        return "microsoft"
    if settings.connection == "google" or auth == "oauth2-google":
        return "google"
    raise ConfigError(
        f"{settings.key_path}.auth",
        f"mailbox {settings.name!r} signs in with a password: there is nothing to authorize "
        "(set auth = 'oauth2-microsoft' or 'oauth2-google' to sign in with OAuth2)",
    )


def _need(settings: MailboxSettings, key: str, why: str) -> str:
    value = settings.extra.get(key)
    if not value:
        raise ConfigError(f"{settings.key_path}.{key}", f"required to sign in: {why}")
    return str(value)


def _verify(settings: MailboxSettings) -> bool | str:
    return str(settings.tls_ca_file) if settings.tls_ca_file else True


def _scopes(settings: MailboxSettings, default: tuple[str, ...]) -> list[str]:
    return list(settings.extra.get("scopes") or default)


def _show(text: str) -> None:
    print(text, flush=True)


def _authorize_microsoft(settings: MailboxSettings) -> None:
    kp, extra = settings.key_path, settings.extra
    if extra.get("client_secret") or extra.get("certificate_file"):
        raise ConfigError(
            f"{kp}.client_secret",
            "this mailbox's app signs in with its own secret or certificate (application "
            "permissions): no user signs in, so there is nothing to authorize",
        )
    tenant = _need(settings, "tenant_id", "the directory (tenant) id or domain")
    client_id = _need(settings, "client_id", "the app registration's id")
    cache = extra.get("token_cache")
    variable = extra.get("refresh_token_env")
    if cache is None and variable is None:
        raise ConfigError(
            f"{kp}.token_cache",
            'say where to keep the sign-in: token_cache = "<file>" (or refresh_token_env)',
        )
    graph = settings.connection == "office365"
    default = MICROSOFT_GRAPH_SCOPES if graph else MICROSOFT_MAIL_SCOPES
    token = signin.microsoft_device_sign_in(
        client_id=client_id,
        authority=str(extra.get("authority") or f"{_MICROSOFT_LOGIN}/{tenant}"),
        custom_authority=bool(extra.get("authority")),
        scopes=_scopes(settings, default),
        token_cache=Path(cache) if cache is not None else None,
        show=_show,
        verify=_verify(settings),
    )
    if cache is not None:
        print(f"Signed in. The sign-in is kept in {cache}; `halomail run` uses it.")
    else:
        _print_export(str(variable))
        print(f"export {variable}={shlex.quote(token)}")


def _print_export(variable: str) -> None:
    print(
        f"Signed in. halomail.toml reads the refresh token from ${variable}: set it as below "
        "(it is printed here once, and never logged).",
        file=sys.stderr,
    )


def _authorize_google(settings: MailboxSettings, *, open_browser: bool) -> None:
    kp, extra = settings.key_path, settings.extra
    client_id = _need(settings, "client_id", "the OAuth client (type Desktop app)")
    client_secret = _need(settings, "client_secret", "the OAuth client's secret")
    target = extra.get("credentials_file")
    variable = extra.get("refresh_token_env")
    if target is None and variable is None:
        raise ConfigError(
            f"{kp}.credentials_file",
            'say where to keep the sign-in: credentials_file = "<file>" (or refresh_token_env)',
        )
    default = _GMAIL_API_SCOPES if settings.connection == "google" else GOOGLE_MAIL_SCOPES
    if open_browser:
        print("Opening the sign-in page in your browser. If it does not open, open:")
    else:
        print("Open this address in a browser and allow access:")
    token = signin.google_installed_app_sign_in(
        client_id=client_id,
        client_secret=client_secret,
        scopes=_scopes(settings, default),
        show=_show,
        open_browser=open_browser,
        token_uri=extra.get("token_uri") or None,
        verify=_verify(settings),
    )
    if target is not None:
        signin.write_google_user_file(
            Path(target),
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=token,
            token_uri=extra.get("token_uri") or None,
        )
        print(f"Signed in. The credentials are kept in {target}; `halomail run` uses them.")
    else:
        _print_export(str(variable))
        print(f"export {variable}={shlex.quote(token)}")


# -- check-config: how each mailbox sends ----------------------------------------------


def print_sending_routes(config: Config, *, json_output: bool) -> None:
    """One line per enabled mailbox that does not send with ``[outgoing]``: how it sends.

    The others send as ``check-config``'s summary line says (``outgoing via …``).
    """
    for settings in config.mailboxes:
        if not settings.enabled or (settings.send_with != "mailbox" and not settings.outgoing):
            continue
        outgoing = settings.effective_outgoing(config.outgoing)
        own = settings.send_with == "mailbox"
        if json_output:
            event = {
                "event": "sending",
                "mailbox": settings.name,
                "transport": outgoing.transport,
                "from": outgoing.from_address,
                "with": "mailbox" if own else "mailboxes.outgoing",
            }
            print(json.dumps(event))
            continue
        sender = f" as {outgoing.from_address}" if outgoing.from_address else ""
        why = "its own sign-in" if own else "[mailboxes.outgoing]"
        print(f"mailbox {settings.name} sends with {outgoing.transport}{sender} ({why})")
