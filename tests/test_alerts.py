"""The operators' alerts and dashboard (deploy/prometheus, deploy/grafana).

promtool checks the rules and runs their unit tests (alerts.test.yaml: a firing and a quiet
case for each alert); every metric an alert, a unit test or a dashboard panel names is one that
auth0_proxy/core/metrics.py defines, under the name Prometheus sees; each alert says how urgent
it is and links a runbook that docs/troubleshooting.md has.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from auth0_proxy.core import metrics

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "auth0-m2m-proxy.json"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
RUNBOOKS = "https://github.com/your-org/auth0-m2m-proxy/blob/main/docs/troubleshooting.md#"
METRIC_NAME = re.compile(r"\bauth0_proxy_[a-z_]+\b")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
SEVERITIES = {"page", "ticket"}
# What the dashboard must show (issue 20): one panel or more for each.
DASHBOARD_METRICS = {
    "auth0_proxy_requests_total",
    "auth0_proxy_request_duration_seconds",
    "auth0_proxy_cache_answers_total",
    "auth0_proxy_stale_answer_age_seconds",
    "auth0_proxy_upstream_calls_total",
    "auth0_proxy_upstream_rate_limited_total",
    "auth0_proxy_budget_left",
    "auth0_proxy_budget_refused_total",
    "auth0_proxy_credential_fetches_total",
    "auth0_proxy_requests_in_flight",
}
# Grafana's variables, given a value that PromQL parses, for promtool to check the panels' queries.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; .ci/run installs it)")
    return binary


def defined_metrics() -> dict[str, str]:
    """Each metric the proxy defines, by the name it is exposed under, to its type.
    prometheus-client's collectors describe a counter without its ``_total``."""
    defined = {}
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                name = f"{family.name}_total" if family.type == "counter" else family.name
                defined[name] = family.type
    return defined


def undefined_metrics(expressions: list[str]) -> set[str]:
    """The proxy's metric names in ``expressions`` that it does not define (a histogram's
    ``_bucket``, ``_sum`` and ``_count`` series stand for the histogram)."""
    defined = defined_metrics()
    undefined = set()
    for name in {name for expression in expressions for name in METRIC_NAME.findall(expression)}:
        series_of = next(
            (name.removesuffix(suffix) for suffix in HISTOGRAM_SERIES if name.endswith(suffix)),
            None,
        )
        if name in defined:
            continue
        if series_of is not None and defined.get(series_of) == "histogram":
            continue
        undefined.add(name)
    return undefined


def used_metrics(expressions: list[str]) -> set[str]:
    """The proxy's metrics that ``expressions`` read, histograms by their own name."""
    names = {name for expression in expressions for name in METRIC_NAME.findall(expression)}
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels(panels: list[dict]) -> list[dict]:
    """Every panel, those inside rows too."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(dashboard_panels(panel.get("panels", [])))
    return found


def dashboard_expressions(dashboard: dict) -> list[str]:
    """Each panel's queries and each variable's."""
    panels = dashboard_panels(dashboard["panels"])
    expressions = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return expressions + [variable["definition"] for variable in variables]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_promtool_accepts_the_rules():
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say():
    result = subprocess.run(
        [promtool(), "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    tested = yaml.safe_load(ALERT_TESTS.read_text())
    checks = [check for case in tested["tests"] for check in case["alert_rule_test"]]
    for rule in alert_rules():
        alert = rule["alert"]
        expected = [check["exp_alerts"] for check in checks if check["alertname"] == alert]
        assert any(expected), f"{alert}: no case where it fires"
        assert [] in expected, f"{alert}: no case where it stays quiet"


def test_alerts_name_only_metrics_the_proxy_defines():
    expressions = [rule["expr"] for rule in alert_rules()]
    assert used_metrics(expressions), "no metric of the proxy found in the alerts"
    assert undefined_metrics(expressions) == set()


def test_unit_tests_feed_only_metrics_the_proxy_defines():
    tested = yaml.safe_load(ALERT_TESTS.read_text())
    series = [s["series"] for case in tested["tests"] for s in case["input_series"]]
    assert undefined_metrics(series) == set()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_says_how_urgent_and_links_its_runbook(rule):
    assert rule["for"], "an alert without `for:` fires on one evaluation's blip"
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    assert annotations["runbook_url"] == RUNBOOKS + rule["alert"].lower()
    headings = re.findall(r"^#+ (.+)$", TROUBLESHOOTING.read_text(), flags=re.MULTILINE)
    assert rule["alert"].lower() in {github_anchor(heading) for heading in headings}


def test_undefined_metrics_are_caught():
    """The check above fails for a made-up metric, a histogram's series of a counter, and a
    counter without ``_total``."""
    assert undefined_metrics(["up == 0", "rate(auth0_proxy_requests_total[5m])"]) == set()
    assert undefined_metrics(["auth0_proxy_made_up == 0"]) == {"auth0_proxy_made_up"}
    assert undefined_metrics(["auth0_proxy_requests_total_bucket"]) == {
        "auth0_proxy_requests_total_bucket"
    }
    assert undefined_metrics(["rate(auth0_proxy_requests[5m])"]) == {"auth0_proxy_requests"}


def test_dashboard_is_grafana_json_on_a_prometheus_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard_panels(dashboard["panels"]) if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
    ids = [panel["id"] for panel in dashboard_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_dashboard_shows_only_metrics_the_proxy_defines_and_all_it_should():
    expressions = dashboard_expressions(json.loads(DASHBOARD.read_text()))
    assert undefined_metrics(expressions) == set()
    assert used_metrics(expressions) >= DASHBOARD_METRICS


def test_dashboard_queries_are_promql(tmp_path):
    """Each query, Grafana's variables filled in, checked by promtool as a recording rule."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard_panels(dashboard["panels"])
    rules = []
    for panel in panels:
        for target in panel.get("targets", []):
            expression = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            rules.append(
                {"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expression}
            )
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
