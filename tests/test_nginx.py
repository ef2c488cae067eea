"""nginx in front of the proxy, as deploy/nginx/auth0-m2m-proxy.conf sets it up.

A real nginx (Debian's package), unprivileged, with a prefix, logs and temporary directories of
its own, serves the site file itself: its ``${AUTH0_PROXY_...}`` placeholders are filled in as
envsubst (or the nginx Docker image) would, with a loopback port, a certificate of a throwaway CA
and a log file here. Behind it, the proxy under gunicorn, talking HTTPS to the emulated tenant.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from emulated_tenant.certs import generate_certificates
from scripts.proxy_server import ROOT, ProxyServer, free_port, stop_process
from tests.support import BIG_ORG_SIZE, MEMBERS, assert_cut_off, proxy_config_for, user_path

SITE = ROOT / "deploy" / "nginx" / "auth0-m2m-proxy.conf"
PLACEHOLDER = re.compile(r"\$\{(AUTH0_PROXY_[A-Z_]+)\}")
NGINX_WORKERS = 2

MAIN_CONF = """\
# The test's nginx.conf: what a distribution's main file holds, with every path in {dir}.
daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    client_body_temp_path {dir}/temp/body;
    proxy_temp_path {dir}/temp/proxy;
    fastcgi_temp_path {dir}/temp/fastcgi;
    uwsgi_temp_path {dir}/temp/uwsgi;
    scgi_temp_path {dir}/temp/scgi;
    access_log off;
    include {dir}/conf/auth0-m2m-proxy.conf;
}}
"""


def nginx_binary() -> str:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        pytest.skip(
            "nginx is not installed (apt-get install nginx; .ci/run installs it): "
            "the end-to-end tests of deploy/nginx/auth0-m2m-proxy.conf need it"
        )
    return binary


def render_site(values: dict[str, str]) -> str:
    """The site file with its placeholders filled in, as ``envsubst`` naming them would."""
    text = SITE.read_text()
    assert set(PLACEHOLDER.findall(text)) == set(values), "the site file's placeholders changed"
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


class Nginx:
    """nginx serving the site file in front of ``upstream``, in a directory of its own. Run as
    root (CI), it runs as ``nobody``: nothing in the test needs nginx to be privileged."""

    def __init__(self, upstream: str, edit_site=lambda site: site):
        self.binary = nginx_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="auth0-proxy-nginx-"))
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        for sub in ("conf", "logs", "temp"):
            (self.dir / sub).mkdir()
        self.tls = generate_certificates(self.dir / "tls")
        self.access_log = self.dir / "logs" / "access.log"
        self.error_log = self.dir / "logs" / "error.log"
        self.conf = self.dir / "conf" / "nginx.conf"
        site = render_site(
            {
                "AUTH0_PROXY_UPSTREAM": upstream,
                "AUTH0_PROXY_LISTEN": f"127.0.0.1:{self.port}",
                "AUTH0_PROXY_SERVER_NAME": "localhost",
                "AUTH0_PROXY_TLS_CERTIFICATE": str(self.tls.cert),
                "AUTH0_PROXY_TLS_CERTIFICATE_KEY": str(self.tls.key),
                "AUTH0_PROXY_ACCESS_LOG": str(self.access_log),
            }
        )
        (self.dir / "conf" / "auth0-m2m-proxy.conf").write_text(edit_site(site))
        self.conf.write_text(MAIN_CONF.format(dir=self.dir, workers=NGINX_WORKERS))
        self.user = self._unprivileged_user()
        self.process: subprocess.Popen | None = None

    def _unprivileged_user(self) -> dict:
        if os.geteuid() != 0:
            return {}
        nobody = pwd.getpwnam("nobody")
        for path in [self.dir, *self.dir.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    def command(self) -> list[str]:
        return [self.binary, "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.error_log)]

    def check(self) -> subprocess.CompletedProcess:
        """``nginx -t``: the configuration, site file included, as nginx reads it."""
        return subprocess.run(
            [*self.command(), "-t"], capture_output=True, text=True, timeout=30, **self.user
        )

    def start(self, timeout: float = 15.0) -> Nginx:
        with (self.dir / "logs" / "stderr.log").open("ab") as output:
            self.process = subprocess.Popen(
                self.command(), stdout=output, stderr=subprocess.STDOUT, **self.user
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.process.returncode}):\n{self.logs()}")
            try:
                requests.get(self.url, timeout=1, verify=str(self.tls.ca_bundle))
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not answer in {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted((self.dir / "logs").iterdir())
            if path.is_file()
        )

    def access_records(self) -> list[dict]:
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines()]

    def access_record(self, request_id: str, timeout: float = 5.0) -> dict:
        """nginx's line for the request: written once the answer is sent, so wait for it."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [r for r in self.access_records() if r["request_id"] == request_id]
            if lines or time.monotonic() > deadline:
                assert len(lines) == 1, f"{len(lines)} nginx access log lines for {request_id}"
                return lines[0]
            time.sleep(0.05)

    def get(self, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(
            f"{self.url}{path}",
            headers=headers,
            verify=str(self.tls.ca_bundle),
            timeout=kwargs.pop("timeout", 60),
            **kwargs,
        )


@contextmanager
def behind_nginx(tenant_server, workdir: Path, workers: int, edit_site=None, **proxy_settings):
    """The proxy under gunicorn, with nginx in front of it (its site file as shipped, or as
    ``edit_site`` changes it)."""
    nginx_binary()
    proxy_settings.setdefault("cache_ttl_seconds", 0)
    proxy = ProxyServer(
        proxy_config_for(tenant_server, **proxy_settings),
        ca_bundle=tenant_server.ca_bundle,
        workers=workers,
        threads=4,
        workdir=str(workdir),
    ).start()
    nginx = None
    try:
        nginx = Nginx(upstream=proxy.domain, **({"edit_site": edit_site} if edit_site else {}))
        nginx.start()
        yield proxy, nginx
    finally:
        if nginx is not None:
            nginx.remove()
        proxy.stop()


@pytest.fixture(scope="module")
def stack(tenant_server, tmp_path_factory) -> Iterator[tuple[ProxyServer, Nginx]]:
    """gunicorn (2 workers) behind nginx, for the module; no retries, so a fault shows."""
    with behind_nginx(
        tenant_server, tmp_path_factory.mktemp("nginx-proxy"), 2, retry_budget_seconds=0
    ) as pair:
        yield pair


def proxy_line(proxy: ProxyServer, request_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        lines = [r for r in proxy.log_records() if r.get("request_id") == request_id]
        if lines or time.monotonic() > deadline:
            assert len(lines) == 1, f"{len(lines)} proxy log lines for {request_id}"
            return lines[0]
        time.sleep(0.05)


def test_nginx_accepts_the_site_file(stack):
    _, nginx = stack
    checked = nginx.check()
    print(f"\n$ nginx -t  (deploy/nginx/auth0-m2m-proxy.conf rendered)\n{checked.stderr}")
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr and "test is successful" in checked.stderr
    assert "[warn]" not in checked.stderr and "[emerg]" not in checked.stderr


def test_members_through_nginx_log_the_clients_request_id(stack, make_token):
    proxy, nginx = stack
    token = make_token("edge-acme")
    request_id = f"nginx-e2e-{uuid.uuid4().hex}"
    answer = nginx.get("/users", token, headers={"X-Request-ID": request_id})
    assert answer.status_code == 200, answer.text
    direct = requests.get(
        f"{proxy.url}/users", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    members = {member["user_id"] for member in answer.json()}
    assert members == {member["user_id"] for member in direct.json()}
    assert "auth0|alice-acme" in members
    line = proxy_line(proxy, answer.headers["X-Request-ID"])
    assert line["caller_request_id"] == request_id
    assert (line["path"], line["status"], line["client_id"]) == ("/users", 200, "edge-acme")
    logged = nginx.access_record(request_id)
    assert (logged["path"], logged["status"], logged["tls"]) == ("/users", 200, "TLSv1.3")
    assert logged["upstream"] == proxy.domain


def test_without_a_request_id_nginx_gives_one_that_the_proxy_logs(stack, make_token):
    proxy, nginx = stack
    answer = nginx.get(user_path("auth0|alice-acme"), make_token("edge-acme"))
    assert answer.status_code == 200, answer.text
    line = proxy_line(proxy, answer.headers["X-Request-ID"])
    assert re.fullmatch(r"[0-9a-f]{32}", line["caller_request_id"])  # nginx's $request_id
    assert line["status"] == 200
    assert nginx.access_record(line["caller_request_id"])["status"] == 200


def test_a_request_id_the_proxy_would_not_keep_is_replaced(stack, make_token):
    proxy, nginx = stack
    answer = nginx.get("/users", make_token(), headers={"X-Request-ID": "two words"})
    line = proxy_line(proxy, answer.headers["X-Request-ID"])
    assert line["status"] == 200
    assert re.fullmatch(r"[0-9a-f]{32}", line["caller_request_id"])  # nginx's, not "two words"
    assert nginx.access_record(line["caller_request_id"])["path"] == "/users"


def test_streamed_list_arrives_complete_through_nginx(stack, make_token, tenant):
    _, nginx = stack
    tenant.latency = 0.01  # each page a moment apart, as from Auth0
    started = time.perf_counter()
    answer = nginx.get("/users", make_token("edge-big"), stream=True)
    assert answer.status_code == 200
    assert answer.headers.get("Transfer-Encoding") == "chunked"
    chunks, first_chunk_after = [], None
    for chunk in answer.iter_content(chunk_size=None):
        if first_chunk_after is None:
            first_chunk_after = time.perf_counter() - started
        chunks.append(chunk)
    total = time.perf_counter() - started
    members = json.loads(b"".join(chunks))
    assert len(members) == BIG_ORG_SIZE
    assert len({member["user_id"] for member in members}) == BIG_ORG_SIZE
    assert tenant.counts[MEMBERS] == BIG_ORG_SIZE // 50
    print(
        f"\nGET /users, {BIG_ORG_SIZE} members through nginx: {len(chunks)} chunks, "
        f"first after {first_chunk_after:.2f} s, all after {total:.2f} s"
    )
    assert len(chunks) > 1 and first_chunk_after < total / 2


def test_a_list_cut_off_mid_stream_stays_cut_off_through_nginx(stack, make_token, tenant):
    proxy, nginx = stack
    tenant.inject_fault(MEMBERS, status=503, times=1000, after=2)  # page 3 fails for good
    answer = nginx.get("/users", make_token("edge-big"), stream=True)
    assert_cut_off(answer, proxy.log_text)


def test_no_token_reaches_nginxs_logs(stack, make_token):
    _, nginx = stack
    token = make_token("edge-acme")
    for path in ("/users", f"/users?access_token={token}", user_path(token), f"/users/{token}"):
        nginx.get(path, token, headers={"X-Request-ID": f"token-{uuid.uuid4().hex}"})
    # The logs are written after the answers: wait until the last of them is there.
    nginx.get("/healthz", headers={"X-Request-ID": "last-of-them"})
    nginx.access_record("last-of-them")
    access, errors = nginx.access_log.read_text(), nginx.error_log.read_text()
    assert "[redacted]" in access  # the token in a path
    for log in (access, errors):
        for part in (token, *token.split(".")):
            assert part not in log
        assert "Bearer" not in log and "access_token" not in log


def test_nginx_limits_match_the_proxys(stack, make_token):
    proxy, nginx = stack
    token = make_token("edge-acme")
    # A body over 1 MiB: refused by nginx before gunicorn reads it, in the proxy's error shape.
    too_big = nginx.get(
        "/users", token, headers={"X-Request-ID": "nginx-big-body"}, data=b"x" * (2**20 + 1)
    )
    assert too_big.status_code == 413
    assert too_big.headers["Content-Type"] == "application/json"
    assert too_big.json()["errorCode"] == "request_entity_too_large"
    assert too_big.headers["X-Request-ID"] == "nginx-big-body"
    assert not [r for r in proxy.log_records() if r.get("request_id") == "nginx-big-body"]
    # 1 MiB exactly is allowed by both.
    assert nginx.get("/users", token, data=b"x" * 2**20).status_code == 200
    # A header over gunicorn's 8190 bytes passes nginx; gunicorn refuses it, in JSON.
    big_header = nginx.get("/users", token, headers={"X-Filler": "a" * 10_000})
    assert big_header.status_code == 431 and big_header.json()["statusCode"] == 431
    # Past nginx's own buffers (16k), nginx refuses it, the same way.
    huge_header = nginx.get("/users", token, headers={"X-Filler": "a" * 20_000})
    assert huge_header.status_code == 431
    assert huge_header.json()["errorCode"] == "request_header_fields_too_large"


def test_metrics_are_not_served_through_nginx(stack):
    _, nginx = stack
    answer = nginx.get("/metrics")
    assert answer.status_code == 404
    assert answer.json()["errorCode"] == "not_found"
    assert "# TYPE" not in answer.text


def test_a_proxy_that_is_down_is_a_json_502():
    nginx = Nginx(upstream=f"127.0.0.1:{free_port()}")  # nothing listens there
    try:
        nginx.start()
        answer = nginx.get("/users", headers={"X-Request-ID": "proxy-down"})
        assert answer.status_code == 502
        assert answer.json() == {
            "statusCode": 502,
            "error": "Bad Gateway",
            "message": "The proxy is not answering.",
            "errorCode": "bad_gateway",
        }
        assert answer.headers["X-Request-ID"] == "proxy-down"
    finally:
        nginx.remove()


def tcp_connections(port: int, state: str) -> tuple[set, set]:
    """IPv4 TCP sockets in ``state`` (hex, as /proc/net/tcp has it), as (local, remote) address
    pairs: (those whose local port is ``port``: gunicorn's side; those whose remote port is: its
    clients' side, nginx's)."""
    local, remote = set(), set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != state:
            continue
        pair = (fields[1], fields[2])
        if int(fields[1].split(":")[1], 16) == port:
            local.add(pair)
        if int(fields[2].split(":")[1], 16) == port:
            remote.add(pair)
    return local, remote


ESTABLISHED, TIME_WAIT = "01", "06"
SPREAD_WORKERS = 4
SPREAD_CLIENTS = 48
REQUESTS_PER_CLIENT = 15


def test_requests_spread_over_workers_behind_nginx_with_upstream_keepalive(
    tenant_server, tmp_path, make_token
):
    """Many client connections through nginx, kept alive to gunicorn: every worker serves its
    share, and it is nginx, not gunicorn, that closes the idle upstream connections."""
    token = make_token("edge-acme")
    with behind_nginx(tenant_server, tmp_path / "spread", SPREAD_WORKERS) as (proxy, nginx):
        # Closed connections linger in TIME_WAIT on the side that closed them first.
        gunicorn_closed_before, nginx_closed_before = tcp_connections(proxy.port, TIME_WAIT)

        def client(n: int) -> list[int]:
            with requests.Session() as session:
                session.headers["Authorization"] = f"Bearer {token}"
                return [
                    session.get(
                        f"{nginx.url}/users",
                        headers={"X-Request-ID": f"spread-{n}-{i}"},
                        verify=str(nginx.tls.ca_bundle),  # a Session's is overridden by the env
                        timeout=60,
                    ).status_code
                    for i in range(REQUESTS_PER_CLIENT)
                ]

        with ThreadPoolExecutor(max_workers=SPREAD_CLIENTS) as pool:
            statuses = [
                status for result in pool.map(client, range(SPREAD_CLIENTS)) for status in result
            ]
        total = SPREAD_CLIENTS * REQUESTS_PER_CLIENT
        assert statuses == [200] * total

        # The upstream connections outlive the requests: kept alive, not closed after each.
        # (Both sides are read one after the other: a connection may open or close between
        # the two reads, so a few snapshots are taken until they agree.)
        for _ in range(50):
            gunicorn_side, nginx_side = tcp_connections(proxy.port, ESTABLISHED)
            if gunicorn_side and len(gunicorn_side) == len(nginx_side):
                break
            time.sleep(0.1)
        assert gunicorn_side and len(gunicorn_side) == len(nginx_side)

        per_worker = Counter(
            record["pid"]
            for record in proxy.log_records()
            if (record.get("caller_request_id") or "").startswith("spread-")
        )
        counts = sorted(per_worker.values(), reverse=True)
        print(
            f"\n{total} requests of {SPREAD_CLIENTS} kept-alive clients through nginx "
            f"({NGINX_WORKERS} nginx workers, upstream keepalive) over {SPREAD_WORKERS} gunicorn "
            f"workers, per worker, busiest first: {counts}; idlest/busiest "
            f"{counts[-1] / counts[0]:.2f}"
        )
        assert sum(counts) == total  # a line per request, each logged before its answer
        assert len(per_worker) == SPREAD_WORKERS, "every gunicorn worker should serve requests"
        assert min(counts) >= total / SPREAD_WORKERS / 4, "a worker served far below its share"

        # Idle for longer than gunicorn's keepalive (5 s): nginx (4 s) has closed them all
        # itself, so gunicorn never closed a connection that nginx might have reused.
        time.sleep(5.5)
        gunicorn_side, nginx_side = tcp_connections(proxy.port, ESTABLISHED)
        assert (gunicorn_side, nginx_side) == (set(), set())
        closed_by_gunicorn, closed_by_nginx = tcp_connections(proxy.port, TIME_WAIT)
        assert closed_by_gunicorn - gunicorn_closed_before == set()
        assert closed_by_nginx - nginx_closed_before


def test_a_flood_from_one_address_is_a_json_429_that_never_reaches_gunicorn(
    tenant_server, tmp_path
):
    """The shipped limit (100 a second, bursts of 1,000) tightened to a burst of 5 in a copy of
    the site file, so that a test can reach it: past the burst, nginx answers 429 in the
    proxy's shape with a Retry-After, and gunicorn logs no line for what it never saw."""
    shipped = "limit_req zone=auth0_m2m_proxy_per_address burst=1000 nodelay;"
    assert shipped in SITE.read_text()
    tightened = lambda site: site.replace(shipped, shipped.replace("1000", "5"))  # noqa: E731
    with behind_nginx(tenant_server, tmp_path / "flood", 1, edit_site=tightened) as (proxy, nginx):
        with requests.Session() as session:
            answers = [
                session.get(f"{nginx.url}/users", verify=str(nginx.tls.ca_bundle), timeout=30)
                for _ in range(40)
            ]
        refused = [answer for answer in answers if answer.status_code == 429]
        assert refused, "a flood past the burst is refused"
        assert {answer.status_code for answer in answers} == {401, 429}  # no token: 401 upstream
        body = refused[0].json()
        assert body["errorCode"] == "too_many_requests" and body["statusCode"] == 429
        assert refused[0].headers["Retry-After"] == "1"
        reached = [r for r in proxy.log_records() if r.get("path") == "/users"]
        assert len(reached) == len(answers) - len(refused)
