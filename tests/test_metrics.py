"""Prometheus metrics: summed over gunicorn's workers, served by the master on their own address.

What each counter counts is checked against what really happened: the requests sent, the
tenant's own count of the calls it answered.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from urllib.parse import quote

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from auth0_proxy.core import metrics
from tests.support import MEMBERS

PERSISTENT = 1000  # times: a fault that lasts the whole test
REQUESTS_TOTAL = "auth0_proxy_requests_total"
BUILD_INFO = "auth0_proxy_build_info"
STORE_UP = "auth0_proxy_store_up"


def scrape(url: str, show: bool = False) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition at ``url``: (name, labels) to value (``show``: and print
    the exposition, histogram buckets left out, for ``pytest -s``)."""
    answer = requests.get(url, timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    if show:
        lines = [line for line in answer.text.splitlines() if "_bucket{" not in line]
        print(f"\nGET {url} (histogram buckets left out):\n" + "\n".join(lines))
    return parse(answer.text)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (n, have), value in samples.items() if n == name and wanted <= have)


@pytest.fixture
def metered(start_proxy):
    """A proxy of 3 workers, answers cached for a minute, metrics on their own port."""
    return start_proxy(workers=3, threads=4, cache_ttl_seconds=60, metrics_per_client=True)


def get(proxy, path: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with requests.Session() as session:  # a connection each: the workers share the requests
        return session.get(f"{proxy.url}{path}", headers=headers, timeout=10)


def test_requests_are_counted_over_every_worker(metered, make_token, tenant):
    token = make_token()
    member = quote(sorted(tenant.member_ids("org_acme"))[0], safe="")
    paths = ["/users"] * 20 + [f"/users/{member}"] * 10 + ["/users/auth0%7Cnobody"] * 5
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda path: get(metered, path, token).status_code, paths))
    assert statuses.count(200) == 30 and statuses.count(404) == 5
    assert get(metered, "/users").status_code == 401
    pids = {r["pid"] for r in metered.log_records() if r.get("path") == "/users"}
    assert len(pids) > 1, "the requests were spread over several workers"

    samples = scrape(metered.metrics_url, show=True)
    assert total(samples, REQUESTS_TOTAL, route="/users", status="200", client="edge-acme") == 20
    assert total(samples, REQUESTS_TOTAL, route="/users/<id:user_id>", status="200") == 10
    assert total(samples, REQUESTS_TOTAL, route="/users/<id:user_id>", status="404") == 5
    assert total(samples, REQUESTS_TOTAL, route="/users", status="401", client="") == 1
    assert total(samples, "auth0_proxy_request_duration_seconds_count", route="/users") == 21
    assert total(samples, "auth0_proxy_refusals_total", status="404", code="inexistent_user") == 5
    assert total(samples, "auth0_proxy_refusals_total", status="401", code="invalid_token") == 1
    assert total(samples, "auth0_proxy_requests_in_flight") == 0
    # What the proxy counted upstream is what the tenant answered.
    upstream = total(samples, "auth0_proxy_upstream_calls_total")
    assert upstream == len(tenant.requests) > 0
    assert total(samples, "auth0_proxy_upstream_calls_total", endpoint="POST /oauth/token") == 1
    assert total(samples, "auth0_proxy_credential_fetches_total", credential="jwks") == 1
    fetches = total(samples, "auth0_proxy_credential_fetches_total", credential="management_token")
    assert fetches == 1
    members = "GET /api/v2/organizations/{id}/members"
    assert total(samples, "auth0_proxy_upstream_calls_total", endpoint=members, status="200") >= 1
    # Each call to the Management API was paid from the budget: its group's and the whole API's.
    spent = total(samples, "auth0_proxy_budget_spent_total", bucket="management")
    assert spent == total(samples, "auth0_proxy_upstream_calls_total") - 2  # token, JWKS
    assert ("auth0_proxy_budget_left", frozenset({("bucket", "management")})) in samples
    # The cache answered most: hits, plus the misses that fetched.
    hits = total(samples, "auth0_proxy_cache_answers_total", result="hit")
    misses = total(samples, "auth0_proxy_cache_answers_total", result="miss")
    assert hits + misses == 30 and hits >= 20


def test_metrics_are_not_on_the_public_listener_and_need_no_token(metered, make_token):
    public = get(metered, "/metrics", make_token())
    assert public.status_code == 404 and public.json()["statusCode"] == 404
    assert "auth0_proxy_requests_total" not in public.text
    assert requests.get(metered.metrics_url, timeout=5).status_code == 200
    assert metered.metrics_url.startswith("http://127.0.0.1:")


def test_a_workers_counts_outlive_it_and_its_live_gauge_goes(metered, make_token):
    token = make_token()
    for _ in range(12):
        assert get(metered, "/users", token).status_code == 200
    before = scrape(metered.metrics_url)
    counted = total(before, REQUESTS_TOTAL, route="/users")
    victim = next(r["pid"] for r in metered.log_records() if r.get("path") == "/users")
    os.kill(victim, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while metered.log_text().count("Worker ready (pid:") < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = scrape(metered.metrics_url)
    assert total(after, REQUESTS_TOTAL, route="/users") == counted
    live = {name for name in os.listdir(metered.metrics_dir) if name.startswith("gauge_livesum")}
    workers = set(re.findall(r"Worker ready \(pid: (\d+)\)", metered.log_text())) - {str(victim)}
    workers.add(str(metered.process.pid))  # the master's (it made the gauges, at 0)
    assert live == {f"gauge_livesum_{pid}.db" for pid in workers}  # none of the victim's


def test_the_build_and_the_stores_state_are_served(metered, make_token):
    assert get(metered, "/users", make_token()).status_code == 200  # a worker uses the store
    samples = scrape(metered.metrics_url, show=True)
    build = {labels: value for (name, labels), value in samples.items() if name == BUILD_INFO}
    python = platform.python_version()  # the tests' interpreter runs gunicorn too
    assert build == {frozenset({("version", version("auth0-m2m-proxy")), ("python", python)}): 1}
    assert samples[(STORE_UP, frozenset({("backend", "filesystem")}))] == 1


def test_a_store_outage_shows_in_the_gauge_and_in_readyz(start_proxy, make_token):
    """Redis down: the answers still come (from Auth0 directly), the gauge and /readyz say why."""
    proxy = start_proxy(workers=2, cache_type="redis", cache_redis_url="redis://127.0.0.1:1/0")
    assert get(proxy, "/users", make_token()).status_code == 200
    ready = get(proxy, "/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "store": "unavailable"}
    samples = scrape(proxy.metrics_url)
    assert samples[(STORE_UP, frozenset({("backend", "redis")}))] == 0
    since = samples[
        ("auth0_proxy_store_failing_since_timestamp_seconds", frozenset({("backend", "redis")}))
    ]
    assert 0 < time.time() - since < 60  # the outage began with this test's first request


def test_no_metrics_where_metrics_bind_is_empty(start_proxy, make_token):
    proxy = start_proxy(env={"METRICS_BIND": ""})
    assert get(proxy, "/users", make_token()).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(proxy.metrics_url, timeout=2)


def test_stale_answers_are_counted_with_their_age(make_app, call, make_token, tenant, clock):
    """In one process the samples stay in memory, where ``render`` reads them."""
    proxy = make_app(cache_ttl_seconds=1, failure_cooldown_seconds=0, retry_budget_seconds=0)
    token = make_token()
    assert call("/users", token, via=proxy).status_code == 200
    before = parse(metrics.render()[0].decode())
    clock.advance(2.2)
    tenant.inject_fault(MEMBERS, status=503, times=PERSISTENT)
    stale = call("/users", token, via=proxy)
    assert stale.status_code == 200 and int(stale.headers["Age"]) >= 2
    after = parse(metrics.render()[0].decode())

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("auth0_proxy_cache_answers_total", result="stale") == 1
    assert delta("auth0_proxy_stale_answer_age_seconds_count") == 1
    assert delta("auth0_proxy_stale_answer_age_seconds_sum") >= 2


def test_auth0s_failures_and_retries_are_counted(make_app, call, make_token, tenant):
    proxy = make_app(failure_cooldown_seconds=0, retry_budget_seconds=2)
    token = make_token()
    assert call("/users", token, via=proxy).status_code == 200  # the token and keys are fetched
    before = parse(metrics.render()[0].decode())
    tenant.inject_fault(MEMBERS, status=503, times=1)
    assert call("/users", token, via=proxy).status_code == 200  # the retry succeeds
    after = parse(metrics.render()[0].decode())
    members = "GET /api/v2/organizations/{id}/members"

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("auth0_proxy_upstream_calls_total", endpoint=members, status="503") == 1
    assert delta("auth0_proxy_upstream_calls_total", endpoint=members, status="200") == 1
    assert delta("auth0_proxy_upstream_retries_total", reason="5xx") == 1


def test_waits_for_anothers_fetch_are_counted(make_app, call, make_token, tenant):
    proxy = make_app(cache_ttl_seconds=60)
    tenant.latency = 0.3
    token = make_token()
    before = parse(metrics.render()[0].decode())
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: call("/users", token, via=proxy), range(4)))
    assert {a.status_code for a in answers} == {200}
    after = parse(metrics.render()[0].decode())
    waits = total(after, "auth0_proxy_cache_coalesced_waits_total") - total(
        before, "auth0_proxy_cache_coalesced_waits_total"
    )
    assert waits >= 1
    assert tenant.counts[MEMBERS] == 1


def test_rate_limited_refusals_name_the_limit(make_app, call, make_token):
    limits = {"client": {"requests": {"per_minute": 0.001, "burst": 1}}}
    proxy = make_app(cache_ttl_seconds=60, rate_limits=limits)
    before = parse(metrics.render()[0].decode())
    token = make_token()
    assert [call("/users", token, via=proxy).status_code for _ in range(3)] == [200, 429, 429]
    after = parse(metrics.render()[0].decode())
    labels = {"status": "429", "code": "rate_limit_requests"}
    refused = total(after, "auth0_proxy_refusals_total", **labels)
    assert refused - total(before, "auth0_proxy_refusals_total", **labels) == 2


def test_made_up_methods_add_no_series(make_app):
    """gunicorn passes any method of capital letters on: a label of their own for each would
    let anyone, without a token, fill the workers' memory and the scraper."""
    proxy = make_app()
    client = proxy.test_client()
    before = parse(metrics.render()[0].decode())
    for n in range(3):
        client.open("/users", method=f"ZZZ{n}X")
    after = parse(metrics.render()[0].decode())
    methods = {dict(labels)["method"] for name, labels in after if name == REQUESTS_TOTAL}
    assert not any(method.startswith("ZZZ") for method in methods)
    other = total(after, REQUESTS_TOTAL, method="other") - total(
        before, REQUESTS_TOTAL, method="other"
    )
    assert other == 3


def test_a_missing_multiprocess_directory_leaves_the_samples_in_the_process(tmp_path):
    """A PROMETHEUS_MULTIPROC_DIR left in a shell's environment must not break check-config or
    flask run."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "gone")}
    script = "import auth0_proxy.core.metrics as m; m.REQUESTS.labels('/', 'GET', '200', '').inc()"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    assert not (tmp_path / "gone").exists()


def test_requests_carry_no_client_label_unless_asked(make_app, call, make_token):
    """By default a fleet of any size adds no series: the client label is empty."""
    from prometheus_client import REGISTRY

    def counted(client: str) -> float:
        labels = {"route": "/users", "method": "GET", "status": "200", "client": client}
        return REGISTRY.get_sample_value(REQUESTS_TOTAL, labels) or 0.0

    for per_client, labelled in ((False, ""), (True, "edge-acme")):
        proxy = make_app(metrics_per_client=per_client)
        before = {client: counted(client) for client in ("", "edge-acme")}
        assert call("/users", make_token("edge-acme"), via=proxy).status_code == 200
        after = {client: counted(client) for client in ("", "edge-acme")}
        assert {c: after[c] - before[c] for c in after} == {
            "": 1.0 if labelled == "" else 0.0,
            "edge-acme": 1.0 if labelled == "edge-acme" else 0.0,
        }
