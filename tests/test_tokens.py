"""Token validation, one test per reason a token is refused (after Authlib's RFC 9068 tests).

Each refusal is checked for its reason, not only its status: a token refused for the wrong
reason (say ``alg: none`` refused as "unknown key") fails the test.
"""

from __future__ import annotations

import json
import time

import pytest
from joserfc.jwk import RSAKey

from tests.support import (
    assert_auth0_error,
    assert_invalid_token,
    assert_refused,
    b64,
    parts,
    user_path,
)

PROTECTED_PATHS = ["/users", user_path("auth0|alice-acme")]


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_missing_token_is_401_with_bare_challenge(call, path):
    answer = call(path)
    assert_refused(answer, 401, "invalid_token", "no Authorization header")
    # RFC 6750 section 3.1: no error code when the request carries no credentials.
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="auth0-m2m-proxy"'


@pytest.mark.parametrize("path", PROTECTED_PATHS)
def test_valid_token_is_accepted_on_every_route(call, make_token, path):
    assert call(path, make_token()).status_code == 200


def test_rfc9068_profile_token_is_accepted(call, make_token):
    token = make_token(
        header={"typ": "at+jwt"},
        claims={"azp": None, "gty": None, "client_id": "edge-acme", "jti": "a-unique-id"},
    )
    assert call("/users", token).status_code == 200


def test_audience_list_containing_ours_is_accepted(call, make_token):
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


def test_a_remembered_token_is_refused_once_it_expires(make_app, call, make_token, clock):
    """The proxy remembers the tokens it verified, but never past their expiry and leeway."""
    app = make_app(leeway_seconds=2)
    expires = int(clock.now()) + 1
    token = make_token(claims={"exp": expires})
    assert [call("/users", token, via=app).status_code for _ in range(3)] == [200] * 3
    clock.advance(expires + 1 - clock.now() + 0.05)  # expired, within the leeway
    assert call("/users", token, via=app).status_code == 200
    clock.advance(expires + 2 - clock.now() + 0.05)  # past the leeway
    body = assert_invalid_token(call("/users", token, via=app), "expired")
    assert body["message"] == "The access token has expired."


def test_missing_scope_is_403_insufficient_scope(call, make_token):
    answer = call("/users", make_token(scope="read:something-else"))
    assert_refused(answer, 403, "insufficient_scope", "insufficient scope")
    challenge = answer.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="read:users"' in challenge


def test_malformed_token(call):
    assert_invalid_token(call("/users", "not.a.jwt"), "malformed token (decode_error)")


def test_basic_scheme_is_refused(call):
    answer = call("/users", headers={"Authorization": "Basic ZWRnZTpzZWNyZXQ="})
    assert_invalid_token(answer, "unsupported_token_type")


def test_expired_token(call, make_token):
    now = int(time.time())
    body = assert_invalid_token(
        call("/users", make_token(claims={"iat": now - 7200, "exp": now - 3600})), "expired"
    )
    assert body["message"] == "The access token has expired."


def test_token_without_exp(call, make_token):
    assert_invalid_token(call("/users", make_token(claims={"exp": None})), "missing claim exp")


def test_token_not_yet_valid(call, make_token):
    token = make_token(claims={"nbf": int(time.time()) + 3600})
    assert_invalid_token(call("/users", token), "invalid claim nbf")


def test_token_issued_in_the_future(call, make_token):
    token = make_token(claims={"iat": int(time.time()) + 3600})
    assert_invalid_token(call("/users", token), "invalid claim iat")


def test_wrong_audience(call, make_token):
    token = make_token(claims={"aud": "https://other.example.com"})
    body = assert_invalid_token(call("/users", token), "invalid claim aud")
    assert "audience" in body["message"]


def test_audience_list_without_ours(call, make_token):
    token = make_token(claims={"aud": ["https://other.example.com", "https://third.example.com"]})
    assert_invalid_token(call("/users", token), "invalid claim aud")


def test_wrong_issuer(call, make_token):
    token = make_token(claims={"iss": "https://evil.example.com/"})
    body = assert_invalid_token(call("/users", token), "invalid claim iss")
    assert "issuer" in body["message"]


def test_management_api_token_is_refused(call, tenant):
    token = tenant.issue_token("proxy-mgmt-client", tenant.management_audience)
    assert_invalid_token(call("/users", token), "invalid claim aud")


def test_unknown_kid(call, make_token):
    answer = call("/users", make_token(header={"kid": "no-such-key"}))
    body = assert_invalid_token(answer, "unknown signing key")
    assert "key" in body["message"]


def test_other_key_with_a_published_kid(call, make_token, tenant):
    impostor = RSAKey.generate_key(2048, parameters={"kid": tenant.signing_key.kid})
    assert_invalid_token(call("/users", make_token(key=impostor)), "bad signature")


def test_user_token_for_the_same_api_is_refused(call, make_token):
    token = make_token(claims={"sub": "auth0|alice-acme", "gty": None})
    assert_invalid_token(call("/users", token), "subject is not the client")


def test_client_taken_from_subject_when_azp_is_absent(call, make_token):
    assert call("/users", make_token(claims={"azp": None})).status_code == 200


def test_azp_that_disagrees_with_the_subject_is_refused(call, make_token):
    token = make_token(claims={"azp": "edge-globex"})
    assert_invalid_token(call("/users", token), "subject is not the client")


def test_token_without_any_client_is_refused(call, make_token):
    token = make_token(claims={"azp": None, "sub": "@clients"})
    assert_invalid_token(call("/users", token), "no client id")


def test_id_token_type_is_refused(call, make_token):
    token = make_token(header={"typ": "dpop+jwt"})
    assert_invalid_token(call("/users", token), "token type 'dpop+jwt'")


def test_tampered_payload(call, make_token):
    header, signature = make_token().split(".")[0], make_token().split(".")[2]
    _, claims = parts(make_token())
    claims["org_id"] = "org_globex"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert_invalid_token(call("/users", forged), "bad signature")


def test_unmapped_client_is_403_and_logged_with_its_client_id(call, make_token):
    answer = call("/users", make_token("edge-unmapped"))
    assert_refused(answer, 403, "access_denied", "client is not in the clients map")
    assert answer.log["client_id"] == "edge-unmapped" and answer.log["org_id"] is None


def test_refusals_name_no_reason_to_the_caller(call, make_token):
    """The reason is for the log line alone: the body says only what the caller may know."""
    answer = call("/users", make_token(header={"kid": "no-such-key"}))
    assert answer.log["reason"] not in answer.text
    assert_auth0_error(answer, 401, "invalid_token")
