"""What the tests share besides fixtures: the proxy's config for the tests' tenant, one answer
type for both ways of calling the proxy, token forgery, and the assertions every refusal uses."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
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
    never reach). Prewarming is off unless asked for: a test's upstream calls are its own."""
    proxy_settings.setdefault("prewarm", False)
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


def redis_binary(name: str = "redis-server") -> str:
    """The path of one of Redis's programs; skips where it is not installed."""
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed (apt-get install redis-server)")
    return binary


@contextmanager
def redis_server(
    workdir, url: Callable[[int], str], *options: str, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ``redis-server`` of the test's own (which it may stop), on a free port (``{port}`` in
    ``options``), answering at ``url(port)`` before the block runs: that URL and the process.
    Skips where there is none."""
    port = port or free_port()
    command = [redis_binary(), *[option.format(port=port) for option in options]]
    command += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = url(port)
        wait_for_redis(redis.Redis.from_url(address))
        yield address, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_for_redis(client: redis.Redis, ready: Callable[[], bool] = lambda: True) -> None:
    """Until ``client`` answers a PING and ``ready()`` holds (a server starting, a cluster
    joining, a failover): at most 30 s."""
    for _ in range(600):
        try:
            if client.ping() and ready():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    pytest.fail("redis-server did not become ready within 30 s")


@contextmanager
def redis_cluster(workdir, primaries: int = 3) -> Iterator[str]:
    """A Redis Cluster of ``primaries`` redis-servers of the test's own, every slot assigned,
    no replicas: the URL of one node."""
    ports = cluster_ports(primaries)
    with contextlib.ExitStack() as servers:
        for port in ports:
            servers.enter_context(
                redis_server(
                    workdir,
                    "redis://127.0.0.1:{}/0".format,
                    "--port",
                    "{port}",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes-{port}.conf",
                    port=port,
                )
            )
        nodes = [f"127.0.0.1:{port}" for port in ports]
        subprocess.run(
            [redis_binary("redis-cli"), "--cluster", "create", *nodes, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in ports:
            node = redis.Redis(port=port)
            wait_for_redis(node, lambda node=node: node.cluster("info")["cluster_state"] == "ok")
        yield f"redis://{nodes[0]}/0"


@contextmanager
def redis_sentinel(
    workdir,
    service: str,
    primary_port: int,
    password: str,
    own_password: str,
    *,
    tls=None,
    replicas: bool = True,
):
    """A redis-server in sentinel mode (``own_password`` its own) watching the primary at
    ``primary_port`` (``password`` its) as ``service``, quorum 1, saying a primary is down
    after one second of silence; with ``tls`` (certificates), on TLS to its clients and the
    servers. Once it knows the primary (and, with ``replicas``, a replica): its address."""
    port = free_port()
    config = Path(workdir) / f"sentinel-{port}.conf"
    listen = f"port {port}\n"
    connect: dict = {"port": port, "password": own_password}
    if tls is not None:
        listen = (
            f"port 0\ntls-port {port}\ntls-auth-clients no\ntls-replication yes\n"
            f"tls-cert-file {tls.cert}\ntls-key-file {tls.key}\ntls-ca-cert-file {tls.ca_bundle}\n"
        )
        connect |= {"ssl": True, "ssl_ca_certs": str(tls.ca_bundle)}
    config.write_text(
        f"{listen}requirepass {own_password}\n"
        f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
        f"sentinel auth-pass {service} {password}\n"
        f"sentinel down-after-milliseconds {service} 1000\n"
        f"sentinel failover-timeout {service} 10000\n"
    )
    command = [redis_binary(), str(config), "--sentinel"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        watcher = redis.Redis(**connect)
        known = (lambda: watcher.sentinel_slaves(service) != []) if replicas else lambda: True
        wait_for_redis(watcher, lambda: watcher.sentinel_master(service) and known())
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (each + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20_000, 30_000)
        if port not in ports and all(_free(p) for p in (port, port + 10_000)):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
