"""The proxy under gunicorn, as deployed: what only the server sees of a request.

Raw bytes on a socket (no client library normalizes them): the request line and header limits
gunicorn enforces before the app, repeated and oddly spaced headers, request bodies, and the log
lines gunicorn writes about them. Every refusal is JSON and says why.
"""

from __future__ import annotations

import json
import socket

import pytest
import requests

from tests.support import assert_invalid_token, assert_refused, user_path


def raw_request(proxy, request: bytes) -> tuple[int, dict, bytes]:
    """Send bytes as they are; return status, headers and body."""
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


def test_two_authorization_headers_are_refused(proxy, make_token):
    header = f"Authorization: Bearer {make_token()}\r\n".encode()
    request_id = b"X-Request-ID: two-authorization-headers\r\n"
    status, _, body = raw_request(
        proxy, b"GET /users HTTP/1.1\r\nHost: x\r\n" + request_id + header * 2 + b"\r\n"
    )
    # gunicorn joins repeated headers into "Bearer <t>, Bearer <t>": not one token, so 401.
    assert status == 401
    assert json.loads(body)["errorCode"] == "invalid_token"
    [line] = [
        r for r in proxy.log_records() if r.get("caller_request_id") == "two-authorization-headers"
    ]
    assert line["reason"] == "malformed token (decode_error)"


def test_body_over_one_mebibyte_is_413(proxy, make_token):
    response = requests.get(
        f"{proxy.url}/users",
        headers={"Authorization": f"Bearer {make_token()}", "X-Request-ID": "big-body"},
        data=b"x" * (1024 * 1024 + 1),
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["errorCode"] == "request_entity_too_large"
    [line] = [r for r in proxy.log_records() if r.get("caller_request_id") == "big-body"]
    assert "exceeds the capacity limit" in line["reason"]


def test_chunked_body_is_refused_without_reading_it(proxy, make_token):
    response = requests.get(
        f"{proxy.url}/users",
        headers={"Authorization": f"Bearer {make_token()}", "X-Request-ID": "chunked-body"},
        data=(b"x" * 65536 for _ in range(20)),
        timeout=30,
    )
    assert response.status_code == 411
    assert response.json()["errorCode"] == "length_required"
    [line] = [r for r in proxy.log_records() if r.get("caller_request_id") == "chunked-body"]
    assert line["reason"] == "Send the request body with Content-Length."


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
        assert call("/healthz", via=proxy).status_code == 200
        assert call("/users", make_token(), via=proxy).status_code == 200
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "error", "error_code", "message"),
    [
        (
            f"GET {user_path('a' * 10_000)} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            414,
            "Request URI Too Long",
            "uri_too_long",
            "The request line is too long.",
        ),
        (
            b"GET /users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + b"a" * 10_000
            + b"\r\n\r\n",
            431,
            "Request Header Fields Too Large",
            "request_header_fields_too_large",
            "The request's header fields are too large.",
        ),
    ],
)
def test_gunicorns_limits_are_answered_in_json(
    proxy, tenant, request_bytes, status, error, error_code, message
):
    answered, headers, body = raw_request(proxy, request_bytes)
    assert answered == status and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "statusCode": status,
        "error": error,
        "message": message,
        "errorCode": error_code,
    }
    assert tenant.requests == []


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
    assert json.loads(body) == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "The request is not valid HTTP.",
        "errorCode": "bad_request",
    }
    log = proxy.log_text()
    assert "Invalid HTTP request line: 'GET /users" in log and "[redacted]" in log
    for part in token.split(".")[1:]:
        assert part not in log


def test_token_in_a_path_is_refused_and_not_logged(proxy, call, make_token):
    token = make_token()
    answer = call(user_path(token), token, via=proxy)
    assert_refused(
        answer, 404, "inexistent_user", "user is not a member of the caller's organization"
    )
    assert token.split(".")[1] not in proxy.log_text()


def test_refusals_through_gunicorn_say_why_in_the_log(proxy, call, make_token):
    assert_invalid_token(
        call("/users", make_token(claims={"exp": None}), via=proxy), "missing claim exp"
    )
