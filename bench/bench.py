"""`make bench`: the proxy's speed and upstream economy, measured side by side in one run.

The emulated tenant answers with a realistic latency (20 ms a call) and no rate limit; the proxy
runs under gunicorn with the recommended settings; wrk generates the load on loopback. Absolute
numbers depend on this machine and its neighbours; the ratios, measured in the same run, are the
result. Prints one table.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.emulated_tenant import TenantServer, demo_tenant  # noqa: E402
from tests.emulated_tenant.demo import API_AUDIENCE, MGMT_CLIENT_ID, proxy_config  # noqa: E402
from tests.harness import ProxyServer  # noqa: E402

UPSTREAM_LATENCY_SECONDS = 0.020
PAGE_SIZE = 50
ORGS = {"org_bench": 500, "org_sync": 10_000, "org_herd": 2_500}
MEMBERS = "GET /api/v2/organizations/{id}/members"


def wrk(url: str, token: str | None, seconds: int, connections: int) -> dict:
    """requests/s, p50 and p99 in ms, from one wrk run."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": _ms(re.search(r"\s50%\s+([\d.]+\w+)", out).group(1)),
        "p99": _ms(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1)),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def worker_pids(proxy: ProxyServer) -> list[int]:
    children = Path(f"/proc/{proxy.process.pid}/task/{proxy.process.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def peak_rss_mib(pids: list[int]) -> float:
    """The largest VmHWM (peak resident memory) among the given processes."""
    peaks = []
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


def build_tenant():
    tenant = demo_tenant()
    for org, size in ORGS.items():
        client = org.replace("org_", "edge-")
        tenant.add_organization(org, org[4:], org[4:].title())
        tenant.seed_organization(org, size, prefix=org[4:])
        tenant.add_client(
            client, f"{client}-secret", grants={API_AUDIENCE: ["read:users"]}, organizations=[org]
        )
    return tenant


def start_proxy(tenant_server, config: dict, workers: int, threads: int, app: str = "wsgi:app"):
    return ProxyServer(
        config,
        ca_bundle=tenant_server.ca_bundle,
        workers=workers,
        threads=threads,
        workdir=tempfile.mkdtemp(prefix="bench-"),
        app=app,
        env={"LOG_LEVEL": "WARNING"},
    ).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per row; the median counts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    tenant = build_tenant()
    tenant.latency = UPSTREAM_LATENCY_SECONDS
    rows = []
    with TenantServer(tenant) as tenant_server:
        config = proxy_config(tenant)
        config["clients"] = {org.replace("org_", "edge-"): org for org in ORGS}
        # A TTL longer than the run keeps the warm rows warm (the default, 30 s, reads each list
        # again every 30 s; that cost shows in the cold rows).
        config["proxy"] = {"page_size": PAGE_SIZE, "cache_ttl_seconds": 600}
        token = tenant.issue_token("edge-bench", API_AUDIENCE, scope="read:users")
        member = sorted(tenant.member_ids("org_bench"))[0]
        member_path = f"/users/{quote(member, safe='')}"

        def run(label: str, url: str, bearer: str | None) -> dict:
            """The median run (by requests/s) of ``args.rounds`` wrk runs."""
            results = sorted(
                (wrk(url, bearer, args.seconds, args.connections) for _ in range(args.rounds)),
                key=lambda result: result["rps"],
            )
            result = results[len(results) // 2]
            rows.append((label, result))
            return result

        proxy = start_proxy(tenant_server, config, args.workers, args.threads)
        hello = start_proxy(tenant_server, config, args.workers, args.threads, "bench.hello:app")
        try:
            headers = {"Authorization": f"Bearer {token}"}
            for path in (member_path, "/users"):  # warm the cache
                requests.get(f"{proxy.url}{path}", headers=headers, timeout=60).raise_for_status()
            before = sum(tenant.counts.values())
            # The proxy and its ceiling run one after the other, round by round, so that what
            # the machine is doing meanwhile weighs on both alike.
            proxy_user, ceiling = interleaved(
                lambda: wrk(proxy.url + member_path, token, args.seconds, args.connections),
                lambda: wrk(hello.url + "/healthz", None, args.seconds, args.connections),
                args.rounds,
            )
            rows.append(("proxy GET /users/<id> (warm)", proxy_user))
            proxy_list = run("proxy GET /users, 500 members (warm)", proxy.url + "/users", token)
            rows.append(("bare Flask hello, same gunicorn", ceiling))
            upstream_warm = sum(tenant.counts.values()) - before
            per_thousand = 1000 * upstream_warm / (proxy_user["requests"] + proxy_list["requests"])

            mgmt = tenant.issue_token(MGMT_CLIENT_ID, tenant.management_audience)
            tenant_user = run(
                "tenant GET /api/v2/users/{id}",
                f"{tenant_server.url}/api/v2/users/{quote(member, safe='')}",
                mgmt,
            )
            run(
                "tenant GET members, one page of 50",
                f"{tenant_server.url}/api/v2/organizations/org_bench/members?take=50",
                mgmt,
            )

            sync = cold_sync(tenant, proxy, "org_sync")
            herd = cold_herd(tenant, proxy, "org_herd")
        finally:
            proxy.stop()
            hello.stop()

        settings_rows = compare_gunicorn_settings(tenant_server, config, member_path, token, args)

    print_table(rows)
    sync_minimum = math.ceil(ORGS["org_sync"] / PAGE_SIZE)
    summary = [
        (
            "proxy / bare-Flask throughput, warm GET /users/<id>",
            f"{proxy_user['rps'] / ceiling['rps']:.2f}  (goal >= 0.7)",
        ),
        (
            "proxy p50 - tenant p50, GET /users/<id>",
            f"{proxy_user['p50'] - tenant_user['p50']:+.1f} ms  (warm: no upstream call)",
        ),
        ("upstream calls per 1,000 client requests, warm", f"{per_thousand:.2f}  (goal < 5)"),
        (
            f"cold full sync of {ORGS['org_sync']:,} members",
            f"{sync['seconds']:.1f} s, {sync['calls']} upstream calls (minimum {sync_minimum}), "
            f"{sync['members']:,} members, worker peak RSS {sync['rss']:.0f} MiB",
        ),
        (
            f"50 concurrent cold requests for one list of {ORGS['org_herd']:,}",
            f"{herd['fetches']:.0f} upstream listing(s), {herd['calls']} page calls  (goal 1)",
        ),
        (
            "non-2xx answers during the wrk runs",
            str(sum(r["errors"] for _, r in rows + settings_rows)),
        ),
    ]
    print()
    print_table(settings_rows)
    print()
    for label, value in summary:
        print(f"{label + ':':<52} {value}")
    return 1 if any(r["errors"] for _, r in rows + settings_rows) else 0


GUNICORN_SETTINGS = [(2, 1), (4, 1), (2, 8), (4, 8)]  # (workers, threads)


def compare_gunicorn_settings(tenant_server, config, member_path, token, args) -> list:
    """Cold GET /users/<id> (no cache: two Auth0 calls of 20 ms each) under several settings."""
    cold = {**config, "proxy": {**config["proxy"], "cache_ttl_seconds": 0}}
    rows = []
    for workers, threads in GUNICORN_SETTINGS:
        proxy = start_proxy(tenant_server, cold, workers, threads)
        try:
            result = wrk(proxy.url + member_path, token, args.seconds, args.connections)
        finally:
            proxy.stop()
        rows.append((f"cold GET /users/<id>, {workers} workers x {threads} threads", result))
    return rows


def interleaved(first, second, rounds: int) -> tuple[dict, dict]:
    """Median results of two measurements taken in alternation."""
    results = [(first(), second()) for _ in range(rounds)]
    median = lambda runs: sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]  # noqa: E731
    return median([a for a, _ in results]), median([b for _, b in results])


def cold_sync(tenant, proxy: ProxyServer, org: str) -> dict:
    token = tenant.issue_token(org.replace("org_", "edge-"), API_AUDIENCE, scope="read:users")
    before = len(tenant.requests)
    started = time.perf_counter()
    response = requests.get(
        f"{proxy.url}/users", headers={"Authorization": f"Bearer {token}"}, timeout=300
    )
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return {
        "seconds": seconds,
        "calls": sum(
            1 for r in tenant.requests[before:] if f"/organizations/{org}/" in r["raw_uri"]
        ),
        "members": len(response.json()),
        "rss": peak_rss_mib(worker_pids(proxy)),
    }


def cold_herd(tenant, proxy: ProxyServer, org: str) -> dict:
    token = tenant.issue_token(org.replace("org_", "edge-"), API_AUDIENCE, scope="read:users")
    before = tenant.counts[MEMBERS]

    def get(_):
        return requests.get(
            f"{proxy.url}/users", headers={"Authorization": f"Bearer {token}"}, timeout=300
        )

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(get, range(50)))
    assert all(len(response.json()) == ORGS[org] for response in responses)
    calls = tenant.counts[MEMBERS] - before
    return {"calls": calls, "fetches": calls / math.ceil(ORGS[org] / PAGE_SIZE)}


def print_table(rows: list[tuple[str, dict]]) -> None:
    print(f"{'endpoint':<42} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    for label, result in rows:
        print(f"{label:<42} {result['rps']:>9.0f} {result['p50']:>9.1f} {result['p99']:>9.1f}")


if __name__ == "__main__":
    sys.exit(main())
