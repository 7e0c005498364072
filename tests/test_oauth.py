"""OAuth2 token providers through the real msal and google-auth, against a local token server."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import stat
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from halomail.backends.auth.oauth import (
    GoogleTokenProvider,
    MicrosoftTokenProvider,
    StaticTokenProvider,
    TokenProvider,
    token_provider_from_settings,
)
from halomail.errors import AuthenticationError, ConfigError, TransientConnectorError
from tests.servers.token_endpoint import JWT_BEARER, TokenEndpoint

CLIENT_ID = "6f1c2b8e-0000-4000-8000-00000000c11e"
CLIENT_SECRET = "cs~VerySecretValue-DoNotLog-123"
REFRESH_TOKEN = "rt-original-SecretRefreshToken-456"
GOOGLE_CLIENT_ID = "1234-halomail.apps.googleusercontent.com"
GOOGLE_SECRET = "GOCSPX-google-client-secret-789"
SA_EMAIL = "halomail@project.iam.gserviceaccount.com"
USER = "alice@example.test"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA key for the certificate and service-account tests (generating is slow-ish)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _microsoft(endpoint: TokenEndpoint, **options: object) -> MicrosoftTokenProvider:
    values: dict[str, object] = {
        "tenant_id": endpoint.tenant,
        "client_id": CLIENT_ID,
        "authority": endpoint.authority,
        "verify": str(endpoint.ca_file),
        "mailbox": "Support",
    }
    values.update(options)
    return MicrosoftTokenProvider(**values)  # type: ignore[arg-type]


def _secrets_absent(text: str, endpoint: TokenEndpoint, *extra: str) -> None:
    for secret in (CLIENT_SECRET, REFRESH_TOKEN, GOOGLE_SECRET, *endpoint.issued, *extra):
        assert secret not in text


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every logger at DEBUG, libraries included, to look for leaked secrets."""
    caplog.set_level(logging.DEBUG)
    return caplog


class TestStatic:
    def test_the_static_provider_returns_its_token_and_hides_it(self) -> None:
        """The static provider hands out its token, satisfies the protocol and masks its repr."""
        provider = StaticTokenProvider("tok-alice-123")
        provider.invalidate()
        assert provider.token() == "tok-alice-123"
        assert isinstance(provider, TokenProvider)
        assert "tok-alice-123" not in repr(provider)


class TestMicrosoftClientCredentials:
    def test_a_token_is_obtained_and_then_served_from_the_cache(
        self, token_endpoint: TokenEndpoint
    ) -> None:
        """msal discovers the tenant, gets a client-credentials token once, then uses its cache."""
        token_endpoint.register_client(CLIENT_ID, secret=CLIENT_SECRET)
        provider = _microsoft(token_endpoint, client_secret=CLIENT_SECRET)
        first = provider.token()
        second = provider.token()
        assert first == second == token_endpoint.issued[0]
        (request,) = token_endpoint.token_requests()
        assert request.grant_type == "client_credentials"
        assert request.form["client_secret"] == CLIENT_SECRET
        assert request.form["scope"] == "https://outlook.office365.com/.default"
        discovery = [r for r in token_endpoint.requests if r.method == "GET"]
        assert [r.path for r in discovery] == [
            f"/{token_endpoint.tenant}/v2.0/.well-known/openid-configuration"
        ]

    def test_a_token_close_to_expiry_is_refreshed_before_it_is_used(
        self, token_endpoint: TokenEndpoint
    ) -> None:
        """A cached token with under five minutes left is replaced, not handed out."""
        token_endpoint.register_client(CLIENT_ID, secret=CLIENT_SECRET)
        token_endpoint.expires_in = 240
        provider = _microsoft(token_endpoint, client_secret=CLIENT_SECRET)
        short_lived = provider.token()
        token_endpoint.expires_in = 3600
        renewed = provider.token()
        assert renewed != short_lived
        assert provider.token() == renewed
        assert len(token_endpoint.token_requests("client_credentials")) == 2

    def test_invalidate_makes_the_next_call_fetch_a_new_token(
        self, token_endpoint: TokenEndpoint
    ) -> None:
        """After a server refused the token, invalidate() forces a fresh one."""
        token_endpoint.register_client(CLIENT_ID, secret=CLIENT_SECRET)
        provider = _microsoft(token_endpoint, client_secret=CLIENT_SECRET)
        first = provider.token()
        provider.invalidate()
        assert provider.token() != first
        assert len(token_endpoint.token_requests()) == 2

    def test_a_certificate_signs_the_client_assertion(
        self, token_endpoint: TokenEndpoint, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        """With certificate_file, msal sends a JWT assertion signed by the key, no secret."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "halomail app")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(rsa_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(rsa_key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        pem_file = tmp_path / "app.pem"
        pem_file.write_bytes(_pem_key(rsa_key) + cert_pem)
        token_endpoint.register_client(CLIENT_ID, certificate_pem=cert_pem)
        provider = _microsoft(token_endpoint, certificate_file=pem_file)
        assert provider.token() == token_endpoint.issued[0]
        (request,) = token_endpoint.token_requests()
        assert "client_secret" not in request.form
        assert request.form["client_assertion_type"] == (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        )
        header = jwt.get_unverified_header(request.form["client_assertion"])
        assert header["alg"] == "PS256"
        assert "x5t#S256" in header

    def test_an_expired_secret_fails_with_an_actionable_secret_free_message(
        self, token_endpoint: TokenEndpoint, debug_logs: pytest.LogCaptureFixture
    ) -> None:
        """invalid_client becomes AuthenticationError naming what to renew, with no secret."""
        provider = _microsoft(token_endpoint, client_secret=CLIENT_SECRET, key_path="mailboxes[1]")
        with pytest.raises(AuthenticationError) as caught:
            provider.token()
        message = str(caught.value)
        assert message.startswith("Support: Microsoft refused the app's credentials")
        assert "invalid_client, AADSTS7000215" in message
        assert "update mailboxes[1].client_secret" in message
        assert caught.value.mailbox == "Support"
        _secrets_absent(message, token_endpoint)
        _secrets_absent(debug_logs.text, token_endpoint)

    def test_an_unknown_tenant_names_the_key_to_check(self, token_endpoint: TokenEndpoint) -> None:
        """A tenant the discovery endpoint does not know is a permanent, explained failure."""
        provider = _microsoft(
            token_endpoint,
            client_secret=CLIENT_SECRET,
            tenant_id="no-such-tenant",
            authority=f"{token_endpoint.base_url}/no-such-tenant",
            key_path="mailboxes[2]",
        )
        with pytest.raises(AuthenticationError, match=r"check mailboxes\[2\]\.tenant_id"):
            provider.token()
        assert token_endpoint.token_requests() == []

    def test_an_unreachable_identity_provider_is_transient(self, tmp_path: Path) -> None:
        """A refused connection is TransientConnectorError: try again later, not an auth failure."""
        provider = MicrosoftTokenProvider(
            tenant_id="t",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            authority="https://127.0.0.1:9/t",
            timeout=2,
        )
        with pytest.raises(TransientConnectorError, match=r"could not reach Microsoft Entra ID"):
            provider.token()


class TestMicrosoftDelegated:
    def test_a_refresh_token_gives_a_token_that_is_cached_on_disk_with_mode_0600(
        self, token_endpoint: TokenEndpoint, tmp_path: Path
    ) -> None:
        """The refresh grant's tokens land in a 0600 cache file another process reuses."""
        token_endpoint.register_refresh_token(REFRESH_TOKEN, client_id=CLIENT_ID, user=USER)
        cache = tmp_path / "msal-cache.json"
        old_umask = os.umask(0)  # even a permissive umask must not widen the file
        try:
            first = _microsoft(token_endpoint, refresh_token=REFRESH_TOKEN, token_cache=cache)
            token = first.token()
        finally:
            os.umask(old_umask)
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
        assert token in cache.read_text()
        (request,) = token_endpoint.token_requests()
        assert request.grant_type == "refresh_token"
        assert request.form["refresh_token"] == REFRESH_TOKEN
        assert "https://outlook.office365.com/.default" in request.form["scope"].split()
        # A new provider (the next run of halomail) reads the cache: no request at all.
        again = _microsoft(token_endpoint, refresh_token=REFRESH_TOKEN, token_cache=cache)
        assert again.token() == token
        assert len(token_endpoint.token_requests()) == 1

    def test_the_rotated_refresh_token_from_the_cache_renews_an_expiring_token(
        self, token_endpoint: TokenEndpoint, tmp_path: Path
    ) -> None:
        """A token about to expire is renewed with the rotated refresh token msal cached."""
        token_endpoint.register_refresh_token(REFRESH_TOKEN, client_id=CLIENT_ID, user=USER)
        token_endpoint.expires_in = 120
        cache = tmp_path / "msal-cache.json"
        provider = _microsoft(token_endpoint, refresh_token=REFRESH_TOKEN, token_cache=cache)
        first = provider.token()
        token_endpoint.expires_in = 3600
        second = provider.token()
        assert second != first
        original, renewal = token_endpoint.token_requests("refresh_token")
        assert original.form["refresh_token"] == REFRESH_TOKEN
        assert renewal.form["refresh_token"] not in (REFRESH_TOKEN, "")
        assert renewal.form["refresh_token"].startswith("rt-")

    def test_a_revoked_refresh_token_tells_the_administrator_to_sign_in_again(
        self, token_endpoint: TokenEndpoint, tmp_path: Path, debug_logs: pytest.LogCaptureFixture
    ) -> None:
        """invalid_grant becomes AuthenticationError asking for a new sign-in, with no secret."""
        token_endpoint.register_refresh_token(REFRESH_TOKEN, client_id=CLIENT_ID, user=USER)
        token_endpoint.expires_in = 120
        cache = tmp_path / "msal-cache.json"
        provider = _microsoft(
            token_endpoint, refresh_token=REFRESH_TOKEN, token_cache=cache, key_path="mailboxes[0]"
        )
        provider.token()
        token_endpoint.revoke_user(USER)
        with pytest.raises(AuthenticationError) as caught:
            provider.token()
        message = str(caught.value)
        assert "Microsoft refused the refresh token (invalid_grant, AADSTS70008)" in message
        assert "revoked or has expired" in message
        assert "Sign the mailbox user in again and update mailboxes[0].refresh_token" in message
        rotated = [r.form["refresh_token"] for r in token_endpoint.token_requests()]
        _secrets_absent(message, token_endpoint, *rotated)
        _secrets_absent(debug_logs.text, token_endpoint, *rotated)

    def test_a_new_refresh_token_in_the_settings_recovers_after_a_revocation(
        self, token_endpoint: TokenEndpoint, tmp_path: Path
    ) -> None:
        """After a revocation, a new refresh token in the settings works despite the cache."""
        token_endpoint.register_refresh_token(REFRESH_TOKEN, client_id=CLIENT_ID, user=USER)
        token_endpoint.expires_in = 120
        cache = tmp_path / "msal-cache.json"
        _microsoft(token_endpoint, refresh_token=REFRESH_TOKEN, token_cache=cache).token()
        token_endpoint.revoke_user(USER)
        token_endpoint.register_refresh_token("rt-new-sign-in", client_id=CLIENT_ID, user="bob@x")
        renewed = _microsoft(token_endpoint, refresh_token="rt-new-sign-in", token_cache=cache)
        assert renewed.token() == token_endpoint.issued[-1]
        assert token_endpoint.token_requests()[-1].form["refresh_token"] == "rt-new-sign-in"

    def test_a_loosely_permitted_cache_file_is_tightened_to_0600(
        self, token_endpoint: TokenEndpoint, tmp_path: Path
    ) -> None:
        """A token cache copied with mode 0644 is set back to 0600 when it is read."""
        token_endpoint.register_refresh_token(REFRESH_TOKEN, client_id=CLIENT_ID, user=USER)
        cache = tmp_path / "msal-cache.json"
        cache.write_text("{}")
        cache.chmod(0o644)
        _microsoft(token_endpoint, refresh_token=REFRESH_TOKEN, token_cache=cache).token()
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600


class TestGoogle:
    @pytest.fixture
    def service_account_file(
        self, token_endpoint: TokenEndpoint, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
    ) -> Path:
        """A service-account key file whose token_uri is the local server."""
        public = rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        token_endpoint.register_service_account(SA_EMAIL, public)
        path = tmp_path / "service-account.json"
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "project",
                    "private_key_id": "0123456789abcdef",
                    "private_key": _pem_key(rsa_key).decode(),
                    "client_email": SA_EMAIL,
                    "client_id": "1234567890",
                    "token_uri": token_endpoint.google_token_uri,
                }
            )
        )
        return path

    def test_a_service_account_impersonates_the_subject_and_caches_the_token(
        self, token_endpoint: TokenEndpoint, service_account_file: Path
    ) -> None:
        """The jwt-bearer grant names the mailbox user as subject; the token is reused."""
        provider = GoogleTokenProvider(
            credentials_file=service_account_file, subject=USER, verify=str(token_endpoint.ca_file)
        )
        assert provider.token() == provider.token() == token_endpoint.issued[0]
        (request,) = token_endpoint.token_requests()
        assert request.grant_type == JWT_BEARER
        claims = jwt.decode(request.form["assertion"], options={"verify_signature": False})
        assert claims["sub"] == USER
        assert claims["iss"] == SA_EMAIL
        assert claims["scope"] == "https://mail.google.com/"

    def test_a_google_token_close_to_expiry_is_refreshed(
        self, token_endpoint: TokenEndpoint, service_account_file: Path
    ) -> None:
        """A token with under five minutes left is refreshed before it is handed out."""
        token_endpoint.expires_in = 200
        provider = GoogleTokenProvider(
            credentials_file=service_account_file, subject=USER, verify=str(token_endpoint.ca_file)
        )
        first = provider.token()
        token_endpoint.expires_in = 3600
        second = provider.token()
        assert second != first
        assert provider.token() == second
        assert len(token_endpoint.token_requests(JWT_BEARER)) == 2

    def test_a_refused_delegation_names_what_to_check(
        self,
        token_endpoint: TokenEndpoint,
        service_account_file: Path,
        debug_logs: pytest.LogCaptureFixture,
    ) -> None:
        """unauthorized_client for a service account points at domain-wide delegation."""
        token_endpoint.revoke_user(USER)
        provider = GoogleTokenProvider(
            credentials_file=service_account_file,
            subject=USER,
            verify=str(token_endpoint.ca_file),
            mailbox="Gmail",
            key_path="mailboxes[3]",
        )
        with pytest.raises(AuthenticationError) as caught:
            provider.token()
        message = str(caught.value)
        assert message.startswith("Gmail: Google refused the service account's token request")
        assert "(unauthorized_client)" in message
        assert "domain-wide delegation" in message
        assert f"mailboxes[3].subject ({USER})" in message
        assert "PRIVATE KEY" not in message + debug_logs.text

    def test_user_credentials_refresh_and_a_revoked_grant_says_sign_in_again(
        self, token_endpoint: TokenEndpoint, tmp_path: Path, debug_logs: pytest.LogCaptureFixture
    ) -> None:
        """An authorized-user file refreshes; once revoked, the error asks for a new sign-in."""
        token_endpoint.register_refresh_token(
            REFRESH_TOKEN,
            client_id=GOOGLE_CLIENT_ID,
            user=USER,
            provider="google",
            client_secret=GOOGLE_SECRET,
        )
        path = tmp_path / "authorized-user.json"
        path.write_text(
            json.dumps(
                {
                    "type": "authorized_user",
                    "client_id": GOOGLE_CLIENT_ID,
                    "client_secret": GOOGLE_SECRET,
                    "refresh_token": REFRESH_TOKEN,
                    "token_uri": token_endpoint.google_token_uri,
                }
            )
        )
        provider = GoogleTokenProvider(
            credentials_file=path, verify=str(token_endpoint.ca_file), key_path="mailboxes[0]"
        )
        token = provider.token()
        assert token == token_endpoint.issued[0]
        (request,) = token_endpoint.token_requests()
        assert request.grant_type == "refresh_token"
        assert request.form["refresh_token"] == REFRESH_TOKEN
        token_endpoint.revoke_user(USER)
        provider.invalidate()
        with pytest.raises(AuthenticationError) as caught:
            provider.token()
        message = str(caught.value)
        assert "Google refused the refresh token (invalid_grant)" in message
        assert "Sign the user in again and update mailboxes[0].refresh_token" in message
        _secrets_absent(message, token_endpoint)
        _secrets_absent(debug_logs.text, token_endpoint)

    def test_an_unreadable_credentials_file_is_an_authentication_error(
        self, tmp_path: Path
    ) -> None:
        """A missing key file fails that mailbox with the path and what to do."""
        provider = GoogleTokenProvider(credentials_file=tmp_path / "missing.json", subject=USER)
        with pytest.raises(AuthenticationError, match=r"missing\.json .*cannot be read"):
            provider.token()


class TestFromSettings:
    def test_password_auth_needs_no_provider(self) -> None:
        """A mailbox without OAuth2 settings gets no token provider."""
        assert token_provider_from_settings({}, "mailboxes[0]") is None
        assert token_provider_from_settings({"auth": "password"}, "mailboxes[0]") is None

    def test_each_auth_value_builds_its_provider(self, tmp_path: Path) -> None:
        """auth names the provider; the SASL names pick it from the keys present."""
        ms = token_provider_from_settings(
            {
                "auth": "oauth2-microsoft",
                "tenant_id": "contoso.example",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scopes": "https://graph.microsoft.com/.default",
            },
            "mailboxes[0]",
        )
        assert isinstance(ms, MicrosoftTokenProvider)
        assert ms.authority == "https://login.microsoftonline.com/contoso.example"
        assert ms.scopes == ["https://graph.microsoft.com/.default"]
        assert not ms.delegated
        google = token_provider_from_settings(
            {"auth": "xoauth2", "credentials_file": tmp_path / "sa.json", "subject": USER}, "m"
        )
        assert isinstance(google, GoogleTokenProvider)
        assert google.subject == USER
        assert google.scopes == ["https://mail.google.com/"]
        static = token_provider_from_settings({"auth": "oauthbearer", "token": "tok"}, "m")
        assert isinstance(static, StaticTokenProvider)
        assert static.token() == "tok"
        delegated = token_provider_from_settings(
            {
                "auth": "xoauth2",
                "tenant_id": "t",
                "client_id": CLIENT_ID,
                "refresh_token": REFRESH_TOKEN,
            },
            "m",
        )
        assert isinstance(delegated, MicrosoftTokenProvider)
        assert delegated.delegated
        assert REFRESH_TOKEN not in repr(delegated)

    @pytest.mark.parametrize(
        ("extra", "key", "text"),
        [
            (
                {"auth": "oauth2-microsoft", "client_id": "c", "client_secret": "s"},
                "tenant_id",
                "required",
            ),
            (
                {"auth": "oauth2-microsoft", "tenant_id": "t", "client_id": "c"},
                "client_secret",
                "needs",
            ),
            ({"auth": "oauth2-google"}, "credentials_file", "refresh_token"),
            ({"auth": "oauth2-static"}, "token", "required"),
            ({"auth": "xoauth2"}, "auth", "needs a token source"),
            ({"auth": "kerberos"}, "auth", "expected one of"),
            ({"auth": "oauth2-static", "token": "t", "scopes": 3}, "scopes", "list of scopes"),
        ],
    )
    def test_missing_or_wrong_keys_name_the_key(
        self, extra: dict[str, object], key: str, text: str
    ) -> None:
        """An incomplete OAuth2 mailbox is a ConfigError pointing at the key to fix."""
        with pytest.raises(ConfigError, match=text) as caught:
            token_provider_from_settings(extra, "mailboxes[4]")
        assert caught.value.key_path == f"mailboxes[4].{key}"
