"""The shared OAuth2 SASL piece: payload bytes as published, and exactly one token retry."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from halomail.backends.auth.sasl import (
    MalformedTokenError,
    login_with_token,
    oauthbearer_payload,
    read_token,
    sasl_payload,
    xoauth2_payload,
)

# Google's XOAUTH2 documentation (developers.google.com/gmail/imap/xoauth2-protocol).
GOOGLE_XOAUTH2 = (
    "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJo"
    "ZG1semRHRXVZMjl0Q2cBAQ=="
)
# RFC 7628 §4.1, the OAUTHBEARER initial client response.
RFC7628_OAUTHBEARER = (
    "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZG"
    "OWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
)


class _Provider:
    """A token provider handing out the tokens it was given, in order."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.invalidations = 0

    def token(self) -> str:
        return self.tokens[0]

    def invalidate(self) -> None:
        self.invalidations += 1
        if len(self.tokens) > 1:
            self.tokens.pop(0)


def _refusing(tried: list[str]) -> Callable[[str], str]:
    """An attempt that records the token it was given and answers NO."""

    def attempt(token: str) -> str:
        tried.append(token)
        return "NO"

    return attempt


class TestPayloads:
    def test_xoauth2_matches_googles_published_example(self) -> None:
        """xoauth2_payload gives, base64-encoded, the exact string of Google's documentation."""
        payload = xoauth2_payload(
            "someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
        )
        assert base64.b64encode(payload).decode() == GOOGLE_XOAUTH2

    def test_oauthbearer_matches_the_rfc_7628_example(self) -> None:
        """oauthbearer_payload gives, base64-encoded, the initial response of RFC 7628 §4.1."""
        token = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
        payload = oauthbearer_payload("user@example.com", token, "server.example.com", 143)
        assert base64.b64encode(payload).decode() == RFC7628_OAUTHBEARER

    def test_oauthbearer_escapes_comma_and_equals_in_the_user(self) -> None:
        """A ',' or '=' in the login is sent as =2C / =3D (RFC 5801), not as a separator."""
        payload = oauthbearer_payload("a,b=c", "t", "h", 1)
        assert payload.startswith(b"n,a=a=2Cb=3Dc,\x01")

    def test_sasl_payload_picks_the_mechanism_and_refuses_others(self) -> None:
        """XOAUTH2 and OAUTHBEARER are built by name; PLAIN carries no token and is refused."""
        assert sasl_payload("XOAUTH2", "u", "t", "h", 1) == xoauth2_payload("u", "t")
        assert sasl_payload("OAUTHBEARER", "u", "t", "h", 1) == oauthbearer_payload(
            "u", "t", "h", 1
        )
        with pytest.raises(ValueError, match="PLAIN"):
            sasl_payload("PLAIN", "u", "t", "h", 1)


class TestTokens:
    @pytest.mark.parametrize("token", ["", "abc\r\nA1 LOGOUT", "abc\x01def"])
    def test_an_empty_or_line_breaking_token_is_refused(self, token: str) -> None:
        """A token that would end the SASL line early never reaches the server."""
        with pytest.raises(MalformedTokenError):
            read_token(lambda: token)

    def test_a_refused_token_is_renewed_and_retried_exactly_once(self) -> None:
        """Two refusals: one invalidate(), two attempts (old token, then fresh), no third."""
        provider = _Provider("old", "fresh", "third")
        tried: list[str] = []
        answer, token = login_with_token(provider, _refusing(tried), lambda a: a == "NO")
        assert tried == ["old", "fresh"]
        assert provider.invalidations == 1
        assert (answer, token) == ("NO", "fresh")

    def test_an_accepted_or_try_later_answer_is_not_retried(self) -> None:
        """When retry() says no (success, or a 'try later'), the provider is left alone."""
        provider = _Provider("old", "fresh")
        answer, token = login_with_token(provider, lambda t: f"OK {t}", lambda a: False)
        assert (answer, token, provider.invalidations) == ("OK old", "old", 0)

    def test_the_same_token_again_is_not_retried(self) -> None:
        """A provider that hands out the refused token again gets no second attempt."""
        provider = _Provider("same")
        tried: list[str] = []
        login_with_token(provider, _refusing(tried), lambda a: True)
        assert tried == ["same"]
        assert provider.invalidations == 1
