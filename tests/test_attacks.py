"""Attacks on the token and its header (RFC 8725, RFC 6750), each refused for its own reason.

The proxy runs in this process; attacks on the HTTP request itself, which gunicorn sees first,
are in test_server.py.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings

import pytest
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from joserfc import jws
from joserfc.jwk import RSAKey

from tests.support import JWKS, assert_invalid_token, assert_refused, b64, forge, parts

ATTACKER_KEY = RSAKey.generate_key(2048, parameters={"kid": "attacker"})
with warnings.catch_warnings():  # small enough to embed as a jwk within joserfc's header limit
    warnings.simplefilter("ignore")
    SMALL_ATTACKER_KEY = RSAKey.generate_key(1024, parameters={"kid": "attacker"})
INTENDED_ENDPOINTS = {
    "POST /oauth/token",
    "GET /.well-known/jwks.json",
    "GET /api/v2/organizations/{id}/members",
    "GET /api/v2/users/{id}",
    "GET /api/v2/users/{id}/organizations",
}
UNSUPPORTED_ALGORITHM = "malformed token (unsupported_algorithm)"


@pytest.fixture(autouse=True)
def upstream_sees_only_the_intended_endpoints(tenant):
    """After every attack: Auth0 was reached only through the endpoints the proxy means to use."""
    yield
    assert {record["endpoint"] for record in tenant.requests} <= INTENDED_ENDPOINTS


def signed_as_the_tenant(tenant, header: dict, claims: dict) -> str:
    """RS256 with the tenant's real key over any header, even one joserfc would refuse to make."""
    private_key = tenant.signing_key.private_key
    return forge(header, claims, lambda data: private_key.sign(data, PKCS1v15(), SHA256()))


@pytest.mark.parametrize(
    ("alg", "digest"),
    [("HS256", hashlib.sha256), ("HS384", hashlib.sha384), ("HS512", hashlib.sha512)],
)
def test_hmac_signed_with_the_public_key_is_refused(call, make_token, tenant, alg, digest):
    header, claims = parts(make_token())
    public_pem = tenant.signing_key.as_pem(private=False)
    token = forge(
        {**header, "alg": alg}, claims, lambda data: hmac.new(public_pem, data, digest).digest()
    )
    assert_invalid_token(call("/users", token), UNSUPPORTED_ALGORITHM)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "RS512", "PS256", "ES256"])
def test_other_algorithms_are_refused(call, make_token, alg):
    header, claims = parts(make_token())
    token = forge({**header, "alg": alg}, claims, lambda data: b"signature")
    assert_invalid_token(call("/users", token), UNSUPPORTED_ALGORITHM)


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "PS384", "PS512"])
def test_tokens_really_signed_with_the_tenants_key_under_another_algorithm_are_refused(
    call, make_token, tenant, alg
):
    """Only the allow-list (RS256) refuses these: the signature is the tenant's own and the
    published key names no algorithm a verifier could lean on."""
    tenant.jwks_names_algorithm = False
    assert_invalid_token(call("/users", make_token(header={"alg": alg})), UNSUPPORTED_ALGORITHM)
    assert call("/users", make_token()).status_code == 200


@pytest.mark.parametrize(
    "embedded",
    [
        {"jwk": SMALL_ATTACKER_KEY.as_dict(private=False)},
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]},
    ],
)
@pytest.mark.parametrize(
    ("kid", "reason"), [("attacker", "unknown signing key"), ("published", "bad signature")]
)
def test_keys_named_in_the_token_are_ignored(call, make_token, tenant, embedded, kid, reason):
    kid = tenant.signing_key.kid if kid == "published" else kid
    key = SMALL_ATTACKER_KEY if "jwk" in embedded else ATTACKER_KEY
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = make_token(header={**embedded, "kid": kid}, key=key)
    assert_invalid_token(call("/users", token), reason)


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        ("../../../../etc/passwd", "unknown signing key"),
        ("' OR '1'='1", "unknown signing key"),
        ("x\u0000y", "unknown signing key"),
        ("k" * 5000, "malformed token (exceeded_size)"),
        ("", "unknown signing key"),
        (None, "malformed token (invalid_header_value)"),
        (123, "malformed token (invalid_header_value)"),
        (["a"], "malformed token (invalid_header_value)"),
        ({"a": 1}, "malformed token (invalid_header_value)"),
    ],
)
def test_hostile_key_ids_are_refused(call, make_token, tenant, kid, reason):
    header, claims = parts(make_token())
    token = signed_as_the_tenant(tenant, {**header, "kid": kid}, claims)
    assert_invalid_token(call("/users", token), reason)


def test_many_unknown_key_ids_fetch_the_jwks_at_most_once(call, make_token, tenant):
    for n in range(30):
        token = make_token(header={"kid": f"random-{n}"})
        assert_invalid_token(call("/users", token), "unknown signing key")
    # The first fetch, and one refetch for the interval (10 s) in which all 30 arrive.
    assert tenant.counts[JWKS] <= 2


def test_huge_token_header_is_refused(call, make_token, tenant):
    header, claims = parts(make_token())
    token = signed_as_the_tenant(tenant, {**header, "padding": "x" * 4000}, claims)
    assert_invalid_token(call("/users", token), "malformed token (exceeded_size)")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "malformed token (invalid_payload)"),
        (b"[1, 2, 3]", "malformed token (invalid_payload)"),
        (b'"a string"', "malformed token (invalid_payload)"),
        (b"\xff\xfe", "malformed token (invalid_payload)"),
    ],
)
def test_payload_that_is_not_a_json_object_is_refused(call, make_token, tenant, payload, reason):
    header, _ = parts(make_token())
    # Properly signed by the tenant's key: only the payload is wrong.
    token = jws.serialize_compact(header, payload, tenant.signing_key, algorithms=["RS256"])
    assert_invalid_token(call("/users", token), reason)


def test_encrypted_token_jwe_is_refused(call):
    jwe = ".".join(
        b64(part) for part in [b'{"alg":"RSA-OAEP","enc":"A256GCM"}', b"k", b"iv", b"ct", b"tag"]
    )
    assert_invalid_token(call("/users", jwe), "malformed token (decode_error)")


@pytest.mark.parametrize(
    ("crit", "reason"),
    [
        (["exp"], "malformed token (unsupported_header)"),  # joserfc: not a header it knows
        (["urn:example:unknown"], "malformed token (unsupported_header)"),
        (["b64"], "crit header"),  # one joserfc knows: refused by the proxy's own rule
    ],
)
def test_critical_header_parameters_are_refused(call, make_token, tenant, crit, reason):
    header, claims = parts(make_token())
    token = signed_as_the_tenant(tenant, {**header, "crit": crit, crit[0]: True}, claims)
    assert_invalid_token(call("/users", token), reason)


@pytest.mark.parametrize(
    "gty",
    [
        "password",
        "authorization_code",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ],
)
def test_tokens_of_other_grants_are_refused(call, make_token, gty):
    token = make_token(claims={"gty": gty})
    assert_invalid_token(call("/users", token), f"grant type {gty!r}")


@pytest.mark.parametrize("typ", ["at+JWT", "application/at+jwt", "jwt"])
def test_access_token_types_in_any_case_are_accepted(call, make_token, typ):
    assert call("/users", make_token(header={"typ": typ})).status_code == 200


def test_user_tokens_are_accepted_only_when_configured(make_app, call, make_token):
    user_token = make_token(claims={"sub": "auth0|alice-acme", "gty": None})
    assert_invalid_token(call("/users", user_token), "subject is not the client")
    accepting = make_app(accept_user_tokens=True)
    assert call("/users", user_token, via=accepting).status_code == 200


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer {token} {token}", "malformed token (decode_error)"),
        ("Bearer {token},Bearer {token}", "malformed token (decode_error)"),
        ("Bearer", "unsupported_token_type"),
        ("Bearer ", "unsupported_token_type"),
        ("Token {token}", "unsupported_token_type"),
        ("{token}", "unsupported_token_type"),
    ],
)
def test_malformed_authorization_headers_are_401(call, make_token, authorization, reason):
    answer = call("/users", headers={"Authorization": authorization.format(token=make_token())})
    assert_invalid_token(answer, reason)


@pytest.mark.parametrize("with_header", [True, False])
def test_token_in_the_query_string_is_refused(call, make_token, with_header):
    token = make_token()
    answer = call(f"/users?access_token={token}", token if with_header else None)
    body = assert_refused(answer, 400, "invalid_request", "access_token in the query string")
    assert "Authorization header" in body["message"]
    assert 'error="invalid_request"' in answer.headers["WWW-Authenticate"]
