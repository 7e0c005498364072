"""The Gmail API's HTTP layer behind :mod:`halomail.backends.gmail`: requests and answers.

:class:`GmailClient` sends each request with a fresh bearer token and decides every
answer in one place: a 401 renews the token once, 429 / 403 rate limits / 5xx are waited
out per ``Retry-After`` or with backoff (:class:`GmailRetry`), anything else becomes a
:class:`GmailApiError` (a 4xx) or a transient error.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httplib2  # type: ignore[import-untyped]
from googleapiclient.discovery import build  # type: ignore[import-untyped]
from googleapiclient.errors import HttpError  # type: ignore[import-untyped]

from halomail.backends._common import retry_after_seconds
from halomail.backends.auth.oauth import TokenProvider
from halomail.errors import (
    AuthenticationError,
    ConfigError,
    ConnectorError,
    TransientConnectorError,
)

__all__ = [
    "GMAIL_SCOPES",
    "GmailApiError",
    "GmailClient",
    "GmailRetry",
    "decode_raw",
    "number_of",
    "text_of",
]

log = logging.getLogger("halomail.backends.gmail")

#: Reading, labelling, trashing and sending: everything halomail does, and no more (it
#: never deletes for good, which alone would need ``https://mail.google.com/``).
GMAIL_SCOPES = ("https://www.googleapis.com/auth/gmail.modify",)


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
            http = httplib2.Http(
                timeout=self._timeout, ca_certs=str(self._ca_file) if self._ca_file else None
            )
            # A redirect would carry the bearer token to wherever it points.
            http.follow_redirects = False
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

    def execute(self, make: Callable[[Any], Any], *, what: str) -> dict[str, Any]:
        """Build a request with ``make(users)``, send it, and return its JSON answer.

        Raises:
            AuthenticationError: The token was refused twice, or none could be had.
            TransientConnectorError: Unreachable, timed out, throttled beyond patience,
                a server error beyond patience, or an answer that is not JSON.
            GmailApiError: Any other 4xx answer (the caller decides what 404 means).
        """
        request = make(self.users())
        renewed = False
        tries = 0
        while True:
            tries += 1
            # The provider caches its token and refreshes it before expiry: asking it
            # each time costs nothing and never sends a token that is about to die.
            request.headers["authorization"] = f"Bearer {self._token_provider.token()}"
            try:
                # num_retries=0: the library's own retries ignore Retry-After and sleep
                # where tests cannot see; the loop below decides instead.
                answer = request.execute(num_retries=0)
            except HttpError as exc:
                status = int(exc.resp.status)
                reason, message = _error_of(exc)
                retry_after = exc.resp.get("retry-after")
            except TimeoutError as exc:
                raise TransientConnectorError(
                    f"{what}: the Gmail API did not answer within {self._timeout:g} s",
                    mailbox=self.name,
                ) from exc
            except (OSError, httplib2.HttpLib2Error, http.client.HTTPException) as exc:
                raise TransientConnectorError(
                    f"{what}: cannot reach {self._host} ({type(exc).__name__})",
                    mailbox=self.name,
                ) from exc
            except ValueError as exc:
                # A 2xx answer that is not JSON: a proxy or captive portal answered.
                raise TransientConnectorError(
                    f"{what}: {self._host} answered something that is not the Gmail API's JSON",
                    mailbox=self.name,
                ) from exc
            else:
                return answer if isinstance(answer, dict) else {}
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
            if _throttled(status, reason):
                wait = _retry_after(retry_after, self.retry.base_wait * 2 ** (tries - 1))
                if tries >= self.retry.max_attempts or wait > self.retry.max_wait:
                    raise TransientConnectorError(
                        f"{what}: the Gmail API is throttling or failing ({status} {reason}, "
                        f"retry after {wait:g} s) after {tries} tries; the next run tries again",
                        mailbox=self.name,
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
                continue
            raise self._status_error(status, reason, message, what)

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


def _retry_after(value: str | None, default: float) -> float:
    """Seconds to wait per ``Retry-After``, or ``default`` when it names none."""
    seconds = retry_after_seconds(value)
    return default if seconds is None else seconds


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
