"""OAuth2 access tokens for mailboxes: Microsoft (msal), Google (google-auth), or fixed.

A :class:`TokenProvider` hands a connector a bearer token for XOAUTH2/OAUTHBEARER (IMAP,
POP3, SMTP) or for a REST API (Graph, Gmail). Providers cache the token and refresh it
when it is within :data:`REFRESH_MARGIN` of expiry, so a connector simply asks for a
token before every login. A refresh the identity provider refuses raises
:class:`~halomail.errors.AuthenticationError` with a message that tells the administrator
what to do; it never contains a secret. Network trouble raises
:class:`~halomail.errors.TransientConnectorError`. Either way only the mailbox that owns
the provider fails.

Mailbox keys read by :func:`token_provider_from_settings` (``[[mailboxes]]``, handed over
in ``MailboxSettings.extra``):

==================  ===========================================================================
``auth``            ``oauth2-microsoft``, ``oauth2-google`` or ``oauth2-static``; or the SASL
                    names ``xoauth2`` / ``oauthbearer``, which pick the provider from the other
                    keys (``token`` → static, ``credentials_file`` → Google, ``tenant_id`` →
                    Microsoft). ``password`` (the default) means no OAuth2 at all.
``tenant_id``       Microsoft: the directory (tenant) id or domain. Required.
``client_id``       Microsoft: the app registration's id. Google: the OAuth client id, for a
                    refresh token given without ``credentials_file``.
``client_secret``   Microsoft: the app's secret (client credentials, or a confidential app's
                    refresh). Google: the OAuth client secret. Prefer ``client_secret_env``.
``certificate_file``  Microsoft: a PEM file holding the app's private key and certificate,
                    instead of ``client_secret``.
``refresh_token``   Microsoft: a delegated refresh token (then the mailbox reads as that user).
                    Google: a user's refresh token. Prefer ``refresh_token_env``.
``credentials_file``  Google: a service-account key file (``"type": "service_account"``) or
                    an authorized-user file (``"type": "authorized_user"``).
``subject``         Google service account: the user to impersonate through domain-wide
                    delegation (the mailbox's address).
``token``           Static: the bearer token itself (tests, or a token managed elsewhere).
``scopes``          A list or a space-separated string. Defaults: Microsoft
                    ``https://outlook.office365.com/.default`` (IMAP/POP/SMTP; use
                    ``https://graph.microsoft.com/.default`` for Graph), Google
                    ``https://mail.google.com/``.
``token_cache``     Microsoft: a file where msal's token cache is kept between runs (written
                    with mode 0600). Without it the cache lives only as long as the process.
                    ``halomail authorize`` stores a user's sign-in there: then no secret
                    and no refresh token are needed.
``authority``       Microsoft: the authority URL, for national clouds (default
                    ``https://login.microsoftonline.com/<tenant_id>``).
``token_uri``       Google: the token endpoint (default Google's).
==================  ===========================================================================

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from halomail.errors import AuthenticationError, ConfigError, TransientConnectorError

__all__ = [
    "GOOGLE_MAIL_SCOPES",
    "MICROSOFT_GRAPH_SCOPES",
    "MICROSOFT_MAIL_SCOPES",
    "REFRESH_MARGIN",
    "GoogleTokenProvider",
    "MicrosoftTokenProvider",
    "StaticTokenProvider",
    "TokenProvider",
    "token_provider_from_settings",
]

log = logging.getLogger(__name__)

#: A cached token this close to its expiry is refreshed before it is handed out, so a
#: login never starts with a token that dies halfway through a long session.
REFRESH_MARGIN = dt.timedelta(minutes=5)

MICROSOFT_MAIL_SCOPES = ("https://outlook.office365.com/.default",)
MICROSOFT_GRAPH_SCOPES = ("https://graph.microsoft.com/.default",)
GOOGLE_MAIL_SCOPES = ("https://mail.google.com/",)

_GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
_MICROSOFT_LOGIN = "https://login.microsoftonline.com"
# Errors that mean "the identity provider is having a bad moment", not "your grant is bad".
_TRANSIENT_OAUTH_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
_AADSTS = re.compile(r"\bAADSTS\d{4,8}\b")
_PEM_KEY = re.compile(
    rb"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----.+?-----END (?:RSA |EC |ENCRYPTED )?"
    rb"PRIVATE KEY-----",
    re.DOTALL,
)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@runtime_checkable
class TokenProvider(Protocol):
    """**Protocol:** hands out a valid OAuth2 access token.

    .. versionadded:: 0.1.0
    """

    def token(self) -> str:
        """A bearer token valid for at least a few more minutes.

        Raises:
            AuthenticationError: The grant was refused; an administrator must act.
            TransientConnectorError: The identity provider could not be reached.
        """

    def invalidate(self) -> None:
        """Forget the cached token: a server refused it, so the next call gets a new one."""


class StaticTokenProvider:
    """A fixed token, for tests or for tokens another system keeps fresh.

    Args:
        token: The bearer token; never shown in ``repr``.
    """

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the token is empty")
        self._token = token

    def __repr__(self) -> str:
        return "StaticTokenProvider(token='***')"

    def token(self) -> str:
        """The token given at construction."""
        return self._token

    def invalidate(self) -> None:
        """Nothing to refresh: the same token is handed out again."""


# -- Microsoft --------------------------------------------------------------------


class MicrosoftTokenProvider:
    """Tokens from Microsoft Entra ID through msal.

    Two grants are supported:

    * **client credentials** (application permissions; the app reads any mailbox it was
      granted): give ``client_secret`` or ``certificate_file``;
    * **a delegated refresh token** (the mailbox user signed in once, e.g. with msal's
      device-code flow): give ``refresh_token``. msal keeps the rotated refresh token in
      its cache, so keep ``token_cache`` on disk; with a ``client_secret`` the app is
      a confidential client, otherwise a public one;
    * **a user's sign-in kept in** ``token_cache`` (``halomail authorize`` wrote it): give
      only ``token_cache``; the account it holds is used.

    msal itself treats a cached token with less than five minutes left as expired
    (:data:`REFRESH_MARGIN`), so every :meth:`token` is good for at least that long.

    Args:
        tenant_id: The directory (tenant) id or domain.
        client_id: The app registration's id.
        client_secret: The app's client secret.
        certificate_file: A PEM file with the app's private key and its certificate.
        refresh_token: A delegated refresh token.
        scopes: The scopes asked for (default :data:`MICROSOFT_MAIL_SCOPES`).
        token_cache: Where msal's token cache is kept between runs (mode 0600).
        authority: The authority URL (default ``https://login.microsoftonline.com/<tenant>``);
            when given, msal's instance discovery is skipped (national clouds, test servers).
        verify: TLS verification for msal's HTTP client: True, or a CA bundle path.
        timeout: Seconds allowed for each HTTP request.
        mailbox: The mailbox's name, for error messages.
        key_path: Where the mailbox is in ``halomail.toml``, for error messages.

    Raises:
        ValueError: Neither a secret, a certificate, a refresh token nor a cache was given.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str | None = None,
        certificate_file: str | os.PathLike[str] | None = None,
        refresh_token: str | None = None,
        scopes: Sequence[str] = MICROSOFT_MAIL_SCOPES,
        token_cache: str | os.PathLike[str] | None = None,
        authority: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        mailbox: str | None = None,
        key_path: str = "",
    ) -> None:
        if not (client_secret or certificate_file or refresh_token or token_cache):
            raise ValueError("give a client_secret, a certificate_file, a refresh_token or a cache")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.scopes = list(scopes)
        self.token_cache_path = Path(token_cache) if token_cache is not None else None
        self.authority = authority or f"{_MICROSOFT_LOGIN}/{tenant_id}"
        self.mailbox = mailbox
        self._custom_authority = authority is not None
        self._client_secret = client_secret
        self._certificate_file = Path(certificate_file) if certificate_file else None
        self._refresh_token = refresh_token
        # Only a cache: the user's sign-in `halomail authorize` stored there.
        self._signed_in = not (client_secret or certificate_file or refresh_token)
        self._verify = verify
        self._timeout = timeout
        self._key_path = key_path
        self._lock = threading.Lock()
        self._app: Any = None
        self._cache: Any = None

    def __repr__(self) -> str:
        grant = "refresh_token" if self.delegated else "client_credentials"
        return f"MicrosoftTokenProvider(tenant_id={self.tenant_id!r}, grant={grant!r})"

    @property
    def delegated(self) -> bool:
        """True when tokens come from a user's refresh token rather than the app's own."""
        return self._refresh_token is not None or self._signed_in

    def token(self) -> str:
        """An access token from msal's cache, or a fresh one.

        Raises:
            AuthenticationError: Entra ID refused the grant (revoked refresh token, wrong
                or expired secret or certificate, missing consent).
            TransientConnectorError: Entra ID could not be reached or had an outage.
        """
        with self._lock:
            try:
                app = self._application()
                result = self._acquire(app)
            except (AuthenticationError, TransientConnectorError, ConfigError):
                raise
            except ValueError as exc:
                # msal's OIDC discovery answered 4xx: the tenant or authority is wrong.
                where = f"{self._key_path}." if self._key_path else ""
                raise AuthenticationError(
                    f"Microsoft Entra ID does not know the tenant at {self.authority}: "
                    f"check {where}tenant_id"
                    + (f" and {where}authority" if self._custom_authority else ""),
                    mailbox=self.mailbox,
                ) from exc
            except Exception as exc:
                # msal raises the HTTP library's errors as they are (connection refused,
                # timeout, TLS, a 5xx during discovery); none says anything about the grant.
                raise TransientConnectorError(
                    f"could not reach Microsoft Entra ID at {self.authority} "
                    f"({type(exc).__name__})",
                    mailbox=self.mailbox,
                ) from exc
            finally:
                self._save_cache()
        if "access_token" not in result:
            raise self._error(result)
        log.debug(
            "mailbox %s: Microsoft token from %s, %s s left",
            self.mailbox,
            result.get("token_source", "idp"),
            result.get("expires_in"),
        )
        return str(result["access_token"])

    def invalidate(self) -> None:
        """Drop the cached access tokens; the next :meth:`token` asks Entra ID again."""
        with self._lock:
            if self._cache is None:
                return
            for entry in list(self._cache.search(self._cache.CredentialType.ACCESS_TOKEN)):
                self._cache.remove_at(entry)
            self._save_cache()

    def _acquire(self, app: Any) -> dict[str, Any]:
        if not self.delegated:
            # Since msal 1.23 this looks in the cache first and only asks Entra ID when
            # there is no token with more than five minutes left.
            result: dict[str, Any] | None = app.acquire_token_for_client(self.scopes)
            return result or {}
        result = None
        accounts = app.get_accounts()
        if accounts:
            # The cached (rotated) refresh token; None when it is missing or refused.
            result = app.acquire_token_silent(self.scopes, account=accounts[0])
        if not result and self._signed_in:
            raise AuthenticationError(
                f"no usable sign-in in {self.token_cache_path}: run "
                f"`halomail authorize {self.mailbox or 'MAILBOX'}` to sign the user in again",
                mailbox=self.mailbox,
            )
        if not result:
            # First run, or the cached grant died: use the configured refresh token. An
            # administrator who signed in again and updated it lands here too.
            result = app.acquire_token_by_refresh_token(self._refresh_token, self.scopes)
        return result or {}

    def _application(self) -> Any:
        if self._app is not None:
            return self._app
        try:
            import msal  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigError(
                f"{self._key_path}.auth" if self._key_path else "auth",
                "Microsoft OAuth2 needs msal: pip install 'halomail[office365]'",
            ) from exc
        self._cache = msal.SerializableTokenCache()
        self._load_cache()
        options: dict[str, Any] = {
            "authority": self.authority,
            "token_cache": self._cache,
            "http_client": _http_session(self._verify, self._timeout),
        }
        if self._custom_authority:
            options["instance_discovery"] = False
        credential = self._credential()
        if credential is None:
            self._app = msal.PublicClientApplication(self.client_id, **options)
        else:
            self._app = msal.ConfidentialClientApplication(
                self.client_id, client_credential=credential, **options
            )
        return self._app

    def _credential(self) -> str | dict[str, str] | None:
        if self._client_secret:
            return self._client_secret
        if self._certificate_file is None:
            return None
        try:
            pem = self._certificate_file.read_bytes()
        except OSError as exc:
            raise AuthenticationError(
                f"cannot read the certificate file {self._certificate_file}: "
                f"{exc.strerror or type(exc).__name__}",
                mailbox=self.mailbox,
            ) from exc
        key, cert = _PEM_KEY.search(pem), _PEM_CERT.search(pem)
        if key is None or cert is None:
            raise AuthenticationError(
                f"{self._certificate_file} must hold a PEM private key and its PEM certificate",
                mailbox=self.mailbox,
            )
        # With the certificate, msal signs its client assertion with the SHA-256
        # thumbprint (x5t#S256), which Entra ID accepts for any uploaded certificate.
        return {"private_key": key.group().decode(), "public_certificate": cert.group().decode()}

    def _load_cache(self) -> None:
        path = self.token_cache_path
        if path is None or not path.exists():
            return
        try:
            if path.stat().st_mode & 0o077:
                # The cache holds refresh tokens: tighten a file someone copied loosely.
                log.warning("token cache %s was readable by others; setting mode 0600", path)
                path.chmod(0o600)
            self._cache.deserialize(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # A damaged cache only costs one extra token request; it is rewritten below.
            log.warning("token cache %s unreadable (%s); starting empty", path, type(exc).__name__)

    def _save_cache(self) -> None:
        path = self.token_cache_path
        if path is None or self._cache is None or not self._cache.has_state_changed:
            return
        try:
            _write_private(path, self._cache.serialize())
            self._cache.has_state_changed = False
        except OSError as exc:
            log.warning("cannot write token cache %s: %s", path, exc.strerror or exc)

    def _error(self, result: Mapping[str, Any]) -> Exception:
        code = str(result.get("error") or "no_token")
        description = str(result.get("error_description") or "")
        aadsts = _AADSTS.search(description)
        what = f"{code}, {aadsts.group()}" if aadsts else code
        where = f"{self._key_path}." if self._key_path else ""
        if code in _TRANSIENT_OAUTH_ERRORS:
            return TransientConnectorError(
                f"Microsoft Entra ID is temporarily unable to issue a token ({what})",
                mailbox=self.mailbox,
            )
        if self._refresh_token is not None and code == "invalid_grant":
            message = (
                f"Microsoft refused the refresh token ({what}): it was revoked or has expired. "
                f"Sign the mailbox user in again and update {where}refresh_token"
            )
        elif code in ("invalid_client", "unauthorized_client"):
            message = (
                f"Microsoft refused the app's credentials ({what}): the client secret or "
                f"certificate is wrong or expired. Create a new one in the app registration "
                f"({self.client_id}) and update {where}client_secret or {where}certificate_file"
            )
        elif code in ("invalid_scope", "consent_required", "interaction_required"):
            message = (
                f"Microsoft refused the scopes {' '.join(self.scopes)} ({what}): grant the "
                "permission and admin consent in the app registration, then try again"
            )
        else:
            message = (
                f"Microsoft refused to issue a token ({what}); check {where}tenant_id, "
                f"{where}client_id and the app registration's permissions"
            )
        return AuthenticationError(message, mailbox=self.mailbox)


# -- Google -----------------------------------------------------------------------


class GoogleTokenProvider:
    """Tokens from Google through google-auth.

    Either a **service account** with domain-wide delegation (``credentials_file`` of
    type ``service_account`` and ``subject``, the user to read as), or **user
    credentials** (``credentials_file`` of type ``authorized_user``, or ``client_id``,
    ``client_secret`` and ``refresh_token``). The token is refreshed once less than
    :data:`REFRESH_MARGIN` of its life is left.

    Args:
        credentials_file: A service-account key or an authorized-user JSON file.
        subject: The user a service account impersonates.
        client_id: An OAuth client id (user credentials without a file).
        client_secret: Its secret.
        refresh_token: The user's refresh token.
        scopes: The scopes asked for (default :data:`GOOGLE_MAIL_SCOPES`).
        token_uri: The token endpoint; defaults to the file's, else Google's.
        verify: TLS verification: True, or a CA bundle path.
        timeout: Seconds allowed for each HTTP request.
        mailbox: The mailbox's name, for error messages.
        key_path: Where the mailbox is in ``halomail.toml``, for error messages.

    Raises:
        ValueError: Neither a credentials file nor a full set of user credentials was given.
    """

    def __init__(
        self,
        *,
        credentials_file: str | os.PathLike[str] | None = None,
        subject: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        scopes: Sequence[str] = GOOGLE_MAIL_SCOPES,
        token_uri: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        mailbox: str | None = None,
        key_path: str = "",
    ) -> None:
        if credentials_file is None and not (client_id and client_secret and refresh_token):
            raise ValueError(
                "give a credentials_file, or client_id, client_secret and refresh_token"
            )
        self.credentials_file = Path(credentials_file) if credentials_file else None
        self.subject = subject
        self.scopes = list(scopes)
        self.mailbox = mailbox
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._token_uri = token_uri
        self._verify = verify
        self._timeout = timeout
        self._key_path = key_path
        self._lock = threading.Lock()
        self._credentials: Any = None
        self._service_account = False
        self._request: Any = None
        self._stale = False

    def __repr__(self) -> str:
        kind = str(self.credentials_file) if self.credentials_file else "refresh_token"
        return f"GoogleTokenProvider({kind!r}, subject={self.subject!r})"

    def token(self) -> str:
        """The current access token, refreshed first when it is missing or nearly expired.

        Raises:
            AuthenticationError: Google refused the grant (revoked refresh token, disabled
                key, delegation not granted), or the credentials file is unusable.
            TransientConnectorError: Google could not be reached or had an outage.
        """
        with self._lock:
            credentials = self._load()
            expiry = credentials.expiry
            fresh = (
                not self._stale
                and credentials.token
                and expiry is not None
                and expiry - _utcnow_naive() > REFRESH_MARGIN
            )
            if not fresh:
                self._refresh(credentials)
                self._stale = False
            return str(credentials.token)

    def invalidate(self) -> None:
        """Force a refresh on the next :meth:`token`."""
        with self._lock:
            self._stale = True

    def _refresh(self, credentials: Any) -> None:
        from google.auth import exceptions

        try:
            credentials.refresh(self._transport())
        except exceptions.RefreshError as exc:
            raise self._error(exc) from exc
        except (exceptions.TransportError, OSError) as exc:
            raise TransientConnectorError(
                f"could not reach Google's token endpoint ({type(exc).__name__})",
                mailbox=self.mailbox,
            ) from exc
        log.debug(
            "mailbox %s: Google token refreshed, expires %s", self.mailbox, credentials.expiry
        )

    def _transport(self) -> Any:
        if self._request is None:
            from google.auth.transport.requests import Request

            session = _http_session(self._verify, self._timeout)
            timeout = self._timeout

            class _TimedRequest(Request):
                def __call__(self, *args: Any, **kwargs: Any) -> Any:
                    kwargs.setdefault("timeout", timeout)
                    call: Any = super().__call__
                    return call(*args, **kwargs)

            self._request = _TimedRequest(session=session)
        return self._request

    def _load(self) -> Any:
        if self._credentials is not None:
            return self._credentials
        try:
            from google.oauth2 import credentials as user_credentials
            from google.oauth2 import service_account
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigError(
                f"{self._key_path}.auth" if self._key_path else "auth",
                "Google OAuth2 needs google-auth: pip install 'halomail[google]'",
            ) from exc
        info: dict[str, Any] = {}
        if self.credentials_file is not None:
            info = self._read_file()
        if info.get("type") == "service_account":
            if self._token_uri:
                info["token_uri"] = self._token_uri
            try:
                factory: Any = service_account.Credentials.from_service_account_info
                sa = factory(info, scopes=self.scopes, subject=self.subject)
            except (ValueError, KeyError) as exc:
                problem = f"is not a usable service-account key ({type(exc).__name__})"
                raise self._bad_file(problem) from exc
            self._service_account = True
            self._credentials = sa
            return sa
        if info and info.get("type") not in ("authorized_user", None):
            raise self._bad_file(
                f"type {info.get('type')!r} is not supported "
                "(expected 'service_account' or 'authorized_user')"
            )
        client_id = info.get("client_id") or self._client_id
        client_secret = info.get("client_secret") or self._client_secret
        refresh_token = info.get("refresh_token") or self._refresh_token
        if not (client_id and client_secret and refresh_token):
            raise self._bad_file("it needs client_id, client_secret and refresh_token")
        user_class: Any = user_credentials.Credentials
        self._credentials = user_class(
            token=None,
            refresh_token=refresh_token,
            token_uri=self._token_uri or info.get("token_uri") or _GOOGLE_TOKEN_URI,
            client_id=client_id,
            client_secret=client_secret,
            scopes=self.scopes,
        )
        return self._credentials

    def _read_file(self) -> dict[str, Any]:
        assert self.credentials_file is not None
        try:
            data = json.loads(self.credentials_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise self._bad_file(f"cannot be read ({exc.strerror or type(exc).__name__})") from exc
        except ValueError as exc:
            raise self._bad_file("is not valid JSON") from exc
        if not isinstance(data, dict):
            raise self._bad_file("is not a JSON object")
        return data

    def _bad_file(self, problem: str) -> AuthenticationError:
        where = f"{self._key_path}.credentials_file" if self._key_path else "credentials_file"
        source = self.credentials_file or "the user credentials"
        return AuthenticationError(
            f"{source} ({where}) {problem}: download a new key or sign in again",
            mailbox=self.mailbox,
        )

    def _error(self, exc: Exception) -> Exception:
        data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], Mapping) else {}
        code = str(data.get("error") or "refused")
        if getattr(exc, "retryable", False) or code in _TRANSIENT_OAUTH_ERRORS:
            return TransientConnectorError(
                f"Google is temporarily unable to issue a token ({code})", mailbox=self.mailbox
            )
        where = f"{self._key_path}." if self._key_path else ""
        if self._service_account:
            message = (
                f"Google refused the service account's token request ({code}): check that "
                "its key is still active, that domain-wide delegation is granted to its "
                f"client id for {' '.join(self.scopes)} in the Admin console, and that "
                f"{where}subject ({self.subject}) is an existing user"
            )
        elif code == "invalid_grant":
            message = (
                f"Google refused the refresh token ({code}): it was revoked or has expired. "
                f"Sign the user in again and update {where}refresh_token or {where}credentials_file"
            )
        else:
            message = (
                f"Google refused the OAuth client ({code}): check {where}client_id and "
                f"{where}client_secret"
            )
        return AuthenticationError(message, mailbox=self.mailbox)


# -- from settings ----------------------------------------------------------------

_PROVIDER_AUTH = ("oauth2-microsoft", "oauth2-google", "oauth2-static")
_SASL_AUTH = ("xoauth2", "oauthbearer")


def token_provider_from_settings(
    extra: Mapping[str, Any],
    key_path: str,
    *,
    mailbox: str | None = None,
    verify: bool | str = True,
) -> TokenProvider | None:
    """Build the token provider a mailbox's settings describe (keys in the module docstring).

    Args:
        extra: The mailbox's ``extra`` mapping (:attr:`halomail.MailboxSettings.extra`).
        key_path: Where the mailbox is in ``halomail.toml`` (``mailboxes[2]``), for errors.
        mailbox: The mailbox's name, for later error messages.
        verify: TLS verification for the identity provider: True, or a CA bundle path.

    Returns:
        The provider, or ``None`` when the mailbox logs in with a password (``auth``
        absent or ``password``).

    Raises:
        ConfigError: ``auth`` is unknown, or a key the chosen provider needs is missing.
    """
    auth = str(extra.get("auth") or "password").lower()
    if auth == "password":
        return None
    kind = auth
    if auth in _SASL_AUTH:
        if extra.get("token"):
            kind = "oauth2-static"
        elif extra.get("credentials_file") or extra.get("subject"):
            kind = "oauth2-google"
        elif extra.get("tenant_id"):
            kind = "oauth2-microsoft"
        else:
            raise ConfigError(
                f"{key_path}.auth",
                f"auth = {auth!r} needs a token source: 'token', 'credentials_file' "
                "(Google) or 'tenant_id' and 'client_id' (Microsoft)",
            )
    elif auth not in _PROVIDER_AUTH:
        allowed = ", ".join(repr(a) for a in ("password", *_PROVIDER_AUTH, *_SASL_AUTH))
        raise ConfigError(f"{key_path}.auth", f"expected one of {allowed}, got {auth!r}")

    def need(key: str) -> str:
        value = extra.get(key)
        if not value:
            raise ConfigError(f"{key_path}.{key}", f"required when auth = {auth!r}")
        return str(value)

    scopes = _scopes(extra.get("scopes"), f"{key_path}.scopes")
    if kind == "oauth2-static":
        return StaticTokenProvider(need("token"))
    if kind == "oauth2-microsoft":
        grants = ("client_secret", "certificate_file", "refresh_token", "token_cache")
        if not any(extra.get(key) for key in grants):
            raise ConfigError(
                f"{key_path}.client_secret",
                f"auth = {auth!r} needs client_secret, certificate_file or refresh_token "
                "(or token_cache, for a user's sign-in: halomail authorize)",
            )
        return MicrosoftTokenProvider(
            tenant_id=need("tenant_id"),
            client_id=need("client_id"),
            client_secret=extra.get("client_secret") or None,
            certificate_file=extra.get("certificate_file") or None,
            refresh_token=extra.get("refresh_token") or None,
            scopes=scopes or MICROSOFT_MAIL_SCOPES,
            token_cache=extra.get("token_cache") or None,
            authority=extra.get("authority") or None,
            verify=verify,
            timeout=float(extra.get("timeout") or 30.0),
            mailbox=mailbox,
            key_path=key_path,
        )
    if not extra.get("credentials_file") and not (
        extra.get("client_id") and extra.get("client_secret") and extra.get("refresh_token")
    ):
        raise ConfigError(
            f"{key_path}.credentials_file",
            f"auth = {auth!r} needs credentials_file, or client_id, client_secret and "
            "refresh_token",
        )
    return GoogleTokenProvider(
        credentials_file=extra.get("credentials_file") or None,
        subject=extra.get("subject") or None,
        client_id=extra.get("client_id") or None,
        client_secret=extra.get("client_secret") or None,
        refresh_token=extra.get("refresh_token") or None,
        scopes=scopes or GOOGLE_MAIL_SCOPES,
        token_uri=extra.get("token_uri") or None,
        verify=verify,
        timeout=float(extra.get("timeout") or 30.0),
        mailbox=mailbox,
        key_path=key_path,
    )


def _scopes(value: object, key: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, Sequence) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ConfigError(key, "expected a list of scopes or a space-separated string")


def _http_session(verify: bool | str, timeout: float) -> Any:
    """A requests session that honours ``verify`` and applies ``timeout`` to every call."""
    import requests
    from requests.adapters import HTTPAdapter

    class _Session(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            return super().request(*args, **kwargs)

        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> Any:
            settings: Any = super().merge_environment_settings(*args, **kwargs)
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own
            # CA bundle; a CA an administrator configured for this mailbox must win.
            if isinstance(verify, str):
                settings["verify"] = verify
            return settings

    session = _Session()
    session.verify = verify
    # One retry on a dropped connection, as msal's own default session does.
    adapter = HTTPAdapter(max_retries=1)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _utcnow_naive() -> dt.datetime:
    # google-auth keeps expiries as naive UTC datetimes.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by its owner only (mode 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    # Created 0600 from the first byte: never a moment where the tokens are world-readable.
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a crash: O_EXCL below must create the file afresh
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
