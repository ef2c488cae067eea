"""SIGHUP under gunicorn: a good config.json reaches every worker; a bad one stops none.

gunicorn's master checks the new file; workers are forked from the configuration it accepted,
never from the file itself, so a worker forked after a bad edit (a reload, or one replacing a
worker that died) serves what its siblings serve.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.test_metrics import scrape, total

WORKERS = 3
RELOADS = "auth0_proxy_config_reload_total"
LAST_RELOAD = "auth0_proxy_config_last_reload_timestamp_seconds"


def status_of(proxy, token: str) -> int:
    with requests.Session() as session:  # a connection of its own: any worker may take it
        answer = session.get(
            f"{proxy.url}/users", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        return answer.status_code


def statuses(proxy, token: str, count: int = 30) -> list[int]:
    with ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(lambda _: status_of(proxy, token), range(count)))


def worker_pids(proxy) -> list[int]:
    """The pids of the workers that said they were ready, in order."""
    return [
        int(line["message"].split("pid: ")[1].rstrip(")"))
        for line in proxy.log_records()
        if line.get("message", "").startswith("Worker ready (pid: ")
    ]


def reload(proxy, edit) -> list[int]:
    """Edit config.json with ``edit``, send SIGHUP, and wait for a new set of workers: the
    pids of the new ones."""
    config = json.loads(proxy.config_path.read_text())
    edit(config)
    proxy.config_path.write_text(json.dumps(config))
    before = len(worker_pids(proxy))
    lines_before = len(proxy.log_records())
    os.kill(proxy.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while len(worker_pids(proxy)) < before + WORKERS:
        assert time.monotonic() < deadline, proxy.log_text()
        time.sleep(0.1)
    # ... and for the old workers to leave (gracefully: they finish what they serve).
    new = worker_pids(proxy)[before:]
    old = set(worker_pids(proxy)[:before])
    while any(_alive(pid) for pid in old):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proxy.reload_lines = proxy.log_records()[lines_before:]
    return new


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def serving_pids(proxy, since: int) -> set[int]:
    return {r["pid"] for r in proxy.log_records()[since:] if r.get("path") == "/users"}


def not_an_org_id(config):
    config["clients"]["edge-acme"] = "acme"


def a_redis_url_with_no_port(config):
    """Valid at a glance; the Redis client would refuse it in every worker."""
    config["proxy"].update(cache_type="redis", cache_redis_url="redis://redis:notaport/0")


@pytest.mark.parametrize(
    ("bad_edit", "key"),
    [(not_an_org_id, "clients.edge-acme"), (a_redis_url_with_no_port, "proxy.cache_redis_url")],
)
def test_a_bad_edit_and_sighup_keep_the_old_configuration_serving(
    start_proxy, make_token, bad_edit, key
):
    proxy = start_proxy(workers=WORKERS, threads=4)
    token = make_token("edge-acme")
    assert statuses(proxy, token) == [200] * 30

    new_workers = reload(proxy, bad_edit)
    errors = [line for line in proxy.reload_lines if line["level"] == "ERROR"]
    print("\n".join(json.dumps(line) for line in proxy.reload_lines))
    assert len(errors) == 1
    assert errors[0]["logger"] == "gunicorn.error"
    assert errors[0]["message"].startswith("configuration not reloaded, the running one stays:")
    assert f"{key}: " in errors[0]["message"]
    since = len(proxy.log_records())
    assert statuses(proxy, token) == [200] * 30
    assert serving_pids(proxy, since) == set(new_workers), "every new worker served"
    assert proxy.process.poll() is None


def test_a_good_edit_and_sighup_reach_every_worker(start_proxy, make_token):
    proxy = start_proxy(workers=WORKERS, threads=4)
    globex = make_token("edge-globex")
    assert statuses(proxy, globex) == [200] * 30

    def unmap_globex(config):
        del config["clients"]["edge-globex"]

    new_workers = reload(proxy, unmap_globex)
    print("\n".join(json.dumps(line) for line in proxy.reload_lines))
    assert any(line["message"] == "configuration reloaded" for line in proxy.reload_lines)
    since = len(proxy.log_records())
    assert statuses(proxy, globex) == [403] * 30
    assert serving_pids(proxy, since) == set(new_workers), "every new worker has the new map"
    assert statuses(proxy, make_token("edge-acme")) == [200] * 30


def test_reloads_are_counted_by_the_master_and_served_with_the_workers_metrics(start_proxy):
    """gunicorn's master reloads, and serves its own samples beside the workers'."""
    proxy = start_proxy(workers=WORKERS, threads=4)
    samples = scrape(proxy.metrics_url)
    assert total(samples, RELOADS, outcome="ok") == total(samples, RELOADS, outcome="failed") == 0
    assert total(samples, LAST_RELOAD) == 0
    before = time.time()

    def longer_ttl(config):
        config["proxy"]["cache_ttl_seconds"] = 30

    reload(proxy, longer_ttl)
    samples = scrape(proxy.metrics_url)
    assert total(samples, RELOADS, outcome="ok") == 1
    assert total(samples, RELOADS, outcome="failed") == 0
    reloaded_at = total(samples, LAST_RELOAD)
    assert before <= reloaded_at <= time.time()

    reload(proxy, not_an_org_id)
    samples = scrape(proxy.metrics_url)
    assert total(samples, RELOADS, outcome="ok") == 1
    assert total(samples, RELOADS, outcome="failed") == 1
    assert total(samples, LAST_RELOAD) == reloaded_at, "a refused config is no reload"


def test_a_worker_replaced_after_a_bad_edit_serves_the_accepted_configuration(
    start_proxy, make_token
):
    """No SIGHUP: a worker that dies is replaced from the master's accepted configuration,
    not from the file edited meanwhile."""
    proxy = start_proxy(workers=2, threads=4)
    token = make_token("edge-acme")
    config = json.loads(proxy.config_path.read_text())
    del config["clients"]["edge-acme"]
    config["auth0"]["domain"] = "https://not a domain"
    proxy.config_path.write_text(json.dumps(config))
    victim = worker_pids(proxy)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(worker_pids(proxy)) < 3:
        assert time.monotonic() < deadline, proxy.log_text()
        time.sleep(0.1)
    replacement = worker_pids(proxy)[-1]
    since = len(proxy.log_records())
    assert statuses(proxy, token) == [200] * 30
    assert replacement in serving_pids(proxy, since)


def test_gunicorns_own_lines_are_json_like_the_apps(start_proxy):
    proxy = start_proxy(workers=2)
    lines = proxy.log_text().splitlines()
    assert lines and all(line.startswith("{") for line in lines), lines[:5]
    gunicorns = [r for r in proxy.log_records() if r["logger"] == "gunicorn.error"]
    messages = [r["message"] for r in gunicorns]
    assert any(m.startswith("Starting gunicorn") for m in messages)
    assert any(m.startswith("Booting worker with pid") for m in messages)
    assert {"time", "level", "pid", "message"} <= set(gunicorns[0])
    pids = {r["pid"] for r in gunicorns}
    assert proxy.process.pid in pids and len(pids) == 3  # the master's lines and each worker's
