"""The HTTP side of Microsoft Graph, shared by the Graph connector and transport.

One :class:`GraphClient` wraps an ``httpx.Client``: it adds the bearer token and the
``Prefer`` header to every request, renews a refused token once, waits out throttling
as the server asks, and turns every failure into a halomail error. Nothing here knows
about mailboxes or folders; :mod:`halomail.backends.graph` does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx

from halomail.backends._common import chosen_token_provider, retry_after_seconds, tls_context
from halomail.backends.auth.oauth import MICROSOFT_GRAPH_SCOPES, TokenProvider
from halomail.errors import (
    AuthenticationError,
    ConfigError,
    ConnectorError,
    TransientConnectorError,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "GraphApiError",
    "GraphClient",
    "GraphOutcomeUnknown",
    "GraphRetry",
    "GraphStatus",
    "graph_base_url",
    "graph_token_provider",
    "quote",
    "status_of",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://graph.microsoft.com/v1.0"
_USER_AGENT = "halomail (httpx)"
# Graph answers a throttled request with 429, an overloaded service with 503 and a
# gateway that gave up with 504; they carry Retry-After (or should) and all mean "the
# same request will work later".
_THROTTLED = frozenset({429, 503, 504})
# The connection failed before the request left: nothing can have reached Graph.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# A JSON page is a few kilobytes; a server sending more than this is not Graph.
_MAX_JSON_BYTES = 16 * 1024 * 1024
_MAX_ERROR_BYTES = 64 * 1024


@attrs.frozen
class GraphRetry:
    """How throttling (HTTP 429, 503 or 504, with ``Retry-After``) is honoured within one run.

    Each wait the server asks for is slept through, up to ``max_attempts`` tries of one
    request. A wait longer than ``max_wait``, or one more refusal, ends the run for the
    mailbox with :class:`~halomail.errors.TransientConnectorError`, whose ``retry_after``
    carries the wait the server asked for so the next run can honour it: nothing was
    disposed of, so nothing is lost, and the next run starts over.

    Args:
        max_attempts: Tries of one request, the first included.
        max_wait: The longest single wait accepted, in seconds; asked to wait longer,
            the connector gives up for this run instead of blocking.
        default_wait: The wait when the server names none, in seconds.
        sleep: How to wait (replaceable in tests).

    .. versionadded:: 0.1.0
    """

    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    max_wait: float = 120.0
    default_wait: float = 10.0
    sleep: Callable[[float], None] = attrs.field(default=time.sleep, eq=False, repr=False)


class GraphApiError(ConnectorError):
    """Microsoft Graph refused a request with a 4xx answer other than 401 and 429.

    Args:
        message: What went wrong, with Graph's error code.
        status: The HTTP status.
        code: Graph's ``error.code`` (``ErrorItemNotFound`` …), or ``""``.
        mailbox: The mailbox's name.
    """

    def __init__(self, message: str, *, status: int, code: str, mailbox: str | None = None):
        self.status = status
        self.code = code
        super().__init__(message, mailbox=mailbox)


class GraphStatus(Exception):
    """The HTTP status of a failed answer, kept as the cause (``raise … from``) of the
    :class:`~halomail.errors.TransientConnectorError` raised for it (:func:`status_of`).

    Args:
        status: The HTTP status.
    """

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}")


def status_of(error: BaseException) -> int | None:
    """The HTTP status that caused ``error``, or ``None`` when no answer came."""
    cause = error.__cause__
    return cause.status if isinstance(cause, GraphStatus) else None


class GraphOutcomeUnknown(TransientConnectorError):
    """A request that must not be repeated blindly (``sendMail``) reached Graph, and the
    answer was a 5xx, a timeout or a dropped connection: it may have been carried out."""


def quote(segment: str) -> str:
    """``segment`` made safe as one URL path segment (ids and addresses from outside)."""
    return urllib.parse.quote(segment, safe="@")


class GraphClient:
    """Authenticated, throttling-aware requests to Microsoft Graph.

    Args:
        name: The mailbox's (or transport's) name, for logs and errors.
        base_url: The Graph root, e.g. ``https://graph.microsoft.com/v1.0``. Plain
            ``http`` is accepted only for loopback addresses (tests): a bearer token
            never crosses a network in clear.
        token_provider: Hands out access tokens.
        timeout: Seconds each request may take (connect, each read, write).
        ca_file: A CA bundle to trust besides the system's.
        retry: How throttling is honoured.

    Raises:
        ConfigError: ``base_url`` is not a usable URL.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        token_provider: TokenProvider,
        timeout: float = 30.0,
        ca_file: str | Path | None = None,
        retry: GraphRetry | None = None,
    ) -> None:
        self.name = name
        self.base_url = _check_base_url(base_url)
        self._origin = _origin(httpx.URL(self.base_url))
        self._token_provider = token_provider
        self._timeout = timeout
        self._ca_file = ca_file
        self.retry = retry or GraphRetry()
        self._http: httpx.Client | None = None

    @property
    def token_provider(self) -> TokenProvider:
        """Where the access tokens come from."""
        return self._token_provider

    def url(self, *segments: str) -> str:
        """The absolute URL of a path under the base URL, each segment quoted."""
        return "/".join([self.base_url, *(quote(s) for s in segments)])

    def close(self) -> None:
        """Close the connections; the next request opens new ones."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send one request and return the successful answer, its body not yet read.

        The caller must close the response (``with contextlib.closing(response):``).
        A request that is not ``idempotent`` (``sendMail``) is tried again only after a
        429, which Graph answers without carrying the request out.

        Raises:
            AuthenticationError: The token was refused twice, or none could be had.
            GraphOutcomeUnknown: Not ``idempotent``, and it reached Graph but the answer
                was a 5xx, a timeout or a dropped connection.
            TransientConnectorError: Unreachable, timed out, throttled beyond patience,
                or a 5xx answer (its cause a :class:`GraphStatus` when an answer came).
            GraphApiError: Any other 4xx answer (the caller decides what 404 means).
            ConnectorError: ``url`` points away from the base URL's server.
        """
        self._check_origin(url)
        http = self._client()
        renewed = False
        tries = 0
        while True:
            tries += 1
            token = self._token_provider.token()
            request = http.build_request(
                method,
                url,
                params=params,
                json=json_body,
                content=content,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"},
            )
            response = self._send(http, request, what=what, idempotent=idempotent)
            status = response.status_code
            if status < 400:
                return response
            code, message = self._error_of(response)
            if status == 401 and not renewed:
                # Tokens can be revoked or rotated before their expiry: one fresh token
                # is worth a try before the administrator is bothered.
                log.info(
                    "mailbox %s: Microsoft Graph refused the access token (%s); renewing it",
                    self.name,
                    code,
                )
                self._token_provider.invalidate()
                renewed = True
                continue
            if status == 401:
                raise AuthenticationError(_refused_advice(code), mailbox=self.name)
            asked = retry_after_seconds(response.headers.get("Retry-After"))
            if status >= 500 and not idempotent:
                raise GraphOutcomeUnknown(
                    f"{what}: Microsoft Graph answered {status} ({code}); it may have been "
                    "carried out, so it is not repeated blindly",
                    mailbox=self.name,
                    retry_after=asked,
                ) from GraphStatus(status)
            if status in _THROTTLED:
                wait = self.retry.default_wait if asked is None else asked
                if tries >= self.retry.max_attempts or wait > self.retry.max_wait:
                    raise TransientConnectorError(
                        f"{what}: Microsoft Graph is throttling ({status} {code}, retry after "
                        f"{wait:g} s) after {tries} tries; the next run tries again",
                        mailbox=self.name,
                        retry_after=wait,
                    ) from GraphStatus(status)
                log.warning(
                    "mailbox %s: %s throttled by Microsoft Graph (%d %s); waiting %g s as asked",
                    self.name,
                    what,
                    status,
                    code,
                    wait,
                )
                self.retry.sleep(wait)
                continue
            raise self._status_error(status, code, message, what, retry_after=asked) from (
                GraphStatus(status)
            )

    def _send(
        self, http: httpx.Client, request: httpx.Request, *, what: str, idempotent: bool
    ) -> httpx.Response:
        """Send ``request``; a failure on the way is a transient error, or an unknown
        outcome when the request had left and must not be repeated blindly."""
        try:
            return http.send(request, stream=True)
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.TimeoutException):
                problem = f"Microsoft Graph did not answer within {self._timeout:g} s"
            else:
                problem = f"cannot reach {self._origin[1]} ({type(exc).__name__})"
            if not idempotent and not isinstance(exc, _NOT_SENT):
                raise GraphOutcomeUnknown(
                    f"{what}: {problem}, after the request was sent; it may have been "
                    "carried out, so it is not repeated blindly",
                    mailbox=self.name,
                ) from exc
            raise TransientConnectorError(f"{what}: {problem}", mailbox=self.name) from exc

    def call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> int:
        """Send a request whose answer's body is of no interest; return its status.

        Raises:
            AuthenticationError: As :meth:`request`, and everything else it raises.
        """
        response = self.request(
            method,
            url,
            what=what,
            json_body=json_body,
            content=content,
            headers=headers,
            idempotent=idempotent,
        )
        response.close()
        return response.status_code

    def get_json(
        self,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """GET ``url`` and return its JSON object (see :meth:`request` for errors)."""
        return self.send_json("GET", url, what=what, params=params, headers=headers)

    def send_json(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send a request and return the answer's JSON object (``{}`` for no body).

        Raises:
            ConnectorError: The answer is not a JSON object, or is implausibly large;
                and everything :meth:`request` raises.
        """
        response = self.request(
            method, url, what=what, params=params, json_body=json_body, headers=headers
        )
        with contextlib.closing(response):
            body = self.read_capped(response, _MAX_JSON_BYTES, what=what)
        if body is None:
            raise ConnectorError(
                f"{what}: the answer is over {_MAX_JSON_BYTES} bytes", mailbox=self.name
            )
        if not body.strip():
            return {}
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ConnectorError(f"{what}: the answer is not JSON", mailbox=self.name) from exc
        if not isinstance(data, dict):
            raise ConnectorError(f"{what}: the answer is not a JSON object", mailbox=self.name)
        return data

    def read_capped(self, response: httpx.Response, cap: int | None, *, what: str) -> bytes | None:
        """The response body, or ``None`` as soon as it grows over ``cap`` bytes.

        Raises:
            TransientConnectorError: The connection broke or timed out mid-body.
        """
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if cap is not None and len(body) > cap:
                    return None
        except httpx.HTTPError as exc:
            raise TransientConnectorError(
                f"{what}: the answer broke off ({type(exc).__name__})", mailbox=self.name
            ) from exc
        return bytes(body)

    # -- helpers ---------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        if self._http is None:
            # The system's CAs stay trusted; a configured one is added to them.
            verify: ssl.SSLContext | bool = (
                tls_context(self._ca_file) if self._ca_file is not None else True
            )
            self._http = httpx.Client(
                timeout=httpx.Timeout(self._timeout),
                verify=verify,
                # A redirect would carry the bearer token to wherever it points.
                follow_redirects=False,
                headers={
                    "User-Agent": _USER_AGENT,
                    # Immutable ids stay the same when a message moves between folders,
                    # so a ref handed out by fetch() is still good for ack().
                    "Prefer": 'IdType="ImmutableId"',
                },
            )
        return self._http

    def _check_origin(self, url: str) -> None:
        try:
            origin = _origin(httpx.URL(url))
        except httpx.InvalidURL as exc:
            raise ConnectorError("Microsoft Graph sent an invalid link", mailbox=self.name) from exc
        if origin != self._origin:
            # A paging link pointing elsewhere would hand our bearer token to that host.
            raise ConnectorError(
                f"refusing to follow a link to {origin[0]}://{origin[1]}:{origin[2]}, "
                f"which is not {self._origin[1]}",
                mailbox=self.name,
            )

    def _error_of(self, response: httpx.Response) -> tuple[str, str]:
        """Graph's ``error.code`` and ``error.message`` of a failed answer; closes it."""
        with contextlib.closing(response):
            try:
                body = self.read_capped(response, _MAX_ERROR_BYTES, what="error") or b""
            except TransientConnectorError:
                body = b""
        try:
            error = json.loads(body).get("error") or {}
            code, message = str(error.get("code") or ""), str(error.get("message") or "")
        except (ValueError, AttributeError):
            code, message = "", ""
        # One line, bounded: this text ends up in logs and in mailbox health.
        message = " ".join(message.split())[:300]
        return code or response.reason_phrase or str(response.status_code), message

    def _status_error(
        self, status: int, code: str, message: str, what: str, *, retry_after: float | None
    ) -> Exception:
        detail = f"{code}: {message}" if message else code
        if status >= 500 or status == 408:
            # The service failed, not our request: the same request may work later.
            return TransientConnectorError(
                f"{what}: Microsoft Graph answered {status} ({detail}); the next run tries again",
                mailbox=self.name,
                retry_after=retry_after,
            )
        if status == 403:
            return GraphApiError(
                f"{what}: Microsoft Graph denied access ({detail}). Grant the app "
                "registration the Mail.ReadWrite application permission (Mail.Send to send) "
                "with admin consent, and include this mailbox in any application access "
                "policy",
                status=status,
                code=code,
                mailbox=self.name,
            )
        return GraphApiError(
            f"{what}: Microsoft Graph answered {status} ({detail})",
            status=status,
            code=code,
            mailbox=self.name,
        )


def _refused_advice(code: str) -> str:
    return (
        f"Microsoft Graph refused the access token twice ({code}). Check in the Entra ID app "
        "registration that the client secret or certificate is still valid, that the "
        "application permission Mail.ReadWrite (Mail.Send to send) is granted with admin "
        "consent, and that the tokens are issued for https://graph.microsoft.com"
    )


def graph_base_url(host: str | None) -> str:
    """Graph's root for a configured ``host`` (a national cloud's name, or a full URL)."""
    if not host:
        return DEFAULT_BASE_URL
    if "://" in host:
        return host
    return f"https://{host}/v1.0"


def graph_token_provider(
    extra: Mapping[str, Any], key_path: str, name: str, ca_file: Path | None
) -> TokenProvider:
    """The token provider the settings describe: a fixed token, or msal's client grant.

    Raises:
        ConfigError: Neither a token nor the client-credentials keys are given.
    """
    values = dict(extra)
    if values.get("token"):
        values["auth"] = "oauth2-static"
    elif values.get("tenant_id"):
        values["auth"] = "oauth2-microsoft"
        # Graph needs a Graph token: Outlook's IMAP/SMTP scope is no use here.
        values["scopes"] = values.get("scopes") or list(MICROSOFT_GRAPH_SCOPES)
    else:
        raise ConfigError(
            "tenant_id",
            "Microsoft Graph needs tenant_id, client_id and client_secret (or client_secret_env)"
            ", or an access token through token_env",
        )
    return chosen_token_provider(values, key_path, name, ca_file)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _check_base_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    try:
        url = httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise ConfigError("host", f"{base_url!r} is not a URL") from exc
    if url.scheme not in ("https", "http") or not url.host:
        raise ConfigError("host", f"{base_url!r} is not an https:// URL")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ConfigError(
            "host", f"{base_url!r}: plain http is refused (it would send the token in clear)"
        )
    return base


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
