"""The proxy's Prometheus metrics: what it answers, what it costs Auth0, how its caches serve.

Under gunicorn every worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode; gunicorn.conf.py sets it before this module is first
imported, as the mode requires) and the master serves their sum on ``METRICS_BIND``, apart
from the edge clients' listener and its auth. In a single process (``flask run``, the tests) the
samples stay in memory, and ``render`` reads them there.

Label values are bounded: routes and Auth0 endpoints are templates, clients are those of the
config (any other is ``other``), refusals are Auth0 error codes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

# A multiprocess directory that is not there (a variable left from gunicorn's environment in a
# shell, say) would fail the first metric: samples then stay in this process.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not os.path.isdir(
    os.environ["PROMETHEUS_MULTIPROC_DIR"]
):
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase

from .version import __version__

if TYPE_CHECKING:
    from .scope import Freshness

P = ParamSpec("P")
R = TypeVar("R")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
AGE_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 86400)

REQUESTS = Counter(
    "auth0_proxy_requests_total",
    "Requests answered, by route, method, status and client.",
    ["route", "method", "status", "client"],
)
REQUEST_SECONDS = Histogram(
    "auth0_proxy_request_duration_seconds",
    "Seconds from a request's arrival to its answer's headers, by route.",
    ["route"],
    buckets=SECONDS,
)
IN_FLIGHT = Gauge(
    "auth0_proxy_requests_in_flight",
    "Requests being answered now, streamed bodies included.",
    multiprocess_mode="livesum",
)
REFUSALS = Counter(
    "auth0_proxy_refusals_total",
    "Requests refused, by status and Auth0 error code (rate limits: by the limit too).",
    ["status", "code"],
)
UPSTREAM_CALLS = Counter(
    "auth0_proxy_upstream_calls_total",
    "Calls to Auth0, by endpoint template and status (0: no answer: timeout or broken).",
    ["endpoint", "status"],
)
UPSTREAM_SECONDS = Histogram(
    "auth0_proxy_upstream_duration_seconds",
    "Seconds each call to Auth0 took, by endpoint template.",
    ["endpoint"],
    buckets=SECONDS,
)
UPSTREAM_RETRIES = Counter(
    "auth0_proxy_upstream_retries_total",
    "Calls to Auth0 sent again, by endpoint group and why (429, 5xx, connection).",
    ["group", "reason"],
)
UPSTREAM_RATE_LIMITED = Counter(
    "auth0_proxy_upstream_rate_limited_total",
    "429 answers from Auth0, by endpoint group.",
    ["group"],
)
BUDGET_SPENT = Counter(
    "auth0_proxy_budget_spent_total",
    "Calls paid from the upstream budget, by bucket (endpoint group or the whole API).",
    ["bucket"],
)
BUDGET_LEFT = Gauge(
    "auth0_proxy_budget_left",
    "Calls left in the upstream budget's bucket after the last spend (below 0: queued).",
    ["bucket"],
    multiprocess_mode="mostrecent",
)
BUDGET_REFUSED = Counter(
    "auth0_proxy_budget_refused_total",
    "Calls the upstream budget refused, by bucket and what they were for.",
    ["bucket", "rank"],
)
CACHE_ANSWERS = Counter(
    "auth0_proxy_cache_answers_total",
    "Answers made from the cache (hit, stale) or from Auth0 now (miss); not_modified: 304.",
    ["result"],
)
STALE_AGE = Histogram(
    "auth0_proxy_stale_answer_age_seconds",
    "The Age of the answers served stale (while Auth0 or the budget could not refresh them).",
    buckets=AGE_SECONDS,
)
EVENTS_RECEIVED = Counter(
    "auth0_proxy_events_received_total",
    "Auth0 events received (webhook or Events API), by type.",
    ["type"],
)
EVENTS_APPLIED = Counter(
    "auth0_proxy_events_applied_total",
    "Auth0 events applied to the shared cache, by type.",
    ["type"],
)
EVENTS_DUPLICATES = Counter(
    "auth0_proxy_events_duplicates_total", "Auth0 events received again (same id), not reapplied."
)
EVENTS_FAILED = Counter(
    "auth0_proxy_events_failed_total",
    "Auth0 events that could not be applied yet (Auth0 or the budget refused a confirming"
    " read); redelivered (webhook) or read again (Events API).",
)
EVENTS_LAG = Histogram(
    "auth0_proxy_events_lag_seconds",
    "From an event's time to its application to the shared cache.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
EVENTS_STREAM_CONNECTED = Gauge(
    "auth0_proxy_events_stream_connected",
    "1 while a worker of the instance reads Auth0's Events API stream.",
    multiprocess_mode="livemax",  # a worker that exits (or is killed) reads no more
)
EVENTS_STREAM_RECONNECTS = Counter(
    "auth0_proxy_events_stream_reconnects_total",
    "Times the Events API stream was opened again after it ended or failed.",
)
EVENTS_LEASE_HELD = Gauge(
    "auth0_proxy_events_lease_held",
    "1 in the process holding the deployment's Events API lease (labelled by the holder).",
    ["holder"],
    multiprocess_mode="livemax",
)
RECONCILIATIONS = Counter(
    "auth0_proxy_reconciliations_total",
    "Member lists read again from Auth0 with events on (every reconcile_seconds, or after a"
    " lost stream).",
)
RECONCILIATION_CORRECTIONS = Counter(
    "auth0_proxy_reconciliation_corrections_total",
    "Members added, removed or updated by a reconciliation: changes no event had applied.",
)
CLIENT_GRANTS_REFRESHES = Counter(
    "auth0_proxy_client_grants_refreshes_total",
    "Reads of Auth0's client grants for the clients map (client_grants.enabled), by outcome:"
    " ok, or failed (the last map stays in use).",
    ["outcome"],
)
CLIENT_GRANTS_CHANGES = Counter(
    "auth0_proxy_client_grants_changes_total",
    "Client-organization pairs a read of Auth0's client grants added to or removed from the"
    " clients map.",
    ["change"],
)
CLIENT_GRANTS_LOOKUPS = Counter(
    "auth0_proxy_client_grants_lookups_total",
    "Clients the map did not know, by what came of it: found or not_found in Auth0, failed,"
    " or limited (another lookup had this interval's turn).",
    ["outcome"],
)
CLIENT_GRANTS_AGE = Gauge(
    "auth0_proxy_client_grants_age_seconds",
    "How old the client grants map in use is: seconds since its read of Auth0 began (the"
    " oldest of the live workers').",
    multiprocess_mode="livemax",
)
CLIENT_GRANTS_CLIENTS = Gauge(
    "auth0_proxy_client_grants_clients",
    "Clients the map read from Auth0's client grants lets act for an organization.",
    multiprocess_mode="livemax",
)
COALESCED_WAITS = Counter(
    "auth0_proxy_cache_coalesced_waits_total",
    "Times a request waited for another's fetch of the same thing instead of calling Auth0.",
)
CREDENTIAL_FETCHES = Counter(
    "auth0_proxy_credential_fetches_total",
    "Fetches of the management token and of the signing keys (JWKS), by outcome.",
    ["credential", "outcome"],
)

# A gauge's multiprocess mode says how the processes' files are joined. A worker's file holds, at
# 0, every value the master had made before forking it (prometheus-client starts them afresh):
# a gauge the master alone sets is read by its maximum, so no worker's 0 lowers it; the store's
# is set by each worker that uses the store, never by the master, and read by the lowest of the
# live processes' (a worker that has exited no longer counts), so one failing worker shows.
BUILD_INFO = Gauge(
    "auth0_proxy_build_info",
    "Always 1: the proxy's version and the Python it runs on.",
    ["version", "python"],
    multiprocess_mode="max",
)
STORE_UP = Gauge(
    "auth0_proxy_store_up",
    "1 while the shared store (the cache's backend) answers, 0 while it fails: the lowest of "
    "the workers that have used it.",
    ["backend"],
    multiprocess_mode="livemin",
)
STORE_FAILING_SINCE = Gauge(
    "auth0_proxy_store_failing_since_timestamp_seconds",
    "When the shared store began to fail (Unix time), 0 while it answers: the latest of the "
    "live workers'; time() minus it is how long the outage has lasted.",
    ["backend"],
    multiprocess_mode="livemax",
)
CONFIG_RELOADS = Counter(
    "auth0_proxy_config_reload_total",
    "Reloads of the configuration (SIGHUP), by outcome: ok, or failed (the running one stays).",
    ["outcome"],
)
CONFIG_LAST_RELOAD = Gauge(
    "auth0_proxy_config_last_reload_timestamp_seconds",
    "When the configuration was last reloaded (Unix time; 0: not since the proxy started).",
    multiprocess_mode="max",
)
# prometheus-client's process collector reads the one process that serves the metrics (the
# master); these are each worker's own, sampled by the worker, summed over those alive.
PROCESS_CPU = Counter(
    "auth0_proxy_process_cpu_seconds_total",
    "CPU time (user and system) the workers have used, those that exited included.",
)
PROCESS_MEMORY = Gauge(
    "auth0_proxy_process_resident_memory_bytes",
    "Resident memory of the live workers, together.",
    multiprocess_mode="livesum",
)
PROCESS_OPEN_FDS = Gauge(
    "auth0_proxy_process_open_fds",
    "Open file descriptors of the live workers, together (sockets to clients and upstream).",
    multiprocess_mode="livesum",
)
PROCESS_SAMPLE_SECONDS = 10
_sampled_pid: int | None = None  # the process whose sampling thread runs
_sampling_mutex = threading.Lock()
BUILD_INFO.labels(__version__, platform.python_version()).set(1)
for _outcome in ("ok", "failed"):
    CONFIG_RELOADS.labels(_outcome)  # both at 0 from the start, so increase() sees the first


# Methods that are labels of their own; any other (gunicorn accepts made-up ones) is "other",
# so a caller cannot add series at will.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def labelled(metric: MetricWrapperBase) -> Callable[..., MetricWrapperBase]:
    """``metric.labels``, each set of values looked up once: prometheus-client takes a lock
    and checks the values on every call, for a child that never changes (label values are
    bounded, so the children kept are too)."""
    children: dict[tuple, MetricWrapperBase] = {}

    def child(*values: str) -> MetricWrapperBase:
        found = children.get(values)
        if found is None:
            found = children[values] = metric.labels(*values)
        return found

    return child


# What every request observes, looked up once per set of values.
_request_counter = labelled(REQUESTS)
_request_seconds = labelled(REQUEST_SECONDS)
_cache_answer = labelled(CACHE_ANSWERS)


def observe_answer(route: str, method: str, status: int, client: str, seconds: float) -> None:
    method = method if method in METHODS else "other"
    _request_counter(route, method, str(status), client).inc()
    _request_seconds(route).observe(seconds)


def observe_cache(freshness: Freshness | None, status: int) -> None:
    """Count an answer by its freshness (recorded by the views that answer from the cache):
    fetched for the request (no ``ttl``), stale (a negative one), or a hit."""
    if status == 304:
        _cache_answer("not_modified").inc()
    elif freshness is None:
        return
    elif freshness.ttl is None:
        _cache_answer("miss").inc()
    elif freshness.ttl < 0:
        _cache_answer("stale").inc()
        STALE_AGE.observe(freshness.age)
    else:
        _cache_answer("hit").inc()


def observe_upstream(method: str, template: str, status: int, seconds: float) -> None:
    endpoint = f"{method} {template}"
    UPSTREAM_CALLS.labels(endpoint, str(status)).inc()
    UPSTREAM_SECONDS.labels(endpoint).observe(seconds)


def fetch_of(credential: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count each call of the decorated fetch of ``credential``, and whether it succeeded."""

    def decorate(fetch: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fetch)
        def counted(*args: P.args, **kwargs: P.kwargs) -> R:
            outcome = "failed"
            try:
                result = fetch(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                CREDENTIAL_FETCHES.labels(credential, outcome).inc()

        return counted

    return decorate


def observe_store(backend: str, up: bool) -> None:
    """The shared store (``backend``: its cache type) answers again, or fails; set by each
    process on its first use of the store and at each change, never before (a worker that has
    not used it says nothing, rather than a 0 or a 1 it has not seen)."""
    STORE_UP.labels(backend).set(1 if up else 0)
    STORE_FAILING_SINCE.labels(backend).set(0 if up else time.time())


def observe_reload(accepted: bool) -> None:
    """A SIGHUP's reload of the configuration, in gunicorn's master (whose samples the master
    serves with the workers')."""
    CONFIG_RELOADS.labels("ok" if accepted else "failed").inc()
    if accepted:
        CONFIG_LAST_RELOAD.set_to_current_time()


def render() -> tuple[bytes, str]:
    """The exposition text of every process's samples (or of this one's), and its type."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry), CONTENT_TYPE_LATEST


# What gunicorn's master does (gunicorn.conf.py's hooks call these).


def serve(bind: str) -> None:
    """Serve every worker's samples summed at ``http://<bind>/metrics``, from a thread of the
    process that calls this (gunicorn's master)."""
    host, port = parse_bind(bind)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])
    start_http_server(port, addr=host, registry=registry)


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9100`` for IPv6) as its host and port.

    :raise ValueError: not such a pair.
    """
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"METRICS_BIND must be host:port, e.g. 127.0.0.1:9100, not {bind!r}")
    return host.strip("[]"), int(port)


def worker_exited(pid: int) -> None:
    """Drop the live gauges of a worker that exited (its counters still count)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def remove_directory(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def sample_process(cpu_before: float = 0.0) -> float:
    """This process's CPU (added since ``cpu_before``), memory and open files into the process
    metrics; the CPU seconds it has used now. Linux's /proc; elsewhere memory and files are
    left out."""
    times = os.times()
    cpu = times.user + times.system
    PROCESS_CPU.inc(max(0.0, cpu - cpu_before))
    with contextlib.suppress(OSError):
        with open("/proc/self/statm") as statm:
            PROCESS_MEMORY.set(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
        PROCESS_OPEN_FDS.set(len(os.listdir("/proc/self/fd")))
    return cpu


def start_process_sampling() -> None:
    """Sample this process now and every ``PROCESS_SAMPLE_SECONDS``, in a thread of its own:
    one per process, however many apps it builds."""
    global _sampled_pid
    with _sampling_mutex:
        if _sampled_pid == os.getpid():
            return
        _sampled_pid = os.getpid()

    def sample_on() -> None:
        cpu = 0.0
        while True:
            cpu = sample_process(cpu)
            time.sleep(PROCESS_SAMPLE_SECONDS)

    threading.Thread(target=sample_on, name="process metrics", daemon=True).start()
