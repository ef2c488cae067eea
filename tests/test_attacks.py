"""Attacks on the token and on the HTTP request (RFC 8725, RFC 6750), each refused in JSON.

Every case goes through gunicorn over HTTP; none may be answered 200 or 500.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from joserfc import jws
from joserfc.jwk import RSAKey

from tests.conftest import user_path
from tests.test_tokens import assert_auth0_error, assert_invalid_token, b64, forge, parts

ATTACKER_KEY = RSAKey.generate_key(2048, parameters={"kid": "attacker"})
INTENDED_ENDPOINTS = {
    "POST /oauth/token",
    "GET /.well-known/jwks.json",
    "GET /api/v2/organizations/{id}/members",
    "GET /api/v2/users/{id}",
    "GET /api/v2/users/{id}/organizations",
}


@pytest.fixture(autouse=True)
def upstream_sees_only_the_intended_endpoints(tenant_server):
    """After every attack: Auth0 was reached only through the endpoints the proxy means to use."""
    yield
    assert {record["endpoint"] for record in tenant_server.tenant.requests} <= INTENDED_ENDPOINTS


def signed_as_the_tenant(tenant, header: dict, claims: dict) -> str:
    """RS256 with the tenant's real key over any header, even one joserfc would refuse to make."""
    private_key = tenant.signing_key.private_key
    return forge(header, claims, lambda data: private_key.sign(data, PKCS1v15(), SHA256()))


def raw_request(proxy, request: bytes) -> tuple[int, dict, bytes]:
    """Send bytes as they are (no client library normalizes them); return status, headers, body."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


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
    assert_invalid_token(call("/users", token))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "RS512", "PS256", "ES256"])
def test_other_algorithms_are_refused(call, make_token, alg):
    header, claims = parts(make_token())
    token = forge({**header, "alg": alg}, claims, lambda data: b"signature")
    assert_invalid_token(call("/users", token))


@pytest.mark.parametrize(
    "embedded",
    [
        {"jwk": ATTACKER_KEY.as_dict(private=False)},
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]},
    ],
)
@pytest.mark.parametrize("kid", ["attacker", "published"])
def test_keys_named_in_the_token_are_ignored(call, make_token, tenant, embedded, kid):
    kid = tenant.signing_key.kid if kid == "published" else kid
    token = make_token(header={**embedded, "kid": kid}, key=ATTACKER_KEY)
    assert_invalid_token(call("/users", token))


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../etc/passwd",
        "' OR '1'='1",
        "x\u0000y",
        "k" * 5000,
        123,
        None,
        ["a"],
        {"a": 1},
        "",
    ],
)
def test_hostile_key_ids_are_refused(call, make_token, tenant, kid):
    header, claims = parts(make_token())
    assert_invalid_token(
        call("/users", signed_as_the_tenant(tenant, {**header, "kid": kid}, claims))
    )


def test_many_unknown_key_ids_fetch_the_jwks_at_most_once(call, make_token, tenant):
    for n in range(30):
        assert call("/users", make_token(header={"kid": f"random-{n}"})).status_code == 401
    # The session proxy may refetch once a second; 30 requests take well over that, so allow a few.
    assert tenant.counts["GET /.well-known/jwks.json"] <= 5


def test_huge_token_header_is_refused(call, make_token, tenant):
    header, claims = parts(make_token())
    token = signed_as_the_tenant(tenant, {**header, "padding": "x" * 4000}, claims)
    assert_invalid_token(call("/users", token))


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2, 3]", b'"a string"', b"\xff\xfe"])
def test_payload_that_is_not_a_json_object_is_refused(call, make_token, tenant, payload):
    header, _ = parts(make_token())
    # Properly signed by the tenant's key: only the payload is wrong.
    token = jws.serialize_compact(header, payload, tenant.signing_key, algorithms=["RS256"])
    assert_invalid_token(call("/users", token))


def test_encrypted_token_jwe_is_refused(call):
    jwe = ".".join(
        b64(part) for part in [b'{"alg":"RSA-OAEP","enc":"A256GCM"}', b"k", b"iv", b"ct", b"tag"]
    )
    assert_invalid_token(call("/users", jwe))


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["urn:example:unknown"]])
def test_critical_header_parameters_are_refused(call, make_token, tenant, crit):
    header, claims = parts(make_token())
    token = signed_as_the_tenant(tenant, {**header, "crit": crit, crit[0]: True}, claims)
    assert_invalid_token(call("/users", token))


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
    assert_invalid_token(call("/users", make_token(claims={"gty": gty})))


@pytest.mark.parametrize("typ", ["at+JWT", "application/at+jwt", "jwt"])
def test_access_token_types_in_any_case_are_accepted(call, make_token, typ):
    assert call("/users", make_token(header={"typ": typ})).status_code == 200


def test_user_tokens_are_accepted_only_when_configured(start_proxy, call, make_token):
    user_token = make_token(claims={"sub": "auth0|alice-acme", "gty": None})
    assert_invalid_token(call("/users", user_token))
    proxy = start_proxy(workers=1, accept_user_tokens=True)
    assert call("/users", user_token, server=proxy).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    ["bearer {token}", "BEARER {token}", "Bearer   {token}", "Bearer {token}  "],
)
def test_bearer_scheme_is_case_insensitive_and_spaces_are_tolerated(
    proxy, make_token, authorization
):
    header = authorization.format(token=make_token()).encode()
    status, _, _ = raw_request(
        proxy, b"GET /users HTTP/1.1\r\nHost: x\r\nAuthorization: " + header + b"\r\n\r\n"
    )
    assert status == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer {token} {token}",
        "Bearer {token},Bearer {token}",
        "Bearer",
        "Bearer ",
        "Token {token}",
        "{token}",
    ],
)
def test_malformed_authorization_headers_are_401(call, make_token, authorization):
    response = call("/users", headers={"Authorization": authorization.format(token=make_token())})
    assert_invalid_token(response)


def test_two_authorization_headers_are_refused(proxy, make_token):
    header = f"Authorization: Bearer {make_token()}\r\n".encode()
    status, _, body = raw_request(
        proxy, b"GET /users HTTP/1.1\r\nHost: x\r\n" + header * 2 + b"\r\n"
    )
    # gunicorn joins repeated headers into "Bearer <t>, Bearer <t>": not one token, so 401.
    assert status == 401
    assert json.loads(body)["errorCode"] == "invalid_token"


@pytest.mark.parametrize("with_header", [True, False])
def test_token_in_the_query_string_is_refused(call, make_token, with_header):
    token = make_token()
    response = call(f"/users?access_token={token}", token if with_header else None)
    body = assert_auth0_error(response, 400, "invalid_request")
    assert "Authorization header" in body["message"]
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


def test_body_over_one_mebibyte_is_413(proxy, make_token):
    response = requests.get(
        f"{proxy.url}/users",
        headers={"Authorization": f"Bearer {make_token()}"},
        data=b"x" * (1024 * 1024 + 1),
        timeout=30,
    )
    assert_auth0_error(response, 413, "request_entity_too_large")


def test_chunked_body_is_refused_without_reading_it(proxy, make_token):
    response = requests.get(
        f"{proxy.url}/users",
        headers={"Authorization": f"Bearer {make_token()}"},
        data=(b"x" * 65536 for _ in range(20)),
        timeout=30,
    )
    assert_auth0_error(response, 411, "length_required")


def test_stalled_chunked_bodies_do_not_hold_the_worker(start_proxy, call, make_token):
    proxy = start_proxy(workers=1, threads=2)
    header = (
        f"GET /users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {make_token()}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    stalled = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(2)]
    try:
        for sock in stalled:
            sock.sendall(header)  # and then never a chunk
        # The proxy answers 411 without reading; gunicorn's drain of the unread body gives up
        # after 5 s, so both threads are free again (reading the body would block for ever).
        assert call("/healthz", server=proxy).status_code == 200
        assert call("/users", make_token(), server=proxy).status_code == 200
    finally:
        for sock in stalled:
            sock.close()


def test_request_line_too_long_is_414_in_json(proxy, tenant):
    request = f"GET {user_path('a' * 10_000)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    status, headers, body = raw_request(proxy, request)
    assert status == 414 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "statusCode": 414,
        "error": "Request URI Too Long",
        "message": "The request line is too long.",
        "errorCode": "uri_too_long",
    }
    assert tenant.requests == []


def test_header_too_large_is_431_in_json(proxy):
    status, headers, body = raw_request(
        proxy,
        b"GET /users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 10_000 + b"\r\n\r\n",
    )
    assert status == 431 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["statusCode"] == 431


@pytest.mark.parametrize(
    "line",
    [
        "GET /users?access_token={token}",
        "GET /users?access%5Ftoken={token}",
        "GET /users/{dotted}",  # the token with its dots percent-encoded
        "GET /users/x Bearer {token}",
    ],
)
def test_invalid_http_is_400_in_json_and_its_token_is_not_logged(proxy, make_token, line):
    token = make_token()
    request_line = line.format(token=token, dotted=token.replace(".", "%2E"))
    # No HTTP version: gunicorn refuses the line and quotes it in its log.
    status, headers, body = raw_request(proxy, f"{request_line}\r\n\r\n".encode())
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["statusCode"] == 400 and token.encode() not in body
    log = proxy.log_text()
    assert "Invalid HTTP request line: 'GET /users" in log and "[redacted]" in log
    for part in token.split(".")[1:]:
        assert part not in log
