"""OAuth2 logins shared by IMAP, POP3 and SMTP: the SASL payloads and the one retry.

Each protocol carries the payload its own way (IMAP ``AUTHENTICATE``, POP3 ``AUTH``,
SMTP ``AUTH`` with an initial response), but what it carries, and what happens when the
server refuses the token, is the same everywhere and lives here:

* :func:`xoauth2_payload` (Google's and Microsoft's XOAUTH2) and
  :func:`oauthbearer_payload` (RFC 7628 §3.1) build the bytes before base64;
* :func:`read_token` asks a provider for a token and refuses an empty or malformed one;
* :func:`login_with_token` tries a token and, when the server refuses it (not "try
  later"), invalidates the provider's cache and tries one fresh token, exactly once.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = [
    "TOKEN_MECHANISMS",
    "MalformedTokenError",
    "TokenSource",
    "login_with_token",
    "oauthbearer_payload",
    "probe_token",
    "read_token",
    "sasl_payload",
    "xoauth2_payload",
]

#: The SASL mechanisms that carry an OAuth2 bearer token.
TOKEN_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")

# Characters that would end a SASL field or a protocol line early.
_UNSAFE = "\r\n\0\x01"

Result = TypeVar("Result")


class _HasToken(Protocol):
    def token(self) -> str: ...  # pragma: no cover - a protocol


#: A token provider: an object with ``token()`` (and optionally ``invalidate()``), such
#: as :class:`~halomail.backends.auth.oauth.TokenProvider`, or a plain callable.
TokenSource = _HasToken | Callable[[], str]


class MalformedTokenError(ValueError):
    """The provider returned an empty token, or one with a line break or SASL separator."""


def xoauth2_payload(username: str, token: str) -> bytes:
    """The XOAUTH2 initial response: ``user=<u>^Aauth=Bearer <t>^A^A`` (before base64).

    Args:
        username: The mailbox's login (the email address, for Google and Microsoft).
        token: The access token.
    """
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer_payload(username: str, token: str, host: str, port: int) -> bytes:
    """The OAUTHBEARER initial response of RFC 7628 §3.1 (before base64).

    The GS2 header names the user with ``,`` and ``=`` escaped as ``=2C`` and ``=3D``
    (RFC 5801 §4), then come the host, the port and the bearer token.
    """
    user = username.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def sasl_payload(mechanism: str, username: str, token: str, host: str, port: int) -> bytes:
    """The initial response of ``mechanism`` (``XOAUTH2`` or ``OAUTHBEARER``).

    Raises:
        ValueError: Another mechanism.
    """
    if mechanism == "OAUTHBEARER":
        return oauthbearer_payload(username, token, host, port)
    if mechanism == "XOAUTH2":
        return xoauth2_payload(username, token)
    raise ValueError(f"{mechanism!r} carries no OAuth2 token")


def read_token(provider: TokenSource) -> str:
    """Ask ``provider`` for an access token (``provider.token()``, else ``provider()``).

    Raises:
        MalformedTokenError: The token is empty or holds a character that would break
            the SASL exchange.
        Exception: Whatever the provider raises (e.g. ``AuthenticationError``).
    """
    getter = getattr(provider, "token", None)
    token = str(getter() if callable(getter) else provider())  # type: ignore[operator]
    if not token or any(c in token for c in _UNSAFE):
        raise MalformedTokenError("the token provider returned an empty or malformed token")
    return token


def login_with_token(
    provider: TokenSource,
    attempt: Callable[[str], Result],
    retry: Callable[[Result], bool],
    *,
    get_token: Callable[[], str] | None = None,
) -> tuple[Result, str]:
    """Log in with a token; when it is refused, with one fresh token, once.

    A token the provider believed valid can be revoked early; the provider's
    ``invalidate()`` (when it has one) then drops its cache, and the next token is
    tried. A provider that hands out the same token again is not retried.

    Args:
        provider: The token source (its ``invalidate`` is called before the retry).
        attempt: Sends one login with the given token and returns the server's answer.
        retry: Whether that answer is a refusal worth one fresh token (not a success,
            and not a "try later" answer).
        get_token: Reads a token (default :func:`read_token` of ``provider``); lets a
            caller translate the provider's errors or remember tokens to redact.

    Returns:
        The last answer, and the token that got it.
    """
    read = get_token or (lambda: read_token(provider))
    token = read()
    answer = attempt(token)
    if not retry(answer):
        return answer, token
    invalidate = getattr(provider, "invalidate", None)
    if not callable(invalidate):
        return answer, token
    invalidate()
    fresh = read()
    if fresh == token:
        return answer, token
    return attempt(fresh), fresh


def probe_token(provider: TokenSource) -> str:
    """What a transport that sends over HTTP can test without sending: a token is granted.

    Returns:
        The line a probe reports, e.g. ``OAuth2 token granted (sending not tried)``.

    Raises:
        Exception: Whatever the provider raises (``AuthenticationError`` for refused
            credentials), or :class:`MalformedTokenError`.
    """
    read_token(provider)
    return "OAuth2 token granted (sending not tried)"
