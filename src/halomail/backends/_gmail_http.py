"""The Gmail API's HTTP layer behind :mod:`halomail.backends.gmail`: requests and answers.

:class:`GmailClient` sends each request with a fresh bearer token and decides every
answer in one place: a 401 renews the token once, 429 / 403 rate limits / 5xx are waited
out per ``Retry-After`` or with backoff (:class:`GmailRetry`), anything else becomes a
:class:`GmailApiError` (a 4xx) or a transient error.

A request that must not be repeated (``messages.send``) goes out once
(``execute(…, repeat=False)``): on a connection of its own, which httplib2 is kept from
re-sending, and a 5xx, a timeout or a connection lost after it went out is
:class:`GmailAnswerLost`, since Gmail may have carried it out.
"""

from __future__ import annotations

import base64
import binascii
import errno
import http.client
import io
import ipaddress
import json
import logging
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httplib2  # type: ignore[import-untyped]
from googleapiclient.discovery import build  # type: ignore[import-untyped]
from googleapiclient.errors import HttpError  # type: ignore[import-untyped]
from googleapiclient.http import MediaIoBaseUpload  # type: ignore[import-untyped]

from halomail.backends._common import chosen_token_provider, retry_after_seconds
from halomail.backends.auth.oauth import TokenProvider
from halomail.errors import (
    AuthenticationError,
    ConfigError,
    ConnectorError,
    TransientConnectorError,
)

__all__ = [
    "DEFAULT_API_ENDPOINT",
    "GMAIL_SCOPES",
    "GmailAnswerLost",
    "GmailApiError",
    "GmailClient",
    "GmailRetry",
    "api_endpoint_of",
    "decode_raw",
    "message_upload",
    "number_of",
    "text_of",
    "token_provider_of",
]

log = logging.getLogger("halomail.backends.gmail")

#: Reading, labelling, trashing and sending: everything halomail does, and no more (it
#: never deletes for good, which alone would need ``https://mail.google.com/``).
GMAIL_SCOPES = ("https://www.googleapis.com/auth/gmail.modify",)

DEFAULT_API_ENDPOINT = "https://gmail.googleapis.com/"


# Throttling answers (Gmail's "Usage limits" and "Resolve errors" pages): the same request
# succeeds once the rate has dropped.
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


@attrs.frozen
class GmailRetry:
    """How throttling and server errors (429, 403 rate limits, 5xx) are waited out.

    The wait is what ``Retry-After`` says, else ``base_wait`` doubled on each try, as
    Google asks of clients ("exponential backoff").

    Args:
        max_attempts: Tries per request, the first included, before giving up for this run.
        max_wait: A longer wait is not slept: the run gives up at once instead of blocking.
        base_wait: The first backoff when the server names no wait, in seconds.
        sleep: How to wait (replaceable in tests).

    .. versionadded:: 0.1.0
    """

    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    max_wait: float = 120.0
    base_wait: float = 1.0
    sleep: Callable[[float], None] = attrs.field(default=time.sleep, eq=False, repr=False)


class GmailApiError(ConnectorError):
    """The Gmail API refused a request with a 4xx answer other than 401 and throttling.

    Args:
        message: What went wrong, with Google's error reason.
        status: The HTTP status.
        reason: Google's ``errors[0].reason`` (``notFound``, ``insufficientPermissions``
            …), or ``""``.
        mailbox: The mailbox's name.
    """

    def __init__(self, message: str, *, status: int, reason: str, mailbox: str | None = None):
        self.status = status
        self.reason = reason
        super().__init__(message, mailbox=mailbox)


class GmailAnswerLost(TransientConnectorError):
    """A request that must not be repeated reached the Gmail API, and its answer was lost.

    A 5xx, a timeout, or a connection closed without an answer: Gmail may have carried
    the request out (sent the mail), so it is not repeated.

    Args:
        message: What went wrong.
        mailbox: The mailbox's (or transport's) name.
        retry_after: Seconds the server asked us to wait, or ``None``.
    """


class GmailClient:
    """The Gmail API service object, with authentication, retries and error translation.

    Args:
        name: The mailbox's (or transport's) name, for logs and errors.
        api_endpoint: The API's root, e.g. ``https://gmail.googleapis.com/``.
        token_provider: Hands out access tokens.
        timeout: Seconds each request may take.
        ca_file: A CA bundle to trust instead of httplib2's default bundle.
        retry: How throttling is honoured.
    """

    def __init__(
        self,
        name: str,
        *,
        api_endpoint: str,
        token_provider: TokenProvider,
        timeout: float,
        ca_file: Path | None,
        retry: GmailRetry,
    ) -> None:
        self.name = name
        self.api_endpoint = _check_endpoint(api_endpoint)
        self._host = urllib.parse.urlsplit(self.api_endpoint).netloc
        self._token_provider = token_provider
        self._timeout = timeout
        self._ca_file = ca_file
        self.retry = retry
        self._http: Any = None
        self._users: Any = None

    @property
    def token_provider(self) -> TokenProvider:
        """Where the access tokens come from."""
        return self._token_provider

    def users(self) -> Any:
        """The ``users`` resource of the service, built on first use (no request is made)."""
        if self._users is None:
            http = self._new_http(httplib2.Http)
            self._http = http
            # static_discovery: the discovery document shipped with the library, so
            # building the client never fetches one; the endpoint is ours to choose.
            service = build(
                "gmail",
                "v1",
                http=http,
                static_discovery=True,
                cache_discovery=False,
                client_options={"api_endpoint": self.api_endpoint},
            )
            self._users = service.users()
        return self._users

    def close(self) -> None:
        """Close the connections; the next request opens new ones."""
        if self._http is not None:
            self._http.close()

    def _new_http(self, kind: Any) -> Any:
        http = kind(timeout=self._timeout, ca_certs=str(self._ca_file) if self._ca_file else None)
        # A redirect would carry the bearer token to wherever it points.
        http.follow_redirects = False
        return http

    def execute(
        self, make: Callable[[Any], Any], *, what: str, repeat: bool = True
    ) -> dict[str, Any]:
        """Build a request with ``make(users)``, send it, and return its JSON answer.

        Args:
            make: Builds the request from the ``users`` resource.
            what: What the request does, for logs and errors.
            repeat: ``False`` for a request that must not be carried out twice
                (``messages.send``): it is sent once, and a 5xx, a timeout or a lost
                connection after it went out is :class:`GmailAnswerLost`. Throttling
                (429, 403 rate limits) and a refused token are still retried: Gmail
                did nothing with the request then.

        Raises:
            AuthenticationError: The token was refused twice, or none could be had.
            GmailAnswerLost: With ``repeat=False``: the outcome is unknown.
            TransientConnectorError: Unreachable, timed out, throttled beyond patience,
                a server error beyond patience, or an answer that is not JSON.
            GmailApiError: Any other 4xx answer (the caller decides what 404 means).
        """
        request = make(self.users())
        request.uri = self._on_endpoint(request.uri)
        renewed = False
        tries = 0
        while True:
            tries += 1
            # The provider caches its token and refreshes it before expiry: asking it
            # each time costs nothing and never sends a token that is about to die.
            request.headers["authorization"] = f"Bearer {self._token_provider.token()}"
            try:
                return self._answer_of(request, what, repeat)
            except HttpError as exc:
                status = int(exc.resp.status)
                reason, message = _error_of(exc)
                retry_after = retry_after_seconds(exc.resp.get("retry-after"))
            if status == 401 and not renewed:
                # Tokens can be revoked or rotated before their expiry: one fresh token
                # is worth a try before the administrator is bothered.
                log.info(
                    "mailbox %s: the Gmail API refused the access token (%s); renewing it",
                    self.name,
                    reason,
                )
                self._token_provider.invalidate()
                renewed = True
                continue
            if status == 401:
                raise AuthenticationError(_refused_advice(reason), mailbox=self.name)
            if status >= 500 and not repeat:
                raise GmailAnswerLost(
                    f"{what}: the Gmail API answered {status} {reason}; it may have been "
                    "done all the same",
                    mailbox=self.name,
                    retry_after=retry_after,
                )
            if _throttled(status, reason):
                self._wait_out(tries, status, reason, retry_after, what)
                continue
            raise self._status_error(status, reason, message, what)

    def _on_endpoint(self, uri: str) -> str:
        """``uri`` with the endpoint's scheme.

        googleapiclient builds upload URLs from the discovery document's https root and
        swaps in only the host of ``api_endpoint``: an http endpoint (loopback only)
        would be spoken to in TLS.
        """
        scheme = urllib.parse.urlsplit(self.api_endpoint).scheme
        parts = urllib.parse.urlsplit(uri)
        if parts.netloc == self._host and parts.scheme != scheme:
            return urllib.parse.urlunsplit(parts._replace(scheme=scheme))
        return uri

    def _answer_of(self, request: Any, what: str, repeat: bool) -> dict[str, Any]:
        """Send ``request`` once; its JSON answer, or the transport error translated."""
        # A request that must not be repeated gets a connection of its own: never a
        # stale kept-alive one, and one httplib2 does not re-send on (_SendOnce).
        connection = None if repeat else self._new_http(_SendOnceHttp)
        try:
            # num_retries=0: the library's own retries ignore Retry-After and sleep
            # where tests cannot see; execute() decides instead.
            answer = request.execute(http=connection, num_retries=0)
        except TimeoutError as exc:
            error = TransientConnectorError if repeat else GmailAnswerLost
            raise error(
                f"{what}: the Gmail API did not answer within {self._timeout:g} s",
                mailbox=self.name,
            ) from exc
        except (OSError, httplib2.HttpLib2Error, http.client.HTTPException, _AnswerLost) as exc:
            if repeat or _not_sent(exc):
                raise TransientConnectorError(
                    f"{what}: cannot reach {self._host} ({type(exc).__name__})",
                    mailbox=self.name,
                ) from exc
            raise GmailAnswerLost(
                f"{what}: the connection to {self._host} ended before the Gmail API "
                f"answered ({type(exc).__name__}); it may have been done all the same",
                mailbox=self.name,
            ) from exc
        except ValueError as exc:
            # A 2xx answer that is not JSON: a proxy or captive portal answered.
            error = TransientConnectorError if repeat else GmailAnswerLost
            raise error(
                f"{what}: {self._host} answered something that is not the Gmail API's JSON",
                mailbox=self.name,
            ) from exc
        finally:
            if connection is not None:
                connection.close()
        return answer if isinstance(answer, dict) else {}

    def _wait_out(
        self, tries: int, status: int, reason: str, retry_after: float | None, what: str
    ) -> None:
        """Sleep before the next try, or raise when the wait is past patience."""
        wait = self.retry.base_wait * 2 ** (tries - 1) if retry_after is None else retry_after
        if tries >= self.retry.max_attempts or wait > self.retry.max_wait:
            raise TransientConnectorError(
                f"{what}: the Gmail API is throttling or failing ({status} {reason}, "
                f"retry after {wait:g} s) after {tries} tries; the next run tries again",
                mailbox=self.name,
                # Only a wait the server named is kept for the next run.
                retry_after=retry_after,
            )
        log.warning(
            "mailbox %s: %s: the Gmail API answered %d %s; waiting %g s",
            self.name,
            what,
            status,
            reason,
            wait,
        )
        self.retry.sleep(wait)

    def _status_error(self, status: int, reason: str, message: str, what: str) -> Exception:
        detail = f"{reason}: {message}" if message else reason
        if status == 403 and reason == "dailyLimitExceeded":
            # The project's daily quota: it comes back tomorrow, nothing is wrong with us.
            return TransientConnectorError(
                f"{what}: the Gmail API daily quota is used up ({detail})", mailbox=self.name
            )
        if status == 403 and reason == "accessNotConfigured":
            return GmailApiError(
                f"{what}: the Gmail API answered 403 ({detail}). Enable the Gmail API in "
                "the Google Cloud project of the service account or OAuth client",
                status=status,
                reason=reason,
                mailbox=self.name,
            )
        if status == 403:
            return GmailApiError(
                f"{what}: the Gmail API denied access ({detail}). Grant "
                f"{' '.join(GMAIL_SCOPES)}: for a service account, to its client id under "
                "domain-wide delegation in the Google Admin console, impersonating this "
                "mailbox (subject); for a user, in the consent given when signing in",
                status=status,
                reason=reason,
                mailbox=self.name,
            )
        return GmailApiError(
            f"{what}: the Gmail API answered {status} ({detail})",
            status=status,
            reason=reason,
            mailbox=self.name,
        )


def _error_of(exc: HttpError) -> tuple[str, str]:
    """Google's error reason and message of a failed answer, bounded to one line."""
    reason, message = "", ""
    try:
        error = json.loads(exc.content).get("error") or {}
        message = str(error.get("message") or "")
        details = error.get("errors") or [{}]
        reason = str(details[0].get("reason") or error.get("status") or "")
    except (ValueError, AttributeError, TypeError, IndexError):
        pass
    # One line, bounded: this text ends up in logs and in mailbox health.
    message = " ".join(message.split())[:300]
    return reason or str(exc.resp.reason or exc.resp.status), message


def _throttled(status: int, reason: str) -> bool:
    # 429 and the 403 rate limits: too fast for now. 5xx: Google's backend failed, and
    # its documentation asks for the same request again with backoff.
    return status == 429 or (status == 403 and reason in _RATE_REASONS) or status >= 500


def _refused_advice(reason: str) -> str:
    return (
        f"the Gmail API refused the access token twice ({reason}). Check that the Gmail "
        "API is enabled in the Google Cloud project, that the grant is still valid (the "
        "service account key is active and its client id has domain-wide delegation for "
        f"{' '.join(GMAIL_SCOPES)} in the Google Admin console; or the user has not "
        "revoked halomail's access), and that tokens are issued for that scope"
    )


def _check_endpoint(endpoint: str) -> str:
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ConfigError("host", f"{endpoint!r} is not an https:// URL")
    if url.scheme == "http" and not _is_loopback(url.hostname):
        raise ConfigError(
            "host", f"{endpoint!r}: plain http is refused (it would send the token in clear)"
        )
    # The method paths ("gmail/v1/…") are joined onto the endpoint: it must end in "/".
    return endpoint if endpoint.endswith("/") else endpoint + "/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- requests sent once ----------------------------------------------------------------


class _AnswerLost(Exception):
    """The connection ended after the request went out, before an answer came.

    Deliberately not an ``OSError`` nor an ``HTTPException``: httplib2 re-sends a
    request on those (once, "the connection went stale"), and lets anything else through.
    """


def _sent_once(base: Any) -> Any:
    """``base`` (an httplib2 connection class) whose lost answers are :class:`_AnswerLost`."""

    class SendOnce(base):  # type: ignore[misc]
        def getresponse(self) -> Any:
            try:
                return super().getresponse()
            except (http.client.BadStatusLine, http.client.ResponseNotReady, OSError) as exc:
                if isinstance(exc, TimeoutError):
                    raise  # httplib2 passes a timeout through as it is
                raise _AnswerLost(f"{type(exc).__name__}: {exc}") from exc

    SendOnce.__name__ = f"SendOnce{base.__name__}"
    return SendOnce


_SEND_ONCE_HTTP = _sent_once(httplib2.HTTPConnectionWithTimeout)
_SEND_ONCE_HTTPS = _sent_once(httplib2.HTTPSConnectionWithTimeout)


class _SendOnceHttp(httplib2.Http):  # type: ignore[misc]
    """An ``httplib2.Http`` that never sends a request twice."""

    def request(self, uri: str, *args: Any, **kwargs: Any) -> Any:
        """As ``httplib2.Http.request``, on connections that never re-send."""
        https = uri.lower().startswith("https:")
        kwargs["connection_type"] = _SEND_ONCE_HTTPS if https else _SEND_ONCE_HTTP
        return super().request(uri, *args, **kwargs)


# Failures that happen before a request is on its way: nothing can have been done.
_BEFORE_SENDING = (
    ConnectionRefusedError,
    socket.gaierror,
    ssl.SSLError,  # the TLS handshake comes before the request
    httplib2.ServerNotFoundError,
)
_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})


def _not_sent(exc: BaseException) -> bool:
    if isinstance(exc, _BEFORE_SENDING):
        return True
    return isinstance(exc, OSError) and exc.errno in _UNREACHABLE


def message_upload(data: bytes) -> Any:
    """The media of a ``messages.send`` through the upload endpoint: the MIME, as it is."""
    # resumable=False: one request (uploadType=media), so a send is one request to judge.
    return MediaIoBaseUpload(io.BytesIO(data), mimetype="message/rfc822", resumable=False)


# -- endpoints and tokens -------------------------------------------------------------


def api_endpoint_of(host: str | None) -> str:
    """The API's root URL for a ``host`` setting (a host name or a URL)."""
    if not host:
        return DEFAULT_API_ENDPOINT
    return host if "://" in host else f"https://{host}/"


def token_provider_of(
    extra: Mapping[str, Any], key_path: str, name: str, ca_file: Path | None
) -> TokenProvider:
    """The token provider the settings describe: a fixed token, or google-auth's."""
    values = dict(extra)
    if values.get("token"):
        values["auth"] = "oauth2-static"
    elif values.get("credentials_file") or values.get("refresh_token"):
        values["auth"] = "oauth2-google"
        # The Gmail API needs a Gmail scope; gmail.modify covers all halomail does.
        values["scopes"] = values.get("scopes") or list(GMAIL_SCOPES)
    else:
        raise ConfigError(
            "credentials_file",
            "the Gmail API needs credentials_file (a service-account key with subject, or "
            "an authorized-user file), or client_id, client_secret and refresh_token, or an "
            "access token through token_env",
        )
    return chosen_token_provider(values, key_path, name, ca_file)


# -- reading answers ------------------------------------------------------------------


def text_of(value: object) -> str | None:
    """A non-empty string of an answer, or ``None``."""
    return value if isinstance(value, str) and value else None


def number_of(value: object) -> int:
    """A non-negative number of an answer (Gmail sends int64 as strings), else 0."""
    try:
        number = int(str(value))
    except ValueError:
        return 0
    return max(number, 0)


def decode_raw(value: object) -> bytes | None:
    """The bytes of Gmail's URL-safe base64 ``raw`` (padded or not), or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
