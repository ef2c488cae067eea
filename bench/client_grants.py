"""`make bench-grants`: what reading the clients map from Auth0's client grants costs, and that
it spends only what clients leave.

The emulated tenant enforces Auth0's professional limits (the whole Management API's bucket:
burst 50, 16 a second); ``--grants`` edge applications are each authorized for one of
``--orgs`` organizations; the proxy runs under gunicorn (2 workers) with the default budget
(professional, share 0.5). Two runs, side by side, the same load in each: ``--clients`` threads
read cold member lists (``cache_ttl_seconds`` 0: every answer reads Auth0) of clients the
config maps, for ``--seconds``:

- client_grants off;
- client_grants on, the map read every ``--refresh`` seconds (the first read at start, before
  the load).

Printed: the calls a read costs and how long it took, idle and under the load; the clients'
answers (200, 429) and Auth0's 429s in each run. Loopback only; it stops by itself.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter

import requests

from emulated_tenant import TenantServer, demo_tenant
from emulated_tenant.demo import API_AUDIENCE, proxy_config
from scripts.proxy_server import ProxyServer

GRANTS = "GET /api/v2/client-grants"
GRANT_ORGANIZATIONS = "GET /api/v2/client-grants/{id}/organizations"
READ_LINE = re.compile(r"read Auth0's client grants in ([0-9.]+) s: (\d+) client")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grants", type=int, default=300)
    parser.add_argument("--orgs", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8, help="client threads of the load")
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--refresh", type=int, default=30, help="client_grants.refresh_seconds")
    args = parser.parse_args()
    tenant = seeded_tenant(args.grants, args.orgs)
    with TenantServer(tenant) as server:
        tenant.enforce_plan("professional")
        results = {enabled: run(server, args, enabled) for enabled in (False, True)}
    report(args, results)
    return 0


def seeded_tenant(grants: int, orgs: int):
    """The demo tenant, with ``orgs`` organizations of 20 members and ``grants`` applications
    each authorized for one of them (Organization Support required)."""
    tenant = demo_tenant()
    for n in range(orgs):
        tenant.add_organization(f"org_bench{n}", f"bench{n}")
        tenant.seed_organization(f"org_bench{n}", 20, prefix=f"bench{n}")
    for n in range(grants):
        tenant.add_client(f"edge-granted-{n}", f"edge-granted-{n}-secret")
        grant = tenant.add_client_grant(
            f"edge-granted-{n}", API_AUDIENCE, ["read:users"], organization_usage="require"
        )
        tenant.associate_client_grant(f"org_bench{n % orgs}", grant.id)
    return tenant


def run(server: TenantServer, args: argparse.Namespace, enabled: bool) -> dict:
    """One run: the proxy (client grants ``enabled`` or not) under the load; what it cost."""
    tenant = server.tenant
    config = proxy_config(tenant)
    config["clients"] = {f"load-{n}": f"org_bench{n}" for n in range(args.orgs)}
    config["proxy"] = {"cache_ttl_seconds": 0, "prewarm": False}
    config["budget"] = {"plan": "professional", "share": 0.5}
    config["rate_limits"] = {"client": {"upstream": {"per_minute": 0}}}
    config["client_grants"] = {"enabled": enabled, "refresh_seconds": args.refresh}
    tokens = [
        tenant.issue_token(f"load-{n}", API_AUDIENCE, scope="read:users") for n in range(args.orgs)
    ]
    tenant.reset_counts()
    workdir = tempfile.mkdtemp(prefix="bench-grants-")
    with ProxyServer(config, ca_bundle=server.ca_bundle, workdir=workdir) as proxy:
        idle = wait_for_read(proxy) if enabled else None
        counts_at_load = Counter(tenant.counts)
        answers = load(proxy, tokens, args.clients, args.seconds)
        reads = reads_logged(proxy)
    calls = Counter(tenant.counts)
    return {
        "idle_read": idle,
        "first_read_calls": counts_at_load[GRANTS] + counts_at_load[GRANT_ORGANIZATIONS],
        "reads": reads,
        "answers": answers,
        "upstream_429": sum(1 for r in tenant.requests if r["status"] == 429),
        "grant_calls": calls[GRANTS] + calls[GRANT_ORGANIZATIONS],
    }


def wait_for_read(proxy: ProxyServer, timeout: float = 600) -> float:
    """The seconds the first read at start took (the proxy's log line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reads := reads_logged(proxy):
            return reads[0]
        time.sleep(0.5)
    raise SystemExit(f"no read of Auth0's client grants within {timeout:g} s")


def reads_logged(proxy: ProxyServer) -> list[float]:
    return [
        float(match.group(1))
        for record in proxy.log_records()
        if (match := READ_LINE.search(str(record.get("message", ""))))
    ]


def load(proxy: ProxyServer, tokens: list[str], threads: int, seconds: float) -> Counter:
    """``threads`` clients reading member lists for ``seconds``; their answers' statuses."""
    answers: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                token = rng.choice(tokens)
                status = session.get(
                    f"{proxy.url}/users", headers={"Authorization": f"Bearer {token}"}, timeout=60
                ).status_code
                with lock:
                    answers[status] += 1
                if status == 429:
                    time.sleep(0.5)

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers


def report(args: argparse.Namespace, results: dict) -> None:
    off, on = results[False], results[True]
    print(
        f"bench-grants: {args.grants} applications authorized for {args.orgs} organizations;"
        f" tenant on professional limits; load: {args.clients} clients reading cold member"
        f" lists for {args.seconds:g} s; refresh_seconds {args.refresh}"
    )
    calls = on["first_read_calls"]
    print(
        f"  first read at start (idle): {calls} calls ({calls / max(args.grants, 1):.2f} per"
        f" grant) in {on['idle_read']:.1f} s"
    )
    later = on["reads"][1:]
    if later:
        print(f"  reads under the load: {len(later)}, {min(later):.1f} to {max(later):.1f} s each")
    else:
        print("  reads under the load: none completed")
    print(f"  {'':<28}{'client_grants off':>20}{'client_grants on':>20}")
    for name, key in (("client answers 200", 200), ("client answers 429", 429)):
        print(f"  {name:<28}{off['answers'][key]:>20,}{on['answers'][key]:>20,}")
    other = [sum(v for k, v in run["answers"].items() if k not in (200, 429)) for run in (off, on)]
    print(f"  {'other answers':<28}{other[0]:>20,}{other[1]:>20,}")
    print(f"  {'Auth0 429s':<28}{off['upstream_429']:>20,}{on['upstream_429']:>20,}")
    print(f"  {'client grants calls':<28}{off['grant_calls']:>20,}{on['grant_calls']:>20,}")
    ratio = on["answers"][200] / max(off["answers"][200], 1)
    print(f"  client answers 200, on / off: {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
