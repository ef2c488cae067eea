"""`make simulate`: how the proxy holds a fleet of edge servers within the tenant's Auth0 budget.

One emulated tenant enforcing an Auth0 plan's rate limits (``--plan``, default professional),
``--orgs`` organizations of ``--members`` members, ``--clients`` edge clients each mapped to one
organization (round-robin), and two proxies under gunicorn sharing one Redis, as two hosts
would; the clients are spread over both. Each client polls ``GET /users`` every ``--poll``
seconds with its token and the ``ETag`` of its last list (``If-None-Match``); on 429 it retries
after ``Retry-After``. A warm-up comes before the measured phase (``--minutes``): the clients
join uniformly over ``--ramp`` seconds, and the warm-up lasts ``--warmup`` seconds, by default
long enough for the proxy's budget to list every organization once (a cold fleet's first lists
cannot all fit the budget at once; the warm-up's table shows what that costs) and one poll
period more. For each phase one table: upstream calls per minute
by endpoint group against the proxy's share of the plan's limits, upstream 429s, the clients'
answers by status, lists cut off mid-stream, latency (from each request's scheduled time to the
end of its body) and the answers' ``Age``.

``--redis-outage SECONDS`` stops the Redis for that long, ``--redis-outage-at`` seconds into the
measured phase: the simulation then runs a ``redis-server`` of its own on a free port, without
persistence, terminates it (a crash) and starts it again, empty, on the same port; the measured
phase is then three: before the outage, the outage, and after it.

``--events events_api|webhook`` turns Auth0's events on (the proxies consume the tenant's Events
API, or the tenant's Event Stream pushes to the first proxy's webhook), with lists reconciled
every ``--reconcile`` seconds; ``--churn N`` makes N membership changes a minute in the tenant
during the measured phase and reports how long each took to show at every proxy (bench/churn.py);
``--kill-consumer-at`` kills, that many seconds into the measured phase, the worker holding the
Events API lease (or, with the webhook, a worker of the proxy it delivers to).

Loopback only; it stops every server it started and deletes its Redis keys, whatever fails.
"""

from __future__ import annotations

import argparse
import heapq
import http.client
import math
import os
import queue
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import redis
import requests

from auth0_proxy.core.config import EventsSettings, ProxySettings
from bench.bench import UPSTREAM_LATENCY_SECONDS, start_proxy
from bench.churn import PROBE_LIMIT_SECONDS, Churn
from emulated_tenant import Tenant, TenantServer, demo_tenant, proxy_config
from emulated_tenant.demo import API_AUDIENCE
from emulated_tenant.ratelimit import GROUPS, MANAGEMENT, ORGANIZATION_MEMBERS, PLANS
from scripts.proxy_server import ProxyServer, free_port

PROXIES = 2
WORKERS = 2  # per proxy, gunicorn.conf.py's default
THREADS = 8  # per worker, gunicorn.conf.py's default
REQUEST_TIMEOUT_SECONDS = 60
# A client thread per poll in flight, as many as there are clients (an edge server waits for its
# poll), but no more than this: enough for 10,000 clients' 170 polls/s while the proxy answers
# within seconds; past that the wait for a thread shows in the latency and in the polls not sent.
MAX_THREADS = 1000
WEBHOOK_TOKEN = secrets.token_urlsafe(32)
# The proxies' event counters the report sums (metric name → label in the report).
EVENT_METRICS = {
    "auth0_proxy_events_received_total": "received",
    "auth0_proxy_events_applied_total": "applied",
    "auth0_proxy_events_duplicates_total": "duplicates",
    "auth0_proxy_events_failed_total": "not applied yet (retried)",
    "auth0_proxy_events_stream_reconnects_total": "stream reconnects",
    "auth0_proxy_reconciliations_total": "reconciliations",
    "auth0_proxy_reconciliation_corrections_total": "corrections",
}


@dataclass
class EdgeClient:
    """One edge server: its token, its organization, the proxy it calls, its last ETag."""

    client_id: str
    org: str
    proxy: int
    token: str = ""
    etag: str | None = None


@dataclass(frozen=True)
class Answer:
    """What one poll got. ``status`` 0: no answer at all; ``failure`` names why."""

    due: float  # when it was scheduled (UNIX time)
    started: float  # when a client thread sent it
    status: int
    latency: float  # seconds from ``due`` to the end of the body
    age: float
    cut_off: bool
    org: str
    is_retry: bool  # sent after a 429's Retry-After
    failure: str = ""  # the exception that left the poll without an answer
    client: str = ""  # the client's id


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float

    @property
    def minutes(self) -> float:
        return (self.end - self.start) / 60

    def holds(self, moment: float) -> bool:
        return self.start <= moment < self.end


class Fleet:
    """Edge clients polling on schedule: one thread keeps the schedule, a bounded pool of
    threads sends the polls, each over one kept-alive connection per proxy."""

    def __init__(
        self, clients: Sequence[EdgeClient], proxy_urls: Sequence[str], poll: float, threads: int
    ) -> None:
        self.clients = clients
        self.addresses = [urlsplit(url) for url in proxy_urls]
        self.poll = poll
        self.threads = threads
        self.answers: list[Answer] = []
        self.unsent = 0  # polls due before the end that no thread got to
        self.skipped = 0  # polls a client let pass while its previous one was still in flight
        self._schedule: list[tuple[float, int, bool]] = []  # (due, client index, is a retry)
        self._changed = threading.Condition()
        self._ready: queue.Queue[tuple[float, int, bool] | None] = queue.Queue()
        self._stop_at = 0.0
        self._stopped = False

    def run(self, ramp: float, seconds: float, seed: int) -> float:
        """Poll for ``seconds``, the first polls spread over the first ``ramp`` seconds; returns
        when polling started, once every poll in flight has its answer."""
        senders = [
            threading.Thread(target=self._send_polls, daemon=True) for _ in range(self.threads)
        ]
        for sender in senders:  # before the first poll is due, so none waits for a thread
            sender.start()
        rng = random.Random(seed)
        started = time.time()
        self._stop_at = started + seconds
        with self._changed:
            self._schedule = [
                (started + rng.uniform(0, ramp), n, False) for n in range(len(self.clients))
            ]
            heapq.heapify(self._schedule)
        self._keep_schedule()
        for sender in senders:
            sender.join()
        return started

    def _keep_schedule(self) -> None:
        """Hand each poll to the senders when it is due; at ``stop_at``, count what is left."""
        with self._changed:
            while (now := time.time()) < self._stop_at:
                while self._schedule and self._schedule[0][0] <= now:
                    self._ready.put(heapq.heappop(self._schedule))
                next_due = self._schedule[0][0] if self._schedule else self._stop_at
                self._changed.wait(min(next_due, self._stop_at) - now)
            self._stopped = True
            self.unsent += sum(due < self._stop_at for due, _, _ in self._schedule)
            self._schedule.clear()
        while True:
            try:
                self._ready.get_nowait()
            except queue.Empty:
                break
            self.unsent += 1
        for _ in range(self.threads):
            self._ready.put(None)

    def _plan(self, due: float, index: int, is_retry: bool) -> None:
        if due >= self._stop_at:
            return
        with self._changed:
            if self._stopped:
                self.unsent += 1
            else:
                heapq.heappush(self._schedule, (due, index, is_retry))
                self._changed.notify()

    def _next_poll(self, due: float) -> float:
        """The client's next poll after the one due at ``due``: a period later, or, when its
        poll took longer than that, the first period boundary still ahead (as an edge server
        that waits for its poll lets the polls it missed pass)."""
        next_due = due + self.poll
        missed = math.ceil((min(time.time(), self._stop_at) - next_due) / self.poll)
        if missed > 0:
            with self._changed:
                self.skipped += missed
            next_due += missed * self.poll
        return next_due

    def _send_polls(self) -> None:
        connections = [
            http.client.HTTPConnection(a.hostname, a.port, timeout=REQUEST_TIMEOUT_SECONDS)
            for a in self.addresses
        ]
        try:
            while (poll := self._ready.get()) is not None:
                due, index, is_retry = poll
                client = self.clients[index]
                answer, retry_after = self._poll(connections[client.proxy], client, due, is_retry)
                self.answers.append(answer)  # list.append is atomic
                if not is_retry:
                    self._plan(self._next_poll(due), index, False)
                if answer.status == 429:
                    self._plan(time.time() + retry_after, index, True)
        finally:
            for connection in connections:
                connection.close()

    @staticmethod
    def _poll(
        connection: http.client.HTTPConnection, client: EdgeClient, due: float, is_retry: bool
    ) -> tuple[Answer, float]:
        """One ``GET /users``; the answer and, for a 429, the seconds to wait."""
        started = time.time()
        headers = {"Authorization": f"Bearer {client.token}"}
        if client.etag:
            headers["If-None-Match"] = client.etag
        try:
            response, body = exchange(connection, "/users", headers)
        except (OSError, http.client.HTTPException) as error:
            failure = type(error).__name__
            failed = Answer(
                due,
                started,
                0,
                time.time() - due,
                0.0,
                False,
                client.org,
                is_retry,
                failure,
                client.client_id,
            )
            return failed, 0.0
        ended = time.time()
        cut_off = False
        if response.status == 200:
            cut_off = body is None or not is_json_array(body)
            client.etag = response.getheader("ETag")
        answer = Answer(
            due,
            started,
            response.status,
            ended - due,
            header_seconds(response.getheader("Age"), 0.0),
            cut_off,
            client.org,
            is_retry,
            client=client.client_id,
        )
        return answer, header_seconds(response.getheader("Retry-After"), 1.0)


def exchange(
    connection: http.client.HTTPConnection, path: str, headers: dict[str, str]
) -> tuple[http.client.HTTPResponse, bytes | None]:
    """GET ``path`` over a kept-alive connection; the body is None when the connection broke
    before it ended (the proxy cut the list off). A connection the server closed while idle is
    reopened once; after any failure the connection is closed, so the next poll opens a new one.

    :raise OSError, http.client.HTTPException: no answer at all.
    """
    for attempt in (1, 2):
        reused = connection.sock is not None
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            break
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            connection.close()
            if not reused or attempt == 2:
                raise
        except (OSError, http.client.HTTPException):
            connection.close()  # else it stays mid-request: CannotSendRequest on the next poll
            raise
    try:
        body = response.read()
    except (http.client.IncompleteRead, OSError):
        connection.close()
        return response, None
    if response.will_close:
        connection.close()
    return response, body


def is_json_array(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), list)
    except orjson.JSONDecodeError:
        return False


def header_seconds(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


class OwnRedis:
    """A redis-server of the simulation's own on a free port, without persistence: stopped
    (terminated, as in a crash) and started again, it answers on the same port, empty."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="simulate-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it, and return once it answers (at most 30 s).

        :raise redis.ConnectionError: it did not answer in time.
        """
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", self.workdir]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        for _ in range(300):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise redis.ConnectionError(f"redis-server on port {self.port} did not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def close(self) -> None:
        """Stop it for good, and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class RedisOutage:
    """``redis`` stopped at ``at`` (UNIX time) for ``seconds``, then started again, in a thread
    of its own; when it stopped and when it answered again."""

    redis: OwnRedis
    at: float
    seconds: float
    stopped: float = 0.0
    restarted: float = 0.0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="redis outage", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        time.sleep(max(0.0, self.at - time.time()))
        self.redis.stop()
        self.stopped = time.time()
        print(f"redis-server stopped for {self.seconds:g} s", flush=True)
        time.sleep(max(0.0, self.stopped + self.seconds - time.time()))
        self.redis.start()
        self.restarted = time.time()
        print("redis-server started again, empty", flush=True)


def build_tenant(args: argparse.Namespace) -> tuple[Tenant, list[EdgeClient]]:
    """The demo tenant with ``args.orgs`` organizations of ``args.members`` members and
    ``args.clients`` edge clients, each of one organization (round-robin) calling one proxy."""
    tenant = demo_tenant()
    orgs = [f"org_sim{n:05d}" for n in range(args.orgs)]
    for n, org in enumerate(orgs):
        tenant.add_organization(org, f"sim{n}", f"Simulated Customer {n}")
        tenant.seed_organization(org, args.members, prefix=f"sim{n:05d}")
    clients = []
    for n in range(args.clients):
        # An organization's clients alternate between the proxies, so both serve each list.
        proxy = (n // len(orgs)) % PROXIES
        client = EdgeClient(f"edge-sim{n:05d}", orgs[n % len(orgs)], proxy)
        tenant.add_client(
            client.client_id,
            f"{client.client_id}-secret",
            grants={API_AUDIENCE: ["read:users"]},
            organizations=[client.org],
        )
        clients.append(client)
    return tenant, clients


def delete_keys(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN, then DEL in batches); how many there were."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    return deleted


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def print_upstream(requests: Iterable[dict], phase: Phase, plan: str, share: float) -> None:
    """Upstream calls and 429s per minute by endpoint group, against the proxy's budget."""
    limits = PLANS[plan]
    calls: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for request in requests:
        if not phase.holds(request["time"]):
            continue
        group = request["group"]
        names = {"outside /api/v2"} if group is None else {group, MANAGEMENT}
        for name in names:
            calls[name] += 1
            refused[name] += request["status"] == 429
    minutes = phase.minutes
    print(
        f"{'upstream, by group':<22} {'calls/min':>10} {'429s/min':>9} {'429s':>7}"
        f"   {'budget/min = share x plan':<28} {'calls/budget':>12}"
    )
    for name in [*GROUPS, "outside /api/v2"]:
        limit = limits.get(name)
        if limit is not None:
            budget = share * limit.rate_per_minute
            budget_text = f"{budget:,.0f} = {share:g} x {limit.rate_per_minute:,.0f}"
            ratio = f"{calls[name] / minutes / budget:>12.2f}"
        else:
            budget_text = "(no bucket)" if name != "outside /api/v2" else ""
            ratio = ""
        print(
            f"{name:<22} {calls[name] / minutes:>10,.1f} {refused[name] / minutes:>9,.1f}"
            f" {refused[name]:>7,}   {budget_text:<28} {ratio}"
        )


def print_clients(answers: Sequence[Answer], orgs: int) -> None:
    """The clients' answers: by status, cut off, latency, Age, organizations served."""
    statuses = Counter(answer.status for answer in answers)
    server_errors = sum(count for status, count in statuses.items() if status >= 500)
    others = sum(
        count
        for status, count in statuses.items()
        if status not in (200, 304, 429) and status < 500
    )
    cut_off = sum(answer.cut_off for answer in answers)
    latencies = [answer.latency * 1000 for answer in answers]
    ages = [answer.age for answer in answers]
    lag = [(answer.started - answer.due) * 1000 for answer in answers]
    served = {
        answer.org for answer in answers if answer.status in (200, 304) and not answer.cut_off
    }
    retries = sum(answer.is_retry for answer in answers)
    failures = Counter(answer.failure for answer in answers if answer.failure)
    failure_text = ", ".join(f"{name} {count:,}" for name, count in failures.most_common())
    print(
        f"client answers {len(answers):,} ({retries:,} of them retries after a 429): "
        f"200 {statuses[200]:,}, 304 {statuses[304]:,}, 429 {statuses[429]:,}, "
        f"5xx {server_errors:,}, other {others:,}; lists cut off {cut_off:,}"
    )
    if failures:
        print(f"no answer at all: {statuses[0]:,} ({failure_text})")
    print(
        f"latency p50 {percentile(latencies, 0.5):,.0f} ms, p99 {percentile(latencies, 0.99):,.0f}"
        f" ms; Age p99 {percentile(ages, 0.99):,.0f} s, max {max(ages, default=0):,.0f} s; "
        f"organizations served {len(served):,} of {orgs:,}"
    )
    print(
        f"client threads: p99 wait for a free thread {percentile(lag, 0.99):,.0f} ms "
        "(in the latency; large when every thread waits on the proxy)"
    )
    print_refusals(answers)


def print_refusals(answers: Sequence[Answer]) -> None:
    """How many 429s each client got, and how its retries at ``Retry-After`` were answered."""
    per_client = Counter(answer.client for answer in answers if answer.status == 429)
    retries = Counter(answer.status for answer in answers if answer.is_retry)
    print(
        f"429s per client: at most {max(per_client.values(), default=0):,}; clients with more "
        f"than one {sum(count > 1 for count in per_client.values()):,}; retries at Retry-After "
        f"{sum(retries.values()):,}: answered 200/304 {retries[200] + retries[304]:,}, "
        f"429 again {retries[429]:,}"
    )


def print_churn(churn: Churn) -> None:
    """How long each membership change took to show at every proxy, by kind."""
    print(f"churn: {len(churn.changes):,} changes in the tenant, each probed at every proxy")
    for kind in ("removal", "addition"):
        latencies = [
            latency
            for change in churn.changes
            if change.kind == kind
            for latency in change.latencies
        ]
        seen = [latency for latency in latencies if latency is not None]
        shown = (
            f"p50 {percentile(seen, 0.5):.2f} s, p99 {percentile(seen, 0.99):.2f} s, "
            f"max {max(seen):.2f} s"
            if seen
            else "never"
        )
        print(
            f"  {kind:<8} shown everywhere (list, profile, /api/v2, feed) after: {shown};"
            f" not within {PROBE_LIMIT_SECONDS} s: {len(latencies) - len(seen)} of"
            f" {len(latencies)} (change, proxy) pairs"
        )


class Killing:
    """At ``at``, SIGKILL the worker that consumes events: the Events API lease's holder (read
    off the proxies' metrics), or a worker of the proxy the webhook delivers to."""

    def __init__(self, proxies: Sequence[ProxyServer], source: str, at: float):
        self.proxies = proxies
        self.source = source
        self.at = at
        self.killed = ""

    def start(self) -> None:
        threading.Thread(target=self._run, name="kill consumer", daemon=True).start()

    def _run(self) -> None:
        time.sleep(max(0.0, self.at - time.time()))
        pid = self._lease_holder() if self.source == "events_api" else self._webhook_worker()
        if pid is None:
            self.killed = "no consumer found to kill"
            return
        os.kill(pid, signal.SIGKILL)
        self.killed = f"worker {pid} ({self.source} consumer), {time.time() - self.at:.0f} s late"
        print(f"killed {self.killed}", flush=True)

    def _lease_holder(self) -> int | None:
        for proxy in self.proxies:
            text = requests.get(proxy.metrics_url, timeout=10).text
            held = re.search(
                r'auth0_proxy_events_lease_held\{holder="[^"]*:(\d+):\w+"\} 1\.0', text
            )
            if held:
                return int(held.group(1))
        return None

    def _webhook_worker(self) -> int | None:
        master = self.proxies[0].process.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return int(children[0]) if children else None


def event_counters(proxies: Sequence[ProxyServer]) -> dict[str, float]:
    """The event counters of every proxy's metrics, summed over labels and proxies."""
    totals: Counter[str] = Counter()
    for proxy in proxies:
        for line in requests.get(proxy.metrics_url, timeout=10).text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in EVENT_METRICS:
                totals[name] += float(line.rsplit(" ", 1)[1])
    return dict(totals)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="edge clients (N)")
    parser.add_argument("--orgs", type=int, default=200, help="organizations (M)")
    parser.add_argument("--members", type=int, default=100, help="members per organization (K)")
    parser.add_argument("--poll", type=float, default=60, help="seconds between a client's polls")
    parser.add_argument("--minutes", type=float, default=4, help="length of the measured phase")
    parser.add_argument("--ramp", type=float, help="seconds the clients join over (one poll)")
    parser.add_argument(
        "--warmup", type=float, help="seconds before the measured phase (default: see above)"
    )
    parser.add_argument("--share", type=float, default=0.5, help="the proxy's share of the plan")
    parser.add_argument("--plan", choices=sorted(PLANS), default="professional")
    parser.add_argument(
        "--threads",
        type=int,
        help="polls in flight at most (default: one per client, at most 1,000)",
    )
    parser.add_argument(
        "--upstream-latency-ms", type=float, default=UPSTREAM_LATENCY_SECONDS * 1000
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--redis-outage",
        type=float,
        default=0,
        metavar="SECONDS",
        help="stop a Redis of the simulation's own for this long (not --redis-url's)",
    )
    parser.add_argument(
        "--redis-outage-at",
        type=float,
        default=30,
        metavar="SECONDS",
        help="when the outage starts, in seconds into the measured phase (default 30)",
    )
    parser.add_argument(
        "--events", choices=("off", "events_api", "webhook"), default="off", help="events.source"
    )
    parser.add_argument(
        "--reconcile",
        type=int,
        default=EventsSettings.reconcile_seconds,
        help="events.reconcile_seconds",
    )
    parser.add_argument("--churn", type=float, default=0, help="membership changes a minute")
    parser.add_argument(
        "--kill-consumer-at",
        type=float,
        metavar="SECONDS",
        help="kill the event consumer's worker this long into the measured phase (default:"
        " halfway, with events on)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.kill_consumer_at is None and args.events != "off":
        args.kill_consumer_at = args.minutes * 30
    if args.ramp is None:
        args.ramp = args.poll
    if args.warmup is None:
        args.warmup = max(args.ramp, first_listing_seconds(args)) + args.poll
    if args.threads is None:
        args.threads = min(args.clients, MAX_THREADS)
    if min(args.clients, args.orgs, args.members) < 1 or args.poll <= 0 or args.minutes <= 0:
        parser.error("--clients, --orgs, --members must be >= 1; --poll, --minutes > 0")
    if args.redis_outage and not 0 <= args.redis_outage_at < args.minutes * 60 - args.redis_outage:
        parser.error("the Redis outage must start and end within the measured phase (--minutes)")
    return args


def first_listing_seconds(args: argparse.Namespace) -> float:
    """How long the proxy's share of the plan takes to list every organization once."""
    pages = args.orgs * math.ceil(args.members / ProxySettings.page_size)
    per_minute = args.share * PLANS[args.plan][ORGANIZATION_MEMBERS].rate_per_minute
    return 60 * pages / per_minute


@dataclass(frozen=True)
class Run:
    """A finished simulation: its phases, the fleet (answers, polls not sent), the tenant's
    request log, and the Redis key prefix it used (its keys are deleted by then)."""

    phases: list[Phase]
    fleet: Fleet
    requests: list[dict]
    redis_prefix: str
    churn: Churn | None = None
    event_counts: dict[str, float] | None = None
    killed: str = ""


def simulate(args: argparse.Namespace) -> Run:
    """Seed the tenant, start it and the proxies, run the fleet, stop everything.

    :raise redis.ConnectionError: no Redis at ``args.redis_url`` (or the own one did not start).
    :raise FileNotFoundError: ``--redis-outage`` without a redis-server to run.
    """
    prefix = f"simulate-{secrets.token_hex(4)}:"
    print(f"seeding {args.orgs:,} organizations x {args.members} members, {args.clients:,} clients")
    tenant, clients = build_tenant(args)
    tenant.latency = args.upstream_latency_ms / 1000
    with ExitStack() as running:  # every server stops and the keys go, whatever fails
        own_redis = None
        if args.redis_outage:
            binary = shutil.which("redis-server")
            if binary is None:
                raise FileNotFoundError("--redis-outage runs a redis-server: none is installed")
            own_redis = OwnRedis(binary)
            running.callback(own_redis.close)
            own_redis.start()
            redis_url = own_redis.url
        else:
            redis_url = args.redis_url
            store = redis.Redis.from_url(redis_url)
            store.ping()
            running.callback(delete_keys, store, prefix)
        tenant_server = running.enter_context(TenantServer(tenant))
        print(f"signing {args.clients:,} edge tokens, starting {PROXIES} proxies")
        for client in clients:
            client.token = tenant.issue_token(client.client_id, API_AUDIENCE, scope="read:users")
        config = proxy_config(tenant)
        config["clients"] = {client.client_id: client.org for client in clients}
        config["proxy"] = {
            "cache_type": "redis",
            "cache_redis_url": redis_url,
            "cache_key_prefix": prefix,
        }
        config["budget"] = {"plan": args.plan, "share": args.share}  # the proxy's own defaults
        if args.events != "off":
            config["events"] = {
                "source": args.events,
                "webhook_token": WEBHOOK_TOKEN,
                "reconcile_seconds": args.reconcile,
            }
        proxies: list[ProxyServer] = []
        for _ in range(PROXIES):
            proxies.append(start_proxy(tenant_server, config, WORKERS, THREADS))
            running.callback(proxies[-1].stop)
        if args.events == "webhook":  # as one Event Stream to one address (a load balancer's)
            authorization = {"method": "bearer", "token": WEBHOOK_TOKEN}
            stream = tenant.add_event_stream(f"{proxies[0].url}/events/auth0", authorization)
            running.callback(stream.stop)
        fleet = Fleet(clients, [proxy.url for proxy in proxies], args.poll, args.threads)
        churn = None
        if args.churn:
            tokens = {client.org: client.token for client in reversed(clients)}
            churn = Churn(tenant, [proxy.url for proxy in proxies], tokens, args.churn, args.seed)
        tenant.enforce_plan(args.plan)
        tenant.reset_counts()
        print(
            f"{args.clients:,} clients polling every {args.poll:g} s through {PROXIES} proxies "
            f"({WORKERS} workers x {THREADS} threads each, one Redis), plan {args.plan}: "
            f"joining over {args.ramp:g} s, {args.warmup:g} s warm-up, "
            f"then {args.minutes:g} min measured"
            + (
                f", Redis stopped {args.redis_outage_at:g} s into it for {args.redis_outage:g} s"
                if own_redis
                else ""
            )
        )
        measured_at = time.time() + args.warmup
        if churn is not None:
            churn.start(measured_at, measured_at + args.minutes * 60)
        killing = None
        if args.kill_consumer_at is not None and args.events != "off":
            killing = Killing(proxies, args.events, measured_at + args.kill_consumer_at)
            killing.start()
        outage = None
        if own_redis is not None:  # the fleet starts now: the outage is timed from here
            at = time.time() + args.warmup + args.redis_outage_at
            outage = RedisOutage(own_redis, at, args.redis_outage)
            outage_thread = outage.start()
        started = fleet.run(args.ramp, args.warmup + args.minutes * 60, args.seed)
        if outage is not None:
            outage_thread.join()
        if churn is not None:
            churn.join()
        event_counts = event_counters(proxies) if args.events != "off" else None
        requests = list(tenant.requests)
    ramp_end = started + args.warmup
    end = ramp_end + args.minutes * 60
    phases = [Phase("warm-up", started, ramp_end)]
    if outage is None:
        phases.append(Phase("measured", ramp_end, end))
    else:
        phases += [
            Phase("measured, before the outage", ramp_end, outage.stopped),
            Phase("outage: Redis down", outage.stopped, outage.restarted or end),
        ]
        if outage.restarted:  # else it did not start again (its thread said why)
            phases.append(Phase("after: Redis back, empty", outage.restarted, end))
    killed = killing.killed if killing is not None else ""
    return Run(phases, fleet, requests, prefix, churn, event_counts, killed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run = simulate(args)
    except redis.ConnectionError as error:
        where = "of its own" if args.redis_outage else f"at {args.redis_url}"
        print(f"make simulate needs a Redis {where}: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"make simulate: {error}", file=sys.stderr)
        return 2
    for phase in run.phases:
        print()
        print(f"== {phase.name}: {phase.minutes * 60:.0f} s ==")
        print_upstream(run.requests, phase, args.plan, args.share)
        answers = [answer for answer in run.fleet.answers if phase.holds(answer.due)]
        print_clients(answers, args.orgs)
    if run.churn is not None:
        print()
        print_churn(run.churn)
    if run.event_counts is not None:
        counts = ", ".join(
            f"{label} {run.event_counts.get(name, 0):,.0f}" for name, label in EVENT_METRICS.items()
        )
        print(f"events ({args.events}, reconcile_seconds {args.reconcile}): {counts}")
        print(f"killed mid-run: {run.killed or 'nothing'}")
    print(
        f"\npolls let pass while the client's previous poll was in flight: {run.fleet.skipped:,};"
        f" due before the end but never sent (every client thread busy): {run.fleet.unsent:,}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
