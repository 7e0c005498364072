"""A local HTTPS OAuth2 token server speaking Microsoft's and Google's wire formats.

Microsoft Entra ID (what msal asks for, with ``authority=<base>/<tenant>`` and
``instance_discovery=False``):

* ``GET /<tenant>/v2.0/.well-known/openid-configuration``: the OIDC discovery document;
* ``POST /<tenant>/oauth2/v2.0/token``: the v2.0 token endpoint, grants
  ``client_credentials`` (a client secret, or a signed client assertion checked against
  the registered certificate), ``refresh_token`` (rotating, with ``id_token`` and
  ``client_info`` so msal records the account) and the device code
  (``urn:ietf:params:oauth:grant-type:device_code``: ``authorization_pending`` until the
  test approves the user code, as the user typing it would, and at least once);
* ``POST /<tenant>/oauth2/v2.0/devicecode``: starts a device-code sign-in (RFC 8628).

Google (what google-auth posts to a credential's ``token_uri``):

* ``POST /google/token``: ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (a service
  account's RS256 assertion, checked against its registered public key, ``sub`` the
  impersonated user), ``refresh_token`` and ``authorization_code`` (the installed-app
  flow: a code the test issued as Google's consent page would, its ``redirect_uri`` and
  PKCE ``code_verifier`` checked).

Errors are the real shapes: HTTP 400/401 with ``{"error": "invalid_grant", ...}``.
Every request is recorded, so tests can prove a cached token caused no request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.servers.certs import LOOPBACK, write_test_pki

TENANT = "11111111-2222-3333-4444-555555555555"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"


@attrs.frozen
class TlsFiles:
    """A private CA and a server certificate for 127.0.0.1 / localhost signed by it."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """Write a fresh CA (``ca.pem``) and a loopback server certificate into ``folder``."""
    ca_file = write_test_pki(folder, {"server": LOOPBACK})
    return TlsFiles(ca_file, folder / "server.pem", folder / "server.key")


@attrs.frozen
class TokenRequest:
    """One request the server received."""

    method: str
    path: str
    grant_type: str
    form: dict[str, str]


@attrs.define
class DeviceFlow:
    """One device-code sign-in: what the app asked for, and whether the user approved it."""

    client_id: str
    scope: str
    user_code: str
    user: str | None = None
    polls: int = 0


@attrs.define
class _AuthorizationCode:
    client_id: str
    client_secret: str
    user: str
    redirect_uri: str
    code_challenge: str


@attrs.define
class _RefreshGrant:
    client_id: str
    user: str
    provider: str  # "microsoft" | "google"
    client_secret: str | None = None


class TokenEndpoint:
    """The server's state; tests register clients and grants, then read ``requests``.

    Args:
        base_url: ``https://127.0.0.1:<port>``.
        ca_file: The CA that signed the server's certificate (give it to the client).
    """

    def __init__(self, base_url: str, ca_file: Path) -> None:
        self.base_url = base_url
        self.ca_file = ca_file
        self.tenant = TENANT
        #: Lifetime given to every access token issued from now on.
        self.expires_in = 3600
        self.requests: list[TokenRequest] = []
        #: Every access token issued, in order.
        self.issued: list[str] = []
        self._lock = threading.Lock()
        self._clients: dict[str, dict[str, Any]] = {}
        self._refresh: dict[str, _RefreshGrant] = {}
        self._service_accounts: dict[str, Any] = {}
        self._revoked_users: set[str] = set()
        #: Device-code sign-ins by device code.
        self.device_flows: dict[str, DeviceFlow] = {}
        self._codes: dict[str, _AuthorizationCode] = {}

    # -- what tests use ------------------------------------------------------------

    @property
    def authority(self) -> str:
        """The msal authority for the test tenant."""
        return f"{self.base_url}/{self.tenant}"

    @property
    def microsoft_token_url(self) -> str:
        """The v2.0 token endpoint msal discovers."""
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def google_token_uri(self) -> str:
        """The token endpoint to put in Google credentials' ``token_uri``."""
        return f"{self.base_url}/google/token"

    def register_client(
        self, client_id: str, *, secret: str | None = None, certificate_pem: bytes | None = None
    ) -> None:
        """Accept ``client_id`` authenticating with ``secret`` or a certificate's key."""
        cert = x509.load_pem_x509_certificate(certificate_pem) if certificate_pem else None
        with self._lock:
            self._clients[client_id] = {"secret": secret, "certificate": cert}

    def register_refresh_token(
        self,
        refresh_token: str,
        *,
        client_id: str,
        user: str,
        provider: str = "microsoft",
        client_secret: str | None = None,
    ) -> None:
        """Make ``refresh_token`` valid for ``user`` (Microsoft or Google flavour)."""
        with self._lock:
            self._refresh[refresh_token] = _RefreshGrant(client_id, user, provider, client_secret)

    def register_service_account(self, client_email: str, public_key_pem: bytes) -> None:
        """Accept JWT assertions from ``client_email`` signed by the matching private key."""
        key = serialization.load_pem_public_key(public_key_pem)
        with self._lock:
            self._service_accounts[client_email] = key

    def revoke_user(self, user: str) -> None:
        """Revoke every grant of ``user``: refresh tokens and service-account impersonation."""
        with self._lock:
            self._revoked_users.add(user)

    def revoke_client(self, client_id: str) -> None:
        """Make ``client_id``'s secret and certificate invalid (an expired secret)."""
        with self._lock:
            self._clients.pop(client_id, None)

    def approve_device(self, user_code: str, user: str) -> None:
        """The user typed ``user_code`` on the sign-in page and signed in as ``user``."""
        with self._lock:
            (flow,) = [f for f in self.device_flows.values() if f.user_code == user_code]
            flow.user = user

    def issue_code(
        self, *, client_id: str, client_secret: str, user: str, redirect_uri: str, challenge: str
    ) -> str:
        """Google's consent page: ``user`` allowed access; the code the browser carries."""
        code = f"4/{secrets.token_urlsafe(24)}"
        with self._lock:
            self._codes[code] = _AuthorizationCode(
                client_id, client_secret, user, redirect_uri, challenge
            )
        return code

    def token_requests(self, grant_type: str | None = None) -> list[TokenRequest]:
        """The POSTs to a token endpoint, optionally only those of one grant type."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "POST" and (grant_type is None or r.grant_type == grant_type)
            ]

    # -- protocol ------------------------------------------------------------------

    def handle(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer one request: (HTTP status, JSON body)."""
        with self._lock:
            self.requests.append(TokenRequest(method, path, form.get("grant_type", ""), form))
            discovery = f"/{self.tenant}/v2.0/.well-known/openid-configuration"
            if method == "GET" and path == discovery:
                return 200, self._discovery()
            if method == "POST" and path == f"/{self.tenant}/oauth2/v2.0/devicecode":
                return self._device_code(form)
            if method == "POST" and path == f"/{self.tenant}/oauth2/v2.0/token":
                return self._microsoft_token(form)
            if method == "POST" and path == "/google/token":
                return self._google_token(form)
            return 404, {"error": "not_found"}

    def _discovery(self) -> dict[str, Any]:
        base = self.authority
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{self.base_url}/{self.tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "oid", "tid"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }

    def _access_token(self) -> str:
        token = f"at-{secrets.token_urlsafe(18)}"
        self.issued.append(token)
        return token

    @staticmethod
    def _aad_error(status: int, error: str, code: int, text: str) -> tuple[int, dict[str, Any]]:
        return status, {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {secrets.token_hex(8)} "
            f"Correlation ID: {secrets.token_hex(8)} Timestamp: 2026-01-01 00:00:00Z",
            "error_codes": [code],
            "timestamp": "2026-01-01 00:00:00Z",
            "trace_id": secrets.token_hex(8),
            "correlation_id": secrets.token_hex(8),
        }

    def _client_ok(self, form: dict[str, str]) -> bool:
        client = self._clients.get(form.get("client_id", ""))
        if client is None:
            return False
        if client["secret"] is not None and form.get("client_secret") == client["secret"]:
            return True
        assertion = form.get("client_assertion")
        if client["certificate"] is None or not assertion:
            return False
        try:
            claims = jwt.decode(
                assertion,
                client["certificate"].public_key(),
                algorithms=["PS256", "RS256"],
                audience=self.microsoft_token_url,
            )
        except jwt.PyJWTError:
            return False
        return bool(claims.get("iss") == claims.get("sub") == form.get("client_id"))

    def _device_code(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        device_code = secrets.token_urlsafe(24)
        user_code = secrets.token_hex(4).upper()
        self.device_flows[device_code] = DeviceFlow(
            form.get("client_id", ""), form.get("scope", ""), user_code
        )
        page = f"{self.base_url}/devicelogin"
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": page,
            "expires_in": 900,
            "interval": 1,
            "message": f"To sign in, use a web browser to open the page {page} and enter "
            f"the code {user_code} to authenticate.",
        }

    def _device_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        flow = self.device_flows.get(form.get("device_code", ""))
        if flow is None or flow.client_id != form.get("client_id"):
            return self._aad_error(400, "invalid_grant", 70000, "The device code is unknown.")
        flow.polls += 1
        if flow.user is None or flow.polls == 1:
            return self._aad_error(
                400,
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )
        del self.device_flows[form["device_code"]]  # a device code signs in once
        return self._user_tokens(_RefreshGrant(flow.client_id, flow.user, "microsoft"), flow.scope)

    def _microsoft_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        if grant == DEVICE_CODE:
            return self._device_token(form)
        if grant == "client_credentials":
            if not self._client_ok(form):
                return self._aad_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the "
                    "request is the client secret value, not the client secret ID.",
                )
            return 200, {
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "ext_expires_in": self.expires_in,
                "access_token": self._access_token(),
            }
        if grant == "refresh_token":
            held = self._refresh.get(form.get("refresh_token", ""))
            if (
                held is None
                or held.provider != "microsoft"
                or held.user in self._revoked_users
                or held.client_id != form.get("client_id")
            ):
                return self._aad_error(
                    400,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired due to "
                    "inactivity. Send a new interactive authorization request for this user "
                    "and resource.",
                )
            if held.client_secret is not None and not self._client_ok(form):
                return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret.")
            return self._user_tokens(held, form.get("scope", ""))
        return 400, {"error": "unsupported_grant_type", "error_description": f"{grant!r}"}

    def _user_tokens(self, held: _RefreshGrant, scope: str) -> tuple[int, dict[str, Any]]:
        """A delegated answer: access token, rotated refresh token, id_token, client_info."""
        rotated = f"rt-{secrets.token_urlsafe(18)}"
        self._refresh[rotated] = held
        uid = f"uid-{held.user.split('@')[0]}"
        return 200, {
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "access_token": self._access_token(),
            "refresh_token": rotated,
            "id_token": _unsigned_jwt(
                {
                    "aud": held.client_id,
                    "iss": f"{self.authority}/v2.0",
                    "iat": int(time.time()),
                    "nbf": int(time.time()),
                    "exp": int(time.time()) + 3600,
                    "oid": uid,
                    "sub": uid,
                    "tid": self.tenant,
                    "preferred_username": held.user,
                    "name": held.user,
                    "ver": "2.0",
                }
            ),
            "client_info": _b64url(json.dumps({"uid": uid, "utid": self.tenant}).encode()),
        }

    def _google_code(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        held = self._codes.pop(form.get("code", ""), None)  # a code is good once
        verifier = form.get("code_verifier", "").encode()
        challenge = _b64url(hashlib.sha256(verifier).digest())
        if (
            held is None
            or held.redirect_uri != form.get("redirect_uri")
            or held.code_challenge != challenge
        ):
            return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
        if (held.client_id, held.client_secret) != (
            form.get("client_id"),
            form.get("client_secret"),
        ):
            return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
        refresh = f"1//{secrets.token_urlsafe(24)}"
        self._refresh[refresh] = _RefreshGrant(
            held.client_id, held.user, "google", held.client_secret
        )
        return 200, {
            "access_token": self._access_token(),
            "expires_in": self.expires_in,
            "refresh_token": refresh,
            "scope": "https://www.googleapis.com/auth/gmail.modify",
            "token_type": "Bearer",
        }

    def _google_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._google_code(form)
        if grant == JWT_BEARER:
            assertion = form.get("assertion", "")
            try:
                issuer = jwt.decode(assertion, options={"verify_signature": False})["iss"]
                key = self._service_accounts[issuer]
                # google-auth always addresses its assertion to Google's endpoint,
                # whatever token_uri it posts to; Google checks exactly that audience.
                claims = jwt.decode(assertion, key, algorithms=["RS256"], audience=GOOGLE_AUDIENCE)
            except (KeyError, jwt.PyJWTError):
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Invalid JWT Signature.",
                }
            if claims.get("sub") in self._revoked_users or not claims.get("scope"):
                return 401, {
                    "error": "unauthorized_client",
                    "error_description": "Client is unauthorized to retrieve access tokens "
                    "using this method, or client not authorized for any of the scopes "
                    "requested.",
                }
            return 200, {
                "access_token": self._access_token(),
                "expires_in": self.expires_in,
                "token_type": "Bearer",
            }
        if grant == "refresh_token":
            held = self._refresh.get(form.get("refresh_token", ""))
            if held is None or held.provider != "google" or held.user in self._revoked_users:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                }
            if held.client_id != form.get("client_id") or (
                held.client_secret != form.get("client_secret")
            ):
                return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
            return 200, {
                "access_token": self._access_token(),
                "expires_in": self.expires_in,
                "scope": form.get("scope", "https://mail.google.com/"),
                "token_type": "Bearer",
            }
        return 400, {"error": "unsupported_grant_type", "error_description": f"{grant!r}"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    # msal decodes the id_token's claims without checking a signature, as it documents.
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64url(json.dumps(claims).encode())}.sig"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the tests read ``TokenEndpoint.requests`` instead."""

    def do_GET(self) -> None:
        """Serve the discovery document."""
        self._answer("GET", {})

    def do_POST(self) -> None:
        """Serve a token request (form-encoded, as RFC 6749 requires)."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        self._answer("POST", form)

    def _answer(self, method: str, form: dict[str, str]) -> None:
        path = urllib.parse.urlsplit(self.path).path
        status, payload = self.server.endpoint.handle(method, path, form)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    endpoint: TokenEndpoint


@pytest.fixture(scope="session")
def token_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a loopback certificate for the token endpoint."""
    return make_tls_files(tmp_path_factory.mktemp("token-tls"))


@pytest.fixture
def token_endpoint(token_tls: TlsFiles) -> Iterator[TokenEndpoint]:
    """A fresh token server on an ephemeral loopback port, HTTPS only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(token_tls.cert_file, token_tls.key_file)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    server.endpoint = TokenEndpoint(f"https://127.0.0.1:{port}", token_tls.ca_file)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="token-endpoint", daemon=True
    )
    thread.start()
    try:
        yield server.endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
