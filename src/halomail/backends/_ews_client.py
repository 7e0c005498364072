"""exchangelib, adapted: the EWS client behind :mod:`halomail.backends.ews`.

The connector and the transport share :class:`EwsClient`: one exchangelib account per
mailbox, with halomail's adaptations of exchangelib's internals (an uncached protocol,
a requests adapter trusting ``tls_ca_file``, a bearer token refreshed before each
call, a fail-fast retry policy) and every call's answer decided in one place: a refused
token is renewed once, a busy server waited out (:class:`EwsRetry`), anything else
turned into a halomail error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import requests
import requests.adapters
import requests.auth

try:
    from exchangelib import (  # type: ignore[import-untyped]
        DELEGATE,
        IMPERSONATION,
        UTC,
        Account,
        Configuration,
        Credentials,
        Version,
    )
    from exchangelib import errors as ews_errors
    from exchangelib.protocol import (  # type: ignore[import-untyped]
        CachingProtocol,
        FailFast,
    )
    from exchangelib.protocol import Protocol as EwsProtocol
    from exchangelib.transport import (  # type: ignore[import-untyped]
        BASIC,
        DEFAULT_HEADERS,
        NOAUTH,
        NTLM,
    )
    from exchangelib.version import EXCHANGE_2016  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "halomail.backends.ews needs exchangelib: pip install 'halomail[ews]'"
    ) from exc

from halomail.backends._common import retry_after_seconds, tls_context
from halomail.backends.auth.oauth import TokenProvider
from halomail.errors import (
    AuthenticationError,
    ConfigError,
    ConnectorError,
    HalomailError,
    TransientConnectorError,
)

__all__ = [
    "EwsClient",
    "EwsRetry",
    "app_only",
    "exchange_online",
    "may_have_arrived",
    "missing_folder",
    "short_error",
]

log = logging.getLogger("halomail.backends.ews")

# Answers that say "not now" rather than "never": the mailbox is tried again next run.
_TRANSIENT_ANSWERS: tuple[type[Exception], ...] = (
    ews_errors.ErrorInternalServerTransientError,
    ews_errors.ErrorTimeoutExpired,
    ews_errors.ErrorTooManyObjectsOpened,
    ews_errors.ErrorExceededConnectionCount,
    ews_errors.ErrorMailboxStoreUnavailable,
    ews_errors.ErrorMailboxMoveInProgress,
    ews_errors.ErrorMailboxFailover,
    ews_errors.ErrorConnectionFailed,
    ews_errors.ErrorInternalServerError,
    ews_errors.ErrorNoRespondingCASInDestinationSite,
    ews_errors.ErrorProxyRequestProcessingFailed,
    ews_errors.CASError,
    ews_errors.RateLimitError,
)


_T = TypeVar("_T")


_USER_AGENT = "halomail (exchangelib)"


_AUTHS = ("basic", "ntlm", "oauth")


_ACCESS_TYPES = (DELEGATE, IMPERSONATION)

# Exchange Online's EWS endpoints: EWS is blocked there from 1 October 2026.
_EXCHANGE_ONLINE_HOSTS = ("outlook.office365.com", "outlook.office.com")

# What an administrator grants an application (an app-only OAuth token) today. The
# ApplicationImpersonation role was removed from Exchange Online in February 2025.
_APP_PERMISSIONS = (
    "the Office 365 Exchange Online application permission full_access_as_app (with "
    "admin consent), limited to the helpdesk mailboxes with an application access policy "
    "or RBAC for Applications"
)

# Answers to a request that was sent but may have been carried out all the same: the
# server failed (or went silent) while, or after, doing the work.
_MAYBE_DONE_ANSWERS: tuple[type[Exception], ...] = (
    ews_errors.ErrorInternalServerError,
    ews_errors.ErrorInternalServerTransientError,
    ews_errors.ErrorTimeoutExpired,
)


@attrs.frozen
class EwsRetry:
    """How the server's requests to back off are honoured within one run.

    Exchange throttles with ``ErrorServerBusy`` carrying ``BackOffMilliseconds``; a
    proxy in front of it may answer 429 or 503 with ``Retry-After``. Each is waited
    out, up to ``max_attempts`` tries of one call; a wait longer than ``max_wait``, or
    one more refusal, ends the run for this mailbox with a transient error (nothing
    is lost: the emails not yet disposed of are read again next run).

    Args:
        max_attempts: Tries of one call, the first included.
        max_wait: The longest single wait accepted, in seconds.
        default_wait: The wait when the server names none, in seconds.
        sleep: How to wait (replaceable in tests).
    """

    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    max_wait: float = 120.0
    default_wait: float = 5.0
    sleep: Callable[[float], None] = attrs.field(default=time.sleep, eq=False, repr=False)


class _BearerAuth(requests.auth.AuthBase):
    """Puts the current OAuth2 access token on each request."""

    def __init__(self) -> None:
        self.token = ""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(token=<hidden>)"


class _Adapter(requests.adapters.HTTPAdapter):
    """One keep-alive connection (NTLM authenticates a connection, not a request),
    an optional extra CA, and requests shown to exchangelib with ``Authorization``
    redacted (it logs the headers of every request it sends)."""

    def __init__(self, ca_file: Path | None) -> None:
        self._ca_file = ca_file  # read by init_poolmanager, which __init__ calls
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0, pool_block=True)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """Trust the configured CA besides the system's ones."""
        if self._ca_file is not None:
            pool_kwargs["ssl_context"] = tls_context(self._ca_file)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send ``request``; the response refers to a copy without the credentials."""
        response = super().send(request, **kwargs)
        if "Authorization" in request.headers:
            shown = request.copy()
            # The key stays: requests-ntlm checks for it to avoid re-authenticating.
            shown.headers["Authorization"] = "[redacted]"
            response.request = shown
        return response


class _Uncached(CachingProtocol):  # type: ignore[misc]
    """exchangelib shares one Protocol per (endpoint, credentials) process-wide; ours
    carry a mailbox's own CA, timeout and token, so each connector builds its own."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return type.__call__(cls, *args, **kwargs)


class _Protocol(EwsProtocol, metaclass=_Uncached):  # type: ignore[misc]
    """An exchangelib Protocol whose sessions use :class:`_Adapter` and our auth."""

    def __init__(
        self,
        *,
        config: Any,
        ca_file: Path | None,
        timeout: float,
        default_wait: float,
        bearer: _BearerAuth | None,
    ) -> None:
        super().__init__(config=config)
        # Per instance, not exchangelib's class-wide settings: the HTTP timeout, and the
        # back-off it assigns to a busy answer that names none.
        self.TIMEOUT = timeout
        self.RETRY_WAIT = default_wait
        self._ca_file = ca_file
        self._bearer = bearer

    def raw_session(self, prefix: str, *_: Any, **__: Any) -> requests.Session:
        """A plain session (never requests-oauthlib's, which logs the token)."""
        session = requests.Session()
        session.headers.update(DEFAULT_HEADERS)
        session.headers["User-Agent"] = _USER_AGENT
        session.mount(prefix, _Adapter(self._ca_file))
        return session

    def create_session(self) -> Any:
        """exchangelib's session, with the bearer token when this is an OAuth2 login."""
        session = super().create_session()
        if self._bearer is not None:
            session.auth = self._bearer
        return session


class HttpBusy(ews_errors.ErrorServerBusy):  # type: ignore[misc]
    """An HTTP 429, 503 or 504 (from a proxy or the front end), not an EWS answer.

    A 429 refused the request; a 503 or 504 may have come after the server did the
    work, which matters for a send.
    """

    def __init__(self, status: int, back_off: float | None) -> None:
        super().__init__(f"HTTP {status}", back_off=back_off)
        self.status = status


class HttpServerError(ews_errors.TransportError):  # type: ignore[misc]
    """Another HTTP 5xx answer whose body is not SOAP (an error page)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status} without a SOAP answer")
        self.status = status


class _Policy(FailFast):  # type: ignore[misc]
    """Fail fast (no sleeping inside exchangelib: :class:`EwsRetry` decides), but turn
    an HTTP 429/503/504 into ``ErrorServerBusy`` carrying the server's ``Retry-After``,
    and keep the status of any other 5xx error page."""

    def raise_response_errors(self, response: requests.Response) -> None:
        """Raise for a response that is not a SOAP answer."""
        if response.status_code in (429, 503, 504):
            raise HttpBusy(
                response.status_code, retry_after_seconds(response.headers.get("Retry-After"))
            )
        try:
            super().raise_response_errors(response)
        except ews_errors.MalformedResponseError:
            if response.status_code >= 500:
                raise HttpServerError(response.status_code) from None
            raise


def short_error(exc: BaseException) -> str:
    """The exception's class and first 300 characters, on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def exchange_online(endpoint: str) -> bool:
    """Whether ``endpoint`` is Exchange Online's EWS (where EWS is being switched off)."""
    host = (urllib.parse.urlsplit(endpoint).hostname or "").lower()
    return host in _EXCHANGE_ONLINE_HOSTS


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (each once)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _never_sent(exc: BaseException) -> bool:
    """True when the request cannot have left: no connection, or TLS refused."""
    for link in _chain(exc):
        # requests wraps urllib3's error, which holds the connection's in ``reason``.
        reasons = [link, getattr(link, "reason", None), *getattr(link, "args", ())]
        for reason in reasons:
            if isinstance(reason, _NEVER_SENT) or any(
                cls.__name__ in _URLLIB3_NEVER_SENT for cls in type(reason).__mro__
            ):
                return True
    return False


# Failures before a request could leave. urllib3's are known by name: it comes with
# requests, and halomail does not import it directly.
_NEVER_SENT = (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError, ssl.SSLError)
_URLLIB3_NEVER_SENT = frozenset({"NewConnectionError", "ConnectTimeoutError"})


def may_have_arrived(exc: BaseException) -> bool:
    """Whether a request that failed with ``exc`` may have been carried out anyway.

    True for a timeout or a connection dropped after the request was sent, an HTTP 503,
    504 or other 5xx error page, and EWS's internal-error answers; False for throttling
    (``ErrorServerBusy``, HTTP 429: refused before any work), an answer that refused the
    request, and a connection that was never made.
    """
    causes = _chain(exc)
    if _never_sent(exc):
        return False
    for cause in causes:
        if isinstance(cause, HttpBusy):
            return cause.status != 429
        if isinstance(cause, ews_errors.ErrorServerBusy):
            return False
        if isinstance(cause, (HttpServerError, *_MAYBE_DONE_ANSWERS)):
            return True
        if isinstance(cause, requests.RequestException | ConnectionError | TimeoutError):
            return True
    return False


class EwsClient:
    """One EWS account: its exchangelib objects, and every call through :meth:`call`."""

    def __init__(
        self,
        label: str,
        *,
        endpoint: str,
        address: str,
        username: str | None,
        password: str | None,
        auth: str | None,
        token_provider: TokenProvider | None,
        access_type: str | None,
        timeout: float,
        ca_file: str | os.PathLike[str] | None,
        retry: EwsRetry | None,
    ) -> None:
        if "@" not in address:
            raise ConfigError("user_id", f"the mailbox's SMTP address is needed, got {address!r}")
        if auth is None and token_provider is not None:
            auth = "oauth"
        if auth is not None and auth not in _AUTHS:
            raise ConfigError("auth", f"expected one of {', '.join(_AUTHS)}, got {auth!r}")
        if auth == "oauth" and token_provider is None:
            raise ConfigError("auth", "an OAuth2 login needs a token provider")
        if auth != "oauth" and (not username or password is None):
            raise ConfigError("password", "a Basic or NTLM login needs a username and a password")
        if access_type is None:
            # An application's own token has no mailbox of its own: Exchange accepts it
            # only with the ExchangeImpersonation header naming the mailbox.
            access_type = IMPERSONATION if app_only(token_provider) else DELEGATE
        if access_type not in _ACCESS_TYPES:
            raise ConfigError(
                "access_type", f"expected 'delegate' or 'impersonation', got {access_type!r}"
            )
        if not endpoint.lower().startswith(("https://", "http://")):
            raise ConfigError("host", f"expected an http(s) URL, got {endpoint!r}")
        if exchange_online(endpoint):
            log.warning(
                "%s: %s is Exchange Online, which blocks EWS from 1 October 2026 (and "
                "switches it off on 1 April 2027): use connection = 'office365' (or "
                "transport = 'graph') for this mailbox",
                label,
                endpoint,
            )
        self.label = label
        self.endpoint = endpoint
        self.address = address
        self.username = username
        self._password = password
        self.auth = auth
        self._provider = token_provider
        self.access_type = access_type
        self.timeout = timeout
        self.ca_file = Path(ca_file) if ca_file is not None else None
        self.retry = retry or EwsRetry()
        self._bearer = _BearerAuth() if auth == "oauth" else None
        self._account: Any = None

    @property
    def account(self) -> Any:
        """The exchangelib Account (built on first use; building it sends nothing)."""
        if self._account is None:
            if self._bearer is not None:
                credentials, auth_type = None, NOAUTH  # the session's auth adds the token
            else:
                credentials = Credentials(self.username, self._password)
                # None: exchangelib asks the server which of Basic/NTLM it offers.
                auth_type = {"basic": BASIC, "ntlm": NTLM}.get(self.auth or "")
            config = Configuration(
                service_endpoint=self.endpoint,
                credentials=credentials,
                auth_type=auth_type,
                # A known version: no version guessing round trips. Newer servers
                # accept it; an older one makes exchangelib fall back by itself.
                version=Version(build=EXCHANGE_2016),
                retry_policy=_Policy(),
            )
            account = Account(
                primary_smtp_address=self.address,
                config=config,
                autodiscover=False,
                access_type=self.access_type,
                default_timezone=UTC,
            )
            # Account() registered a shared Protocol for this config; ours replaces it,
            # and the shared one (which holds the password) leaves the cache again.
            with contextlib.suppress(KeyError):
                del EwsProtocol[config]
            account.protocol = _Protocol(
                config=config,
                ca_file=self.ca_file,
                timeout=self.timeout,
                default_wait=self.retry.default_wait,
                bearer=self._bearer,
            )
            self._account = account
        return self._account

    def close(self) -> None:
        """Close the HTTP connections (they reopen on the next call)."""
        if self._account is not None:
            self._account.protocol.close()

    def call(self, what: str, operation: Callable[[], _T], *, repeatable: bool = True) -> _T:
        """Run one EWS operation: token, back-off and error translation around it.

        Args:
            what: What the operation does, for messages.
            operation: The exchangelib call.
            repeatable: False for an operation that must not run twice (a send): an
                HTTP 503 or 504, which may come after the work was done, is then not
                tried again here.

        Raises:
            AuthenticationError: The login or token was refused (a token twice).
            TransientConnectorError: Busy, throttled past the retry budget, or the
                connection failed.
            ConnectorError: Any other refusal, with what the administrator can do.
        """
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            self._set_token()
            try:
                return operation()
            except ews_errors.UnauthorizedError as exc:
                if self._provider is not None and not refreshed:
                    # A token may be revoked or expire early: one fresh token, one retry.
                    refreshed = True
                    log.info("%s: %s: the token was refused; getting a fresh one", self.label, what)
                    self._provider.invalidate()
                    continue
                raise AuthenticationError(self._refused_advice(), mailbox=self.label) from exc
            except ews_errors.ErrorServerBusy as exc:
                wait = float(exc.back_off) if exc.back_off else self.retry.default_wait
                done = attempt >= self.retry.max_attempts or wait > self.retry.max_wait
                if done or (not repeatable and may_have_arrived(exc)):
                    # The wait the server asked for travels with the error, so the next
                    # run (or the outbox) does not knock before it is over.
                    raise TransientConnectorError(
                        f"{what}: the server is busy and asked to wait {wait:g} s; "
                        "it is tried again on the next run",
                        mailbox=self.label,
                        retry_after=wait,
                    ) from exc
                # Throttling is the server protecting itself: waiting exactly as long as
                # it asks is what keeps the budget of this account from running dry.
                log.warning(
                    "%s: %s: server busy, waiting %.1f s as asked (attempt %d of %d)",
                    self.label,
                    what,
                    wait,
                    attempt,
                    self.retry.max_attempts,
                )
                self.retry.sleep(wait)
            except (
                ews_errors.ErrorImpersonateUserDenied,
                ews_errors.ErrorInvalidExchangeImpersonationHeaderData,
            ) as exc:
                raise ConnectorError(
                    f"{what}: {self._impersonation_advice()}", mailbox=self.label
                ) from exc
            except ews_errors.ErrorNonExistentMailbox as exc:
                raise ConnectorError(
                    f"{what}: the server has no mailbox {self.address}: check user_id",
                    mailbox=self.label,
                ) from exc
            except ews_errors.ErrorAccessDenied as exc:
                raise ConnectorError(
                    f"{what}: access to {self.address} was denied: {self._access_advice()}",
                    mailbox=self.label,
                ) from exc
            except ews_errors.RedirectError as exc:
                raise ConnectorError(
                    f"{what}: the server redirected to {exc.url}: check host (the EWS "
                    "endpoint is usually https://<server>/EWS/Exchange.asmx)",
                    mailbox=self.label,
                ) from exc
            except _TRANSIENT_ANSWERS as exc:
                raise TransientConnectorError(
                    f"{what}: {short_error(exc)}", mailbox=self.label
                ) from exc
            except ews_errors.ResponseMessageError as exc:
                raise ConnectorError(f"{what}: {short_error(exc)}", mailbox=self.label) from exc
            except ews_errors.TransportError as exc:
                # Connection refused or dropped, TLS failure, an unreadable answer.
                raise TransientConnectorError(
                    f"{what}: {short_error(exc)}", mailbox=self.label
                ) from exc
            except ews_errors.EWSError as exc:
                raise ConnectorError(f"{what}: {short_error(exc)}", mailbox=self.label) from exc
            except requests.RequestException as exc:
                raise TransientConnectorError(
                    f"{what}: {short_error(exc)}", mailbox=self.label
                ) from exc
            except OSError as exc:
                raise ConnectorError(f"{what}: {short_error(exc)}", mailbox=self.label) from exc

    def _set_token(self) -> None:
        if self._provider is None or self._bearer is None:
            return
        try:
            self._bearer.token = self._provider.token()
        except HalomailError as exc:
            if isinstance(exc, ConnectorError) and exc.mailbox is None:
                raise type(exc)(str(exc), mailbox=self.label) from exc
            raise

    def _impersonation_advice(self) -> str:
        if self._provider is not None and self.access_type == DELEGATE:
            return (
                f"Exchange wants this token to impersonate {self.address}: an "
                "application's own token has no mailbox; set access_type = "
                "'impersonation' (the default for app-only tokens)"
            )
        if self._provider is not None:
            return f"the application may not act as {self.address}: grant it {_APP_PERMISSIONS}"
        return (
            f"{self.username} may not impersonate {self.address}: on Exchange Server, "
            "give it the ApplicationImpersonation role scoped to the helpdesk mailboxes "
            "(New-ManagementRoleAssignment -Role ApplicationImpersonation); Exchange "
            "Online removed that role in February 2025: use an app-only OAuth token there"
        )

    def _access_advice(self) -> str:
        if self._provider is not None and self.access_type == IMPERSONATION:
            return f"grant the application {_APP_PERMISSIONS}"
        if self.access_type == IMPERSONATION:
            return self._impersonation_advice()
        return f"grant {self.username or 'the signed-in user'} Full Access to the mailbox"

    def _refused_advice(self) -> str:
        if self._provider is not None:
            return (
                f"Exchange refused the OAuth2 token for {self.address}, also a fresh one. "
                "The administrator must check the app registration: the EWS permission "
                "(the application permission full_access_as_app, used with impersonation, "
                "or the delegated EWS.AccessAsUser.All) with admin consent, a token issued "
                "for the EWS resource, and that the grant was not revoked"
            )
        how = {"basic": "Basic", "ntlm": "NTLM"}.get(self.auth or "", "password")
        return (
            f"Exchange refused the {how} login of {self.username!r} for {self.address}. "
            "Check the username (DOMAIN\\user or user@domain) and the password, that the "
            "account is not locked out, and that this authentication is enabled on the "
            "EWS virtual directory"
        )


def app_only(provider: TokenProvider | None) -> bool:
    """Whether ``provider`` gives an application's own tokens (client credentials)."""
    return provider is not None and getattr(provider, "delegated", None) is False


def missing_folder(exc: BaseException) -> bool:
    return isinstance(exc.__cause__, ews_errors.ErrorFolderNotFound)
