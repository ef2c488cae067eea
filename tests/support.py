"""What the tests share besides fixtures: the proxy's config for the tests' tenant, one answer
type for both ways of calling the proxy, token forgery, and the assertions every refusal uses."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
import redis
import requests

from emulated_tenant import TenantServer
from emulated_tenant.demo import UNBOUNDED_BUDGET, UNLIMITED_RATES, proxy_config
from scripts.proxy_server import free_port

# Endpoints of the emulated tenant, as it counts them.
MEMBERS = "GET /api/v2/organizations/{id}/members"
USER = "GET /api/v2/users/{id}"
USER_ORGS = "GET /api/v2/users/{id}/organizations"
USERS_SEARCH = "GET /api/v2/users"
TOKEN = "POST /oauth/token"
JWKS = "GET /.well-known/jwks.json"

BIG_ORG = "org_big"
BIG_ORG_SIZE = 2500
MEMBER_FIELDS = {"user_id", "email", "name", "picture"}
ERROR_KEYS = {"statusCode", "error", "message", "errorCode"}

# Which organizations each edge client may reach, in the proxy config used by the tests.
CLIENT_ORGS = {
    "edge-acme": ["org_acme"],
    "edge-globex": ["org_globex"],
    "edge-big": [BIG_ORG],
    "edge-reseller": ["org_acme", "org_globex"],
    "edge-unmapped": ["org_acme"],  # a real client of the tenant, absent from the proxy config
}


def proxy_config_for(
    tenant_server: TenantServer,
    *,
    budget: dict | None = None,
    rate_limits: dict | None = None,
    **proxy_settings,
) -> dict:
    """The proxy's config.json for the tests' tenant, with ``proxy_settings`` as its proxy block
    and ``budget`` and ``rate_limits`` as those blocks (by default, ones tests of other rules
    never reach)."""
    config = copy.deepcopy(proxy_config(tenant_server.tenant))
    config["clients"] = {
        client: orgs[0] if len(orgs) == 1 else orgs
        for client, orgs in CLIENT_ORGS.items()
        if client != "edge-unmapped"
    }
    config["proxy"] = proxy_settings
    config["budget"] = UNBOUNDED_BUDGET if budget is None else budget
    config["rate_limits"] = UNLIMITED_RATES if rate_limits is None else rate_limits
    return config


@dataclass
class Answer:
    """The proxy's answer to one request, however it was sent, and the line it logged for it."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes
    read_log: Callable[[], dict | None] = field(repr=False)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self):
        return json.loads(self.body)

    @property
    def log(self) -> dict:
        """The request's log line (found by its X-Request-ID)."""
        line = self.read_log()
        assert line is not None, "the proxy logged no line for this request"
        return line


def assert_cut_off(answer, log_text: Callable[[], str]) -> None:
    """A streamed list that failed after its first page: started (200), then cut off so that
    no client can parse what it got, and logged as such (``log_text``: the proxy's log, read
    once the list has been read)."""
    assert answer.status_code == 200  # the first page was fine, so the answer had started
    body = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in answer.iter_content(chunk_size=None):
            body += chunk
    with pytest.raises(ValueError):
        json.loads(body)  # never a valid-looking but truncated list
    assert "member list cut off mid-stream" in log_text()


def write(app, method: str, path: str, body, token: str):
    return app.test_client().open(
        path, method=method, json=body, headers={"Authorization": f"Bearer {token}"}
    )


# A token for every write the tests' grants name (and the reads).
WRITER_SCOPE = "read:users update:users delete:users create:organization_invitations"


def user_path(user_id: str) -> str:
    return f"/users/{quote(user_id, safe='')}"


def ids(answer: Answer) -> set[str]:
    return {member["user_id"] for member in answer.json()}


def assert_auth0_error(answer: Answer, status: int, error_code: str) -> dict:
    """An error in the Management API's shape, with this status and errorCode."""
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    body = answer.json()
    assert set(body) == ERROR_KEYS
    assert body["statusCode"] == status
    assert body["errorCode"] == error_code
    return body


def assert_refused(answer: Answer, status: int, error_code: str, reason: str) -> dict:
    """A refusal for exactly this reason (the log line's ``reason``, which the caller never
    sees): a refusal for another reason fails, though its status be the same."""
    body = assert_auth0_error(answer, status, error_code)
    assert answer.log["reason"] == reason, answer.log
    return body


def assert_invalid_token(answer: Answer, reason: str) -> dict:
    """401 invalid_token with an RFC 6750 challenge, refused for ``reason``."""
    body = assert_refused(answer, 401, "invalid_token", reason)
    assert body["error"] == "Unauthorized"
    challenge = answer.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    return body


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, sign=lambda signing_input: b"") -> str:
    """A compact JWS of any header and claims, signed by ``sign`` (no signature by default)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def parts(token: str) -> tuple[dict, dict]:
    """A token's header and claims, decoded without any check."""
    header, claims, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    decode = lambda s: json.loads(base64.urlsafe_b64decode(pad(s)))  # noqa: E731
    return decode(header), decode(claims)


def withdraw_signing_key(tenant) -> None:
    """The tenant signs with a new key and stops publishing the one it signed with (as after a
    compromise): tokens signed with it must be refused once the proxy refetches the JWKS."""
    old_kid = tenant.signing_key.kid
    tenant.rotate_key()
    tenant.withdraw_key(old_kid)


def join_refreshes() -> None:
    """Wait for this process's background refreshes to end."""
    for thread in threading.enumerate():
        if thread.name.startswith("refresh "):
            thread.join(10)


@contextmanager
def redis_server(
    workdir, url: Callable[[int], str], *options: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ``redis-server`` of the test's own (which it may stop), on a free port (``{port}`` in
    ``options``), answering at ``url(port)`` before the block runs: that URL and the process.
    Skips where there is none."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    command = [binary, *[option.format(port=port) for option in options]]
    command += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = url(port)
        client = redis.Redis.from_url(address)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)  # redis-server starting
        else:
            pytest.fail("redis-server did not start")
        yield address, process
    finally:
        process.terminate()
        process.wait(timeout=10)
