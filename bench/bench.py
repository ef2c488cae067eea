"""`make bench`: the proxy's speed and upstream economy, measured side by side in one run.

The emulated tenant answers with a realistic latency (20 ms a call) and no rate limit; the proxy
runs under gunicorn with the recommended settings; wrk generates the load on loopback. Absolute
numbers depend on this machine and its neighbours; the ratios, measured in the same run, are the
result. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote

import requests

from emulated_tenant import TenantServer, demo_tenant
from emulated_tenant.demo import (
    API_AUDIENCE,
    MGMT_CLIENT_ID,
    UNBOUNDED_BUDGET,
    UNLIMITED_RATES,
    proxy_config,
)
from scripts.proxy_server import ProxyServer

UPSTREAM_LATENCY_SECONDS = 0.020
# Rate limits with the default mechanism (a token bucket per client and one for everyone, in the
# shared cache), set so high that wrk never reaches them: their cost, not their effect.
# A client request limit (an option: none by default), never refusing wrk's one client.
NEVER_REACHED_RATES = {"client": {"requests": {"per_minute": 10_000_000, "burst": 1_000_000}}}
PAGE_SIZE = 50
ORGS = {"org_bench": 250, "org_sync": 10_000, "org_herd": 2_500, "org_huge": 100_000}
MEMBERS = "GET /api/v2/organizations/{id}/members"


def wrk(url: str, token: str | None, seconds: int, connections: int, close=False) -> dict:
    """requests/s, p50 and p99 in ms, from one wrk run (``close``: a new connection for each
    request, instead of wrk's kept-alive connections)."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    if close:
        command[1:1] = ["-H", "Connection: close"]
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


def edge_client(org: str) -> str:
    """The edge client of a bench organization: edge-sync for org_sync."""
    return org.replace("org_", "edge-")


def edge_token(tenant, org: str) -> str:
    return tenant.issue_token(edge_client(org), API_AUDIENCE, scope="read:users")


def build_tenant():
    tenant = demo_tenant()
    for org, size in ORGS.items():
        client = edge_client(org)
        tenant.add_organization(org, org[4:], org[4:].title())
        tenant.seed_organization(org, size, prefix=org[4:])
        tenant.add_client(
            client, f"{client}-secret", grants={API_AUDIENCE: ["read:users"]}, organizations=[org]
        )
    return tenant


def start_proxy(
    tenant_server,
    config: dict,
    workers: int,
    threads: int,
    app: str = "wsgi:app",
    log_level: str = "INFO",
    env: dict | None = None,
):
    """The proxy (or ``app``) under gunicorn; by default as deployed, with one JSON log line
    per request (INFO), written to a file, and its metrics served."""
    return ProxyServer(
        config,
        ca_bundle=tenant_server.ca_bundle,
        workers=workers,
        threads=threads,
        workdir=tempfile.mkdtemp(prefix="bench-"),
        app=app,
        env={"LOG_LEVEL": log_level, **(env or {})},
    ).start()


def response_of(server: ProxyServer, path: str, headers: dict) -> bytes:
    """The body the server answers ``path`` with (whole: a streamed list too)."""
    response = requests.get(f"{server.url}{path}", headers=headers, timeout=60)
    response.raise_for_status()
    return response.content


def cpu_seconds(server: ProxyServer) -> float:
    """CPU time (user and system) of gunicorn's master and workers so far."""
    ticks = 0
    for pid in [server.process.pid, *worker_pids(server)]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measured(server: ProxyServer, path: str, token: str | None, args) -> dict:
    """One wrk run against ``server``, with the server's CPU time per request: steadier than
    requests/s on a shared machine, since time other tenants take from it does not count."""
    before = cpu_seconds(server)
    result = wrk(server.url + path, token, args.seconds, args.connections)
    result["cpu_us"] = 1e6 * (cpu_seconds(server) - before) / max(result["requests"], 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="wrk runs per row; the median counts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    tenant = build_tenant()
    tenant.latency = UPSTREAM_LATENCY_SECONDS
    rows = []
    with TenantServer(tenant) as tenant_server:
        config = proxy_config(tenant)
        config["clients"] = {edge_client(org): org for org in ORGS}
        # A TTL longer than the run keeps the warm rows warm (the default, 30 s, reads each list
        # again every 30 s; that cost shows in the cold rows). No prewarming: it would list every
        # organization at each proxy's start (2,256 calls), counted in the warm rows' upstream
        # calls, and leave no cold list for the cold rows.
        config["proxy"] = {"page_size": PAGE_SIZE, "cache_ttl_seconds": 600, "prewarm": False}
        config["budget"] = UNBOUNDED_BUDGET
        config["rate_limits"] = UNLIMITED_RATES  # the proxy's own cost; make simulate: the budget
        token = edge_token(tenant, "org_bench")
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

        with ExitStack() as running:  # each server stops, whatever fails after it started

            def start(*more, config=config, **options) -> ProxyServer:
                server = start_proxy(
                    tenant_server, config, args.workers, args.threads, *more, **options
                )
                running.callback(server.stop)
                return server

            proxy, quiet = start(), start(log_level="WARNING")
            unmetered = start(env={"METRICS_BIND": ""})
            limited = start(config={**config, "rate_limits": NEVER_REACHED_RATES})
            headers = {"Authorization": f"Bearer {token}"}
            warmed = [
                (proxy, "/users"),
                *((s, member_path) for s in (proxy, quiet, unmetered, limited)),
            ]
            for server, path in warmed:
                response = requests.get(f"{server.url}{path}", headers=headers, timeout=60)
                response.raise_for_status()  # and the cache is warm
            users_json = Path(tempfile.mkdtemp(prefix="bench-")) / "users.json"
            users_json.write_bytes(response_of(proxy, "/users", headers))
            hello = start("bench.hello:app", env={"BENCH_USERS_JSON": str(users_json)})
            before = sum(tenant.counts.values())
            # The proxy and its ceiling run one after the other, round by round, so that what
            # the machine is doing meanwhile weighs on all alike.
            warm = interleaved(
                {
                    "proxy GET /users/<id> (warm)": lambda: measured(
                        proxy, member_path, token, args
                    ),
                    "  the same, LOG_LEVEL=WARNING": lambda: measured(
                        quiet, member_path, token, args
                    ),
                    "  the same, no metrics (METRICS_BIND empty)": lambda: measured(
                        unmetered, member_path, token, args
                    ),
                    "  the same, rate limits on (never reached)": lambda: measured(
                        limited, member_path, token, args
                    ),
                    f"proxy GET /users, {ORGS['org_bench']} members (warm)": lambda: measured(
                        proxy, "/users", token, args
                    ),
                    "bare Flask, the same list's bytes": lambda: measured(
                        hello, "/users", token, args
                    ),
                    "bare Flask, same gunicorn, same request": lambda: measured(
                        hello, "/healthz", token, args
                    ),
                    "  the same, sent no token": lambda: measured(hello, "/healthz", None, args),
                },
                args.rounds,
            )
            proxy_user, without_log, without_metrics, with_limits, proxy_list, *bare = warm.values()
            list_ceiling, ceiling, tokenless = bare
            rows.extend(warm.items())
            upstream_warm = sum(tenant.counts.values()) - before
            warm_requests = sum(
                r["requests"]
                for r in (proxy_user, without_log, without_metrics, with_limits, proxy_list)
            )
            per_thousand = 1000 * upstream_warm / warm_requests

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
        huge = streaming_memory(tenant, tenant_server, config, "org_huge")

        settings_rows = compare_gunicorn_settings(tenant_server, config, member_path, token, args)
        spread_rows = worker_spread(tenant_server, config, member_path, token, args)

    print_table(rows)
    sync_minimum = math.ceil(ORGS["org_sync"] / PAGE_SIZE)
    summary = [
        (
            "proxy / bare-Flask throughput, warm GET /users/<id>",
            f"{proxy_user['rps'] / ceiling['rps']:.2f}  (goal >= 0.8); "
            f"{without_log['rps'] / ceiling['rps']:.2f} with LOG_LEVEL=WARNING; "
            f"{proxy_user['rps'] / tokenless['rps']:.2f} against the bare endpoint sent no token",
        ),
        (
            f"proxy / bare-Flask throughput, warm GET /users of {ORGS['org_bench']}",
            f"{proxy_list['rps'] / list_ceiling['rps']:.2f}  (goal >= 0.8; the bare endpoint "
            f"answers the same bytes); CPU per request "
            f"{list_ceiling['cpu_us'] / proxy_list['cpu_us']:.2f} bare / proxy",
        ),
        (
            "metrics' and rate limits' cost, warm GET /users/<id>",
            f"throughput {proxy_user['rps'] / without_metrics['rps']:.2f} with metrics / without; "
            f"{with_limits['rps'] / proxy_user['rps']:.2f} with rate limits / without; "
            f"CPU per request {proxy_user['cpu_us'] / without_metrics['cpu_us']:.2f}, "
            f"{with_limits['cpu_us'] / proxy_user['cpu_us']:.2f}",
        ),
        (
            "bare-Flask / proxy CPU per request, the same",
            f"{ceiling['cpu_us'] / proxy_user['cpu_us']:.2f}; "
            f"{ceiling['cpu_us'] / without_log['cpu_us']:.2f} with LOG_LEVEL=WARNING",
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
            f"streaming a cold list of {ORGS['org_huge']:,} members",
            f"{huge['members']:,} members, {huge['mib']:.1f} MiB of JSON; worker peak RSS "
            f"{huge['before']:.0f} MiB before, {huge['after']:.0f} MiB after",
        ),
        (
            "non-2xx answers during the wrk runs",
            str(sum(r["errors"] for _, r in rows + settings_rows)),
        ),
    ]
    print()
    print_table(settings_rows)
    print()
    print_spread(spread_rows, args.connections)
    print()
    for label, value in summary:
        print(f"{label + ':':<52} {value}")
    return 1 if any(r["errors"] for _, r in rows + settings_rows) else 0


GUNICORN_SETTINGS = [(2, 1), (4, 1), (2, 8), (4, 8)]  # (workers, threads)


def compare_gunicorn_settings(tenant_server, config, member_path, token, args) -> list:
    """Cold GET /users/<id> (no cache: two Auth0 calls of 20 ms each) under several settings.

    Each request comes on a new connection: gunicorn's threaded worker accepts every connection
    that is waiting, so wrk's 32 kept-alive connections, opened at once, would all land on one
    worker and leave the others idle (seen here: 1,051 of 1,051 requests on one of 4 workers).
    """
    cold = {**config, "proxy": {**config["proxy"], "cache_ttl_seconds": 0}}
    rows = []
    for workers, threads in GUNICORN_SETTINGS:
        proxy = start_proxy(tenant_server, cold, workers, threads)
        try:
            url = proxy.url + member_path
            result = wrk(url, token, args.seconds, args.connections, close=True)
        finally:
            proxy.stop()
        rows.append((f"cold GET /users/<id>, {workers} workers x {threads} threads", result))
    return rows


def interleaved(measurements: dict, rounds: int) -> dict:
    """The median result (by requests/s) of each measurement, taken in turn, round by round,
    with the range of its runs."""
    runs = {label: [] for label in measurements}
    for _ in range(rounds):
        for label, measure in measurements.items():
            runs[label].append(measure())
    medians = {}
    for label, results in runs.items():
        results.sort(key=lambda r: r["rps"])
        runs_range = (results[0]["rps"], results[-1]["rps"])
        medians[label] = {**results[len(results) // 2], "range": runs_range}
    return medians


SPREAD_WORKERS = 4


def worker_spread(tenant_server, config, member_path, token, args) -> list:
    """How the requests of ``args.connections`` kept-alive clients, connecting together, spread
    over 4 workers: with a listening socket per worker (SO_REUSEPORT, the default) and with one
    socket shared by all (GUNICORN_REUSE_PORT=0). Counted from each request's log line."""
    rows = []
    for reuse_port in ("1", "0"):
        proxy = ProxyServer(
            config,
            ca_bundle=tenant_server.ca_bundle,
            workers=SPREAD_WORKERS,
            threads=args.threads,
            workdir=tempfile.mkdtemp(prefix="bench-"),
            env={"LOG_LEVEL": "INFO", "GUNICORN_REUSE_PORT": reuse_port},
        ).start()
        try:
            headers = {"Authorization": f"Bearer {token}"}
            requests.get(proxy.url + member_path, headers=headers, timeout=60).raise_for_status()
            result = wrk(proxy.url + member_path, token, args.seconds, args.connections)
            per_worker = Counter(
                record["pid"] for record in proxy.log_records() if record.get("path")
            )
        finally:
            proxy.stop()
        counts = sorted(per_worker.values(), reverse=True) + [0] * SPREAD_WORKERS
        rows.append((reuse_port == "1", result["rps"], counts[:SPREAD_WORKERS]))
    return rows


def print_spread(rows: list, connections: int) -> None:
    title = f"{connections} kept-alive clients, {SPREAD_WORKERS} workers"
    print(f"{title:<46} {'req/s':>9}   {'requests per worker, busiest first':<40} idlest/busiest")
    for reuse_port, rps, counts in rows:
        label = "a socket per worker (default)" if reuse_port else "one shared socket"
        share = counts[-1] / counts[0] if counts[0] else 0
        print(f"{label:<46} {rps:>9.0f}   {counts!s:<40} {share:.2f}")


def cold_sync(tenant, proxy: ProxyServer, org: str) -> dict:
    token = edge_token(tenant, org)
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
    token = edge_token(tenant, org)
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


def streaming_memory(tenant, tenant_server, config: dict, org: str) -> dict:
    """Peak memory of the one worker that streams a cold list of ``ORGS[org]`` members, before
    and after. The tenant answers at once here: this row measures memory, not time."""
    latency, tenant.latency = tenant.latency, 0.0
    proxy = start_proxy(tenant_server, config, workers=1, threads=8)
    try:
        token = edge_token(tenant, org)
        headers = {"Authorization": f"Bearer {token}"}
        requests.get(f"{proxy.url}/users/unknown", headers=headers, timeout=60)  # warm up
        before = peak_rss_mib(worker_pids(proxy))
        with requests.get(f"{proxy.url}/users", headers=headers, timeout=600, stream=True) as r:
            r.raise_for_status()
            body = b"".join(r.iter_content(chunk_size=1 << 16))
        return {
            "members": len(json.loads(body)),
            "mib": len(body) / 2**20,
            "before": before,
            "after": peak_rss_mib(worker_pids(proxy)),
        }
    finally:
        proxy.stop()
        tenant.latency = latency


def print_table(rows: list[tuple[str, dict]]) -> None:
    heading = f"{'endpoint':<46} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'CPU us/req':>11}"
    print(heading + "  runs req/s")
    for label, r in rows:
        cpu = f"{r['cpu_us']:>11.0f}" if "cpu_us" in r else " " * 11
        runs = f"  {r['range'][0]:.0f}-{r['range'][1]:.0f}" if "range" in r else ""
        print(f"{label:<46} {r['rps']:>9.0f} {r['p50']:>9.1f} {r['p99']:>9.1f} {cpu}{runs}")


if __name__ == "__main__":
    sys.exit(main())
