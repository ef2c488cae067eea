"""Token validation, one test per reason a token is refused (after Authlib's RFC 9068 tests).

Every case goes through the proxy under gunicorn over HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from joserfc.jwk import RSAKey

from tests.conftest import user_path

PROTECTED_PATHS = ["/users", user_path("auth0|alice-acme")]


def assert_auth0_error(response, status: int, error_code: str) -> dict:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"statusCode", "error", "message", "errorCode"}
    assert body["statusCode"] == status
    assert body["errorCode"] == error_code
    return body


def assert_invalid_token(response) -> dict:
    body = assert_auth0_error(response, 401, "invalid_token")
    assert body["error"] == "Unauthorized"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    return body


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, sign=lambda signing_input: b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def parts(token: str) -> tuple[dict, dict]:
    header, claims, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    decode = lambda s: json.loads(base64.urlsafe_b64decode(pad(s)))  # noqa: E731
    return decode(header), decode(claims)


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_missing_token_is_401_with_bare_challenge(call, path):
    response = call(path)
    assert_auth0_error(response, 401, "invalid_token")
    # RFC 6750 section 3.1: no error code when the request carries no credentials.
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="auth0-m2m-proxy"'


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_valid_token_is_accepted_on_every_route(call, make_token, path):
    assert call(path, make_token()).status_code == 200


def test_rfc9068_profile_token_is_accepted(call, make_token):
    token = make_token(
        header={"typ": "at+jwt"},
        claims={"azp": None, "gty": None, "client_id": "edge-acme", "jti": "a-unique-id"},
    )
    assert call("/users", token).status_code == 200


def test_audience_list_containing_ours_is_accepted(call, make_token, tenant):
    token = make_token(
        claims={"aud": ["https://another-api.example.com", "https://m2m-proxy.example.com"]}
    )
    assert call("/users", token).status_code == 200


def test_permissions_claim_grants_scope(call, make_token):
    token = make_token(claims={"scope": None, "permissions": ["read:users"]})
    assert call("/users", token).status_code == 200


def test_expiry_within_leeway_is_accepted(call, make_token):
    now = int(time.time())
    assert call("/users", make_token(claims={"iat": now - 600, "exp": now - 5})).status_code == 200


def test_a_remembered_token_is_refused_once_it_expires(start_proxy, call, make_token):
    """A worker remembers the tokens it verified, but never past their expiry and its leeway."""
    proxy = start_proxy(workers=1, leeway_seconds=2)
    expires = int(time.time()) + 1
    token = make_token(claims={"exp": expires})
    assert [call("/users", token, server=proxy).status_code for _ in range(3)] == [200] * 3
    time.sleep(expires + 1 - time.time() + 0.05)  # expired, within the leeway
    assert call("/users", token, server=proxy).status_code == 200
    time.sleep(expires + 2 - time.time() + 0.05)  # past the leeway
    body = assert_invalid_token(call("/users", token, server=proxy))
    assert body["message"] == "The access token has expired."


def test_missing_scope_is_403_insufficient_scope(call, make_token):
    response = call("/users", make_token(scope="read:something-else"))
    assert_auth0_error(response, 403, "insufficient_scope")
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="read:users"' in challenge


def test_malformed_token(call):
    assert_invalid_token(call("/users", "not.a.jwt"))


def test_basic_scheme_is_refused(call):
    assert_invalid_token(call("/users", headers={"Authorization": "Basic ZWRnZTpzZWNyZXQ="}))


def test_expired_token(call, make_token):
    now = int(time.time())
    body = assert_invalid_token(
        call("/users", make_token(claims={"iat": now - 7200, "exp": now - 3600}))
    )
    assert body["message"] == "The access token has expired."


def test_token_without_exp(call, make_token):
    assert_invalid_token(call("/users", make_token(claims={"exp": None})))


def test_token_not_yet_valid(call, make_token):
    assert_invalid_token(call("/users", make_token(claims={"nbf": int(time.time()) + 3600})))


def test_token_issued_in_the_future(call, make_token):
    assert_invalid_token(call("/users", make_token(claims={"iat": int(time.time()) + 3600})))


def test_wrong_audience(call, make_token):
    body = assert_invalid_token(
        call("/users", make_token(claims={"aud": "https://other.example.com"}))
    )
    assert "audience" in body["message"]


def test_audience_list_without_ours(call, make_token):
    token = make_token(claims={"aud": ["https://other.example.com", "https://third.example.com"]})
    assert_invalid_token(call("/users", token))


def test_wrong_issuer(call, make_token):
    body = assert_invalid_token(
        call("/users", make_token(claims={"iss": "https://evil.example.com/"}))
    )
    assert "issuer" in body["message"]


def test_management_api_token_is_refused(call, tenant):
    token = tenant.issue_token("proxy-mgmt-client", tenant.management_audience)
    assert_invalid_token(call("/users", token))


def test_alg_none(call, make_token):
    header, claims = parts(make_token())
    assert_invalid_token(call("/users", forge({**header, "alg": "none"}, claims)))


def test_hs256_signed_with_the_public_key(call, make_token, tenant):
    header, claims = parts(make_token())
    public_pem = tenant.signing_key.as_pem(private=False)
    token = forge(
        {**header, "alg": "HS256"},
        claims,
        lambda signing_input: hmac.new(public_pem, signing_input, hashlib.sha256).digest(),
    )
    assert_invalid_token(call("/users", token))


def test_unknown_kid(call, make_token):
    body = assert_invalid_token(call("/users", make_token(header={"kid": "no-such-key"})))
    assert "key" in body["message"]


def test_other_key_with_a_published_kid(call, make_token, tenant):
    impostor = RSAKey.generate_key(2048, parameters={"kid": tenant.signing_key.kid})
    assert_invalid_token(call("/users", make_token(key=impostor)))


def test_user_token_for_the_same_api_is_refused(call, make_token):
    token = make_token(claims={"sub": "auth0|alice-acme", "gty": None})
    assert_invalid_token(call("/users", token))


def test_client_taken_from_subject_when_azp_is_absent(call, make_token):
    assert call("/users", make_token(claims={"azp": None})).status_code == 200


def test_azp_that_disagrees_with_the_subject_is_refused(call, make_token):
    assert_invalid_token(call("/users", make_token(claims={"azp": "edge-globex"})))


def test_token_without_any_client_is_refused(call, make_token):
    assert_invalid_token(call("/users", make_token(claims={"azp": None, "sub": "@clients"})))


def test_id_token_type_is_refused(call, make_token):
    assert_invalid_token(call("/users", make_token(header={"typ": "dpop+jwt"})))


def test_tampered_payload(call, make_token):
    header, signature = make_token().split(".")[0], make_token().split(".")[2]
    _, claims = parts(make_token())
    claims["org_id"] = "org_globex"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert_invalid_token(call("/users", forged))
