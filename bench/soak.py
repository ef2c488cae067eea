"""A bounded soak: mixed traffic from many edge clients while the emulated tenant misbehaves.

Starts the emulated tenant and the proxy under gunicorn (as deployed: 2 workers, threads), then
for ``--seconds`` (default 180) runs client threads of several organizations calling GET /users
and GET /users/<id> (own members, other organizations' members, unknown and hostile ids), while
a chaos thread injects 429s, 5xx answers, slow answers, a rate limit, a signing-key rotation and
a management-token revocation. Every answer is checked:

- its status is a documented one and never 500; an error body has Auth0's shape; a list cut
  off mid-stream (Auth0 failing after the answer started) is counted, and must be a list;
- it never holds a user of another organization, and a member list is always complete;
- a valid token is never refused (401/403), key rotation and revocation included;
- no token or secret appears in any log line of the proxy;
- the workers' memory (RSS) is reported at start, once warm (a tenth into the run), and at the end.

Prints one summary line and exits non-zero if any check failed. Loopback only; it stops by itself.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import requests

from emulated_tenant import TenantServer, demo_tenant
from emulated_tenant.demo import (
    API_AUDIENCE,
    MGMT_CLIENT_SECRET,
    UNBOUNDED_BUDGET,
    UNLIMITED_RATES,
    proxy_config,
)
from scripts.proxy_server import ProxyServer

DOCUMENTED = {200, 400, 401, 403, 404, 413, 414, 429, 431, 502, 503, 504}
ERROR_KEYS = {"statusCode", "error", "message", "errorCode"}
EXTRA_ORGS = 4
MEMBERS_PER_EXTRA_ORG = 300
MEMBERS = "GET /api/v2/organizations/{id}/members"
USER_ORGS = "GET /api/v2/users/{id}/organizations"
USER = "GET /api/v2/users/{id}"
JWKS = "GET /.well-known/jwks.json"
TOKEN = "POST /oauth/token"


class Soak:
    def __init__(self, tenant, proxy: ProxyServer, client_orgs: dict[str, str]):
        self.tenant = tenant
        self.proxy = proxy
        self.client_orgs = client_orgs
        self.members = {org: set(tenant.member_ids(org)) for org in set(client_orgs.values())}
        self.all_users = {user for members in self.members.values() for user in members}
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.tokens_seen: set[str] = set()
        self.lock = threading.Lock()

    def token_for(self, client_id: str) -> str:
        token = self.tenant.issue_token(client_id, API_AUDIENCE, None, scope="read:users")
        with self.lock:
            self.tokens_seen.add(token)
        return token

    def client_loop(self, client_id: str, stop_at: float, seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        token, token_born = self.token_for(client_id), time.monotonic()
        own = sorted(self.members[self.client_orgs[client_id]])
        others = sorted(self.all_users - set(own))
        while time.monotonic() < stop_at:
            if time.monotonic() - token_born > 20:  # edge clients renew their tokens
                token, token_born = self.token_for(client_id), time.monotonic()
            path = self.pick_path(rng, own, others)
            try:
                response = session.get(
                    f"{self.proxy.url}{path}",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
            except requests.exceptions.ChunkedEncodingError:
                # A list cut off mid-stream (Auth0 failed after the answer started): documented,
                # and the client cannot mistake it for a complete list.
                with self.lock:
                    self.counts["cut_off"] += 1
                if path != "/users":
                    self.fail(f"{client_id} {path}: cut off, but only lists are streamed")
                continue
            except requests.RequestException as error:
                self.fail(f"{client_id} {path}: no answer ({type(error).__name__})")
                continue
            self.check(client_id, path, response)

    @staticmethod
    def pick_path(rng: random.Random, own: list[str], others: list[str]) -> str:
        roll = rng.random()
        if roll < 0.15:
            return "/users"
        if roll < 0.70:
            user_id = rng.choice(own)
        elif roll < 0.90:
            user_id = rng.choice(others)
        else:
            user_id = rng.choice(
                ["auth0|nobody", "..", "a/../b", "x?fields=email", "ü" * 40, "%2F"]
            )
        return "/users/" + quote(user_id, safe="")

    def check(self, client_id: str, path: str, response: requests.Response) -> None:
        status = response.status_code
        with self.lock:
            self.counts[str(status)] += 1
        if status not in DOCUMENTED:
            self.fail(f"{client_id} {path}: undocumented status {status}")
            return
        try:
            body = response.json()
        except ValueError:
            self.fail(f"{client_id} {path}: {status} body is not JSON")
            return
        if status != 200:
            if not isinstance(body, dict) or set(body) != ERROR_KEYS:
                self.fail(f"{client_id} {path}: {status} body is not Auth0-shaped")
            elif status in (401, 403):  # every client here holds a valid token for its org
                self.fail(f"{client_id} {path}: {status} for a valid token: {body['message']}")
            return
        own = self.members[self.client_orgs[client_id]]
        returned = {user["user_id"] for user in body} if path == "/users" else {body["user_id"]}
        if not returned <= own:
            with self.lock:
                self.counts["leaks"] += 1
            self.fail(f"{client_id} {path}: LEAK of {sorted(returned - own)[:3]}")
        if path == "/users" and returned != own:
            self.fail(f"{client_id}: incomplete member list ({len(returned)} of {len(own)})")

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)

    def chaos_loop(self, stop_at: float, seed: int) -> None:
        """Every second or two, one misbehaviour; once each: rotation, revocation, a rate limit."""
        rng = random.Random(seed)
        started = time.monotonic()
        once = {"rotate": 0.3, "revoke": 0.5, "limit": 0.7}
        while time.monotonic() < stop_at:
            time.sleep(rng.uniform(0.5, 2.0))
            endpoint = rng.choice([MEMBERS, USER_ORGS, USER] * 3 + [JWKS, TOKEN])
            kind = rng.choice(["429", "500", "503", "slow"])
            if kind == "slow":
                self.tenant.inject_fault(endpoint, status=None, delay=rng.uniform(0.2, 3.0))
            else:
                self.tenant.inject_fault(endpoint, status=int(kind), times=rng.randint(1, 3))
            with self.lock:
                self.counts[f"chaos_{kind}"] += 1
            progress = (time.monotonic() - started) / (stop_at - started)
            for event, at in list(once.items()):
                if progress >= at:
                    del once[event]
                    self.one_off(event)

    def one_off(self, event: str) -> None:
        with self.lock:
            self.counts[f"chaos_{event}"] += 1
        if event == "rotate":
            self.tenant.rotate_key()
        elif event == "revoke":
            self.tenant.revoke_management_tokens()
        else:
            self.tenant.set_rate_limit(per_second=20, burst=10)
            threading.Timer(15, self.tenant.set_rate_limit, args=(None,)).start()

    def secrets_in_log(self) -> int:
        log = self.proxy.log_text()
        secrets = [MGMT_CLIENT_SECRET, *self.tenant.live_management_tokens(), *self.tokens_seen]
        return sum(1 for secret in secrets for part in secret.split(".")[-2:] if part in log)


def worker_rss_kib(proxy: ProxyServer) -> list[int]:
    """VmRSS of each gunicorn worker (the master's children)."""
    children = Path(f"/proc/{proxy.process.pid}/task/{proxy.process.pid}/children").read_text()
    sizes = []
    for pid in children.split():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]))
    return sorted(sizes)


def build_tenant():
    tenant = demo_tenant()
    client_orgs = {"edge-acme": "org_acme", "edge-globex": "org_globex"}
    for n in range(EXTRA_ORGS):
        org, client = f"org_soak{n}", f"edge-soak{n}"
        tenant.add_organization(org, f"soak{n}", f"Soak Customer {n}")
        tenant.seed_organization(org, MEMBERS_PER_EXTRA_ORG, prefix=f"soak{n}")
        tenant.add_client(
            client, f"{client}-secret", grants={API_AUDIENCE: ["read:users"]}, organizations=[org]
        )
        client_orgs[client] = org
    return tenant, client_orgs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--clients", type=int, default=12)
    args = parser.parse_args()

    tenant, client_orgs = build_tenant()
    with TenantServer(tenant) as tenant_server:
        config = proxy_config(tenant)
        config["clients"] = client_orgs
        # Short-lived cache entries, so lists, memberships and profiles are fetched again and
        # again under the injected faults.
        config["proxy"] = {
            "retry_budget_seconds": 3,
            "read_timeout_seconds": 2,
            "cache_ttl_seconds": 5,
        }
        # Faults, not the budget, are soaked here (make simulate measures the budget): a budget
        # this traffic never reaches, so it is not paced to a few requests a second.
        config["budget"] = UNBOUNDED_BUDGET
        config["rate_limits"] = UNLIMITED_RATES
        workdir = tempfile.mkdtemp(prefix="soak-")
        with ProxyServer(
            config, ca_bundle=tenant_server.ca_bundle, threads=8, workdir=workdir
        ) as proxy:
            soak = Soak(tenant, proxy, client_orgs)
            while len(rss_start := worker_rss_kib(proxy)) < 2:  # both workers booted
                time.sleep(0.1)
            stop_at = time.monotonic() + args.seconds
            clients = sorted(client_orgs)
            threads = [
                threading.Thread(
                    target=soak.client_loop, args=(clients[n % len(clients)], stop_at, n)
                )
                for n in range(args.clients)
            ]
            threads.append(threading.Thread(target=soak.chaos_loop, args=(stop_at, 7)))
            for thread in threads:
                thread.start()
            time.sleep(args.seconds / 10)  # warm: imports done, caches and pools filled
            rss_warm = worker_rss_kib(proxy)
            for thread in threads:
                thread.join()
            tenant.clear_faults()
            rss_end = worker_rss_kib(proxy)
            secrets = soak.secrets_in_log()
    counts = soak.counts
    requests_total = sum(v for k, v in counts.items() if k.isdigit())
    statuses = " ".join(f"{k}={counts[k]}" for k in sorted(k for k in counts if k.isdigit()))
    chaos = " ".join(f"{k[6:]}={v}" for k, v in sorted(counts.items()) if k.startswith("chaos_"))
    print(
        f"soak: {args.seconds:.0f}s clients={args.clients} requests={requests_total} [{statuses}] "
        f"cut_off={counts['cut_off']} 500s={counts['500']} leaks={counts['leaks']} "
        f"secrets_in_log={secrets} "
        f"failures={len(soak.failures)} chaos[{chaos}] "
        f"worker_rss_kib start={rss_start} warm={rss_warm} end={rss_end} log={workdir}/proxy.log"
    )
    for failure in soak.failures[:20]:
        print("  FAIL", failure)
    return 1 if soak.failures or secrets or counts["500"] else 0


if __name__ == "__main__":
    sys.exit(main())
