"""Signing a mailbox's user in once, interactively: what ``halomail authorize`` runs.

* **Microsoft** — the device-code flow through msal (:func:`microsoft_device_sign_in`):
  the user opens a page on any device and types a short code; msal polls the token
  endpoint until they have. The account and its refresh token go into msal's token
  cache, which :class:`~halomail.backends.auth.oauth.MicrosoftTokenProvider` reads.
* **Google** — the installed-app flow (:func:`google_installed_app_sign_in`): a page at
  Google asks the user to allow access, then sends the browser back to a one-off
  server on the loopback address with a code, which is exchanged (with PKCE) for a
  refresh token. Written as an ``authorized_user`` file by
  :func:`write_google_user_file`.

Nothing here logs a token or a code.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from halomail.backends.auth.oauth import _http_session, _write_private
from halomail.errors import AuthenticationError, ConfigError, TransientConnectorError

__all__ = [
    "GOOGLE_AUTH_URI",
    "google_installed_app_sign_in",
    "microsoft_device_sign_in",
    "write_google_user_file",
]

log = logging.getLogger(__name__)

#: Google's consent page for installed apps.
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
_GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret


def microsoft_device_sign_in(
    *,
    client_id: str,
    authority: str,
    scopes: Sequence[str],
    token_cache: Path | None,
    show: Callable[[str], None],
    custom_authority: bool = False,
    verify: bool | str = True,
    timeout: float = 30.0,
) -> str:
    """Sign a user in with the device-code flow; keep the sign-in in ``token_cache``.

    Args:
        client_id: The app registration (a public client: "Allow public client flows").
        authority: ``https://login.microsoftonline.com/<tenant>``, or a national cloud's.
        scopes: The delegated scopes asked for (msal adds ``offline_access``).
        token_cache: The file msal's cache is written to (mode 0600), or ``None``.
        show: Called once with the instructions: the page to open and the code to type.
        custom_authority: Skip msal's instance discovery (national clouds, test servers).
        verify: TLS verification: True, or a CA bundle path.
        timeout: Seconds allowed for each HTTP request.

    Returns:
        The refresh token, for a configuration that keeps it in an environment variable.

    Raises:
        AuthenticationError: The sign-in was refused, expired or declined.
        TransientConnectorError: Entra ID could not be reached.
    """
    import msal  # type: ignore[import-untyped]

    cache = msal.SerializableTokenCache()
    if token_cache is not None and token_cache.exists():
        cache.deserialize(token_cache.read_text(encoding="utf-8"))
    options: dict[str, Any] = {"authority": authority, "token_cache": cache}
    options["http_client"] = _http_session(verify, timeout)
    if custom_authority:
        options["instance_discovery"] = False
    try:
        app = msal.PublicClientApplication(client_id, **options)
        flow = app.initiate_device_flow(scopes=list(scopes))
        if "user_code" not in flow:
            raise _refused("Microsoft did not start the sign-in", flow)
        show(str(flow["message"]))
        result = app.acquire_token_by_device_flow(flow)
    except (AuthenticationError, ConfigError):
        raise
    except Exception as exc:
        raise TransientConnectorError(
            f"could not reach Microsoft Entra ID at {authority} ({type(exc).__name__})"
        ) from exc
    if "access_token" not in result or "refresh_token" not in result:
        raise _refused("Microsoft refused the sign-in", result)
    if token_cache is not None:
        _write_private(token_cache, cache.serialize())
    return str(result["refresh_token"])


def _refused(what: str, answer: dict[str, Any]) -> AuthenticationError:
    code = answer.get("error") or "no token"
    # The description names the cause (AADSTS code); it never carries a token.
    detail = str(answer.get("error_description") or "").split(" Trace ID:")[0]
    return AuthenticationError(f"{what} ({code}){': ' + detail if detail else ''}")


def google_installed_app_sign_in(
    *,
    client_id: str,
    client_secret: str,
    scopes: Sequence[str],
    show: Callable[[str], None],
    open_browser: bool = True,
    token_uri: str | None = None,
    auth_uri: str = GOOGLE_AUTH_URI,
    verify: bool | str = True,
    timeout: float = 30.0,
    wait: float = 600.0,
) -> str:
    """Sign a user in with Google's installed-app flow on a loopback redirect.

    Args:
        client_id: The OAuth client (type "Desktop app").
        client_secret: Its secret (Google does not treat it as confidential here).
        scopes: The scopes asked for.
        show: Called once with the address the user must open.
        open_browser: Also open that address in the local browser.
        token_uri: The token endpoint (default Google's).
        auth_uri: The consent page.
        verify: TLS verification for the token endpoint: True, or a CA bundle path.
        timeout: Seconds allowed for the token request.
        wait: Seconds to wait for the browser to come back.

    Returns:
        The user's refresh token.

    Raises:
        AuthenticationError: The user declined, the answer was forged, the wait ran out,
            or Google refused the code.
        TransientConnectorError: The token endpoint could not be reached.
    """
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state = secrets.token_urlsafe(16)
    with _LoopbackRedirect(state) as redirect:
        query = {
            "client_id": client_id,
            "redirect_uri": redirect.uri,
            "response_type": "code",
            "scope": " ".join(scopes),
            "state": state,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "access_type": "offline",
            "prompt": "consent",  # a refresh token even if the user consented before
        }
        url = f"{auth_uri}?{urllib.parse.urlencode(query)}"
        show(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        code = redirect.code(wait)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect.uri,
        "client_id": client_id,
        "client_secret": client_secret,
        "code_verifier": verifier,
    }
    return _exchange(token_uri or _GOOGLE_TOKEN_URI, form, verify, timeout)


def _exchange(token_uri: str, form: dict[str, str], verify: bool | str, timeout: float) -> str:
    try:
        response = _http_session(verify, timeout).post(token_uri, data=form)
        answer = response.json()
    except ValueError as exc:
        raise AuthenticationError("Google's token endpoint did not answer with JSON") from exc
    except OSError as exc:
        raise TransientConnectorError(
            f"could not reach Google's token endpoint ({type(exc).__name__})"
        ) from exc
    if response.status_code != 200 or not answer.get("refresh_token"):
        raise _refused("Google refused the sign-in", answer)
    return str(answer["refresh_token"])


def write_google_user_file(
    path: Path, *, client_id: str, client_secret: str, refresh_token: str, token_uri: str | None
) -> None:
    """Write an ``authorized_user`` credentials file (mode 0600), as google-auth reads it."""
    data = {
        "type": "authorized_user",
        "client_id": client_id,
        "client_secret": client_secret,
        "refresh_token": refresh_token,
    }
    if token_uri:
        data["token_uri"] = token_uri
    _write_private(path, json.dumps(data, indent=2) + "\n")


class _LoopbackRedirect:
    """A one-request HTTP server on 127.0.0.1 that catches the browser's redirect."""

    def __init__(self, state: str) -> None:
        self._state = state
        self._answer: dict[str, str] | None = None
        self._arrived = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                answer = {key: values[0] for key, values in query.items()}
                if answer.get("state") != owner._state:
                    # Not our sign-in (a stale tab, or a forged request): keep waiting.
                    self._reply(400, "This sign-in page is not the one halomail started.")
                    return
                owner._answer = answer
                self._reply(200, "Signed in: you may close this page and return to halomail.")
                owner._arrived.set()

            def _reply(self, status: int, text: str) -> None:
                body = f"<!doctype html><title>halomail</title><p>{text}</p>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the request line holds the authorization code."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.uri = f"http://127.0.0.1:{port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _LoopbackRedirect:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def code(self, wait: float) -> str:
        """The authorization code the browser brought back.

        Raises:
            AuthenticationError: The user declined, or nothing came back in time.
        """
        if not self._arrived.wait(wait):
            raise AuthenticationError(f"no answer from the browser within {wait:.0f} seconds")
        answer = self._answer or {}
        if "code" not in answer:
            error = answer.get("error", "no code")
            raise AuthenticationError(f"Google did not grant access ({error})")
        return answer["code"]
