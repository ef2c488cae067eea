"""The Helm chart (deploy/helm/auth0-m2m-proxy), rendered by ``helm template``: it lints, every
values file of its ci/ renders manifests kubernetes-validate accepts strictly, its Deployment runs
the proxy as deploy/kubernetes's does, and the configuration it renders is one the proxy's own
loader accepts, with no secret outside a Secret. Skipped where there is no helm
(scripts/install_helm.sh puts one in .venv/bin).
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from auth0_proxy.core.config import load_config_file
from auth0_proxy.core.version import __version__
from tests import test_deploy

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "auth0-m2m-proxy"
VALUES_FILES = {path.name.removesuffix("-values.yaml"): path for path in CHART.glob("ci/*.yaml")}
RELEASE = "auth0-m2m-proxy"  # so that the resources have deploy/kubernetes's names


def find_helm() -> str | None:
    """scripts/install_helm.sh's (a known version), else one on PATH."""
    local = ROOT / ".venv" / "bin" / "helm"
    return str(local) if local.exists() else shutil.which("helm")


HELM = find_helm()
# The Secrets the values files name but the chart does not make, as the cluster holds them.
CLUSTER_SECRETS = {
    "auth0-m2m-proxy-secret": {
        "AUTH0_MGMT_CLIENT_SECRET": "existing-mgmt-secret-0123456789",
        "AUTH0_PROXY_PROXY_CACHE_REDIS_URL": "rediss://:existing-redis-password@redis.cache:6380/0",
    },
    "proxy-management": {"mgmt-client-secret": "management-secret-0123456789"},
    "redis-sentinel": {"password": "sentinel-password-0123456789"},
}

pytestmark = pytest.mark.skipif(
    HELM is None, reason="no helm on PATH or at .venv/bin/helm: run scripts/install_helm.sh"
)


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)


@functools.cache
def rendered_text(values: str | None, *overrides: str) -> str:
    """``helm template`` of the chart with a values file of ci/ (None: the defaults)."""
    files = ["-f", str(VALUES_FILES[values])] if values else []
    result = helm("template", RELEASE, str(CHART), *files, *overrides)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(values: str | None, *overrides: str) -> dict[tuple[str, str], dict]:
    """The rendered resources by (kind, name), as test_deploy's ``manifests``."""
    documents = yaml.safe_load_all(rendered_text(values, *overrides))
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents if doc}


def proxy_container(manifests: dict) -> dict:
    [container] = manifests[("Deployment", RELEASE)]["spec"]["template"]["spec"]["containers"]
    return container


def checksum(values: str, *overrides: str) -> str:
    template = render(values, *overrides)[("Deployment", RELEASE)]["spec"]["template"]
    return template["metadata"]["annotations"]["checksum/config"]


def secret_values(manifests: dict) -> dict[tuple[str, str], str]:
    """What each key of each Secret holds, the chart's and the cluster's: (secret, key) -> value."""
    values = {
        (name, key): value for name, data in CLUSTER_SECRETS.items() for key, value in data.items()
    }
    for (kind, name), doc in manifests.items():
        if kind == "Secret":
            for key, value in doc["data"].items():
                values[(name, key)] = base64.b64decode(value).decode()
    return values


def pod_environment(manifests: dict, root: Path) -> dict[str, str]:
    """The proxy container's environment, each file it names (config.json, the secrets) written
    under ``root`` from the ConfigMap or Secret the pod mounts there, and named there instead."""
    pod = manifests[("Deployment", RELEASE)]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    secrets = secret_values(manifests)
    container = proxy_container(manifests)
    files = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = manifests[("ConfigMap", volume["configMap"]["name"])]["data"]
            files.update({f"{mount['mountPath']}/{key}": text for key, text in data.items()})
        for source in volume.get("projected", {}).get("sources", []):
            name = source["secret"]["name"]
            for item in source["secret"]["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = secrets[(name, item["key"])]
    environ = {}
    for variable in container["env"]:
        value = variable["value"]
        if value in files:
            local = root / value.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(files[value])
            value = str(local)
        environ[variable["name"]] = value
    return environ


def test_chart_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == chart["appVersion"] == __version__


@pytest.mark.parametrize("values", [None, *sorted(VALUES_FILES)])
def test_helm_lint_strict_passes(values):
    files = ["-f", str(VALUES_FILES[values])] if values else []
    result = helm("lint", "--strict", str(CHART), *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        # The schema's refusals, by the value refused (each helm words them its own way).
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicas": 2}, "replicas"),
        ({"redis": {"mode": "primary"}}, "mode"),
        (
            {"config": {"env": {"AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET": "s3cret"}}},
            "AUTH0_PROXY_AUTH0_MGMT_CLIENT_SECRET",
        ),
        ({"ingress": {"enabled": True, "hosts": ["a.example"]}}, "secretName"),
        ({"redis": {"enabled": True, "mode": "sentinel"}}, "sentinels"),
        # The templates'.
        (
            {"config": {"json": {"auth0": {"mgmt_client_secret": "s3cret"}}}},
            "auth0.mgmt_client_secret would be in a ConfigMap",
        ),
        (
            {"config": {"json": '{"proxy": {"cache_redis_url": "redis://:s3cret@r:6379/0"}}'}},
            "proxy.cache_redis_url holds a password",
        ),
        ({"config": {"json": "clients: {}"}}, "config.json is not a JSON object"),
        (
            {"config": {"json": {"events": {"webhook_token": "t" * 32}}}},
            "events.webhook_token would be in a ConfigMap",
        ),
        (
            {"config": {"env": {"AUTH0_PROXY_EVENTS_WEBHOOK_TOKEN": "t" * 32}}},
            "AUTH0_PROXY_EVENTS_WEBHOOK_TOKEN",
        ),
        ({"redis": {"url": "redis://:s3cret@r:6379/0"}}, "redis.url holds a password"),
        ({"redis": {"enabled": True}}, "redis.mode standalone needs redis.url"),
        (
            {"redis": {"url": "redis://r:6379/0"}, "secrets": {"redisUrl": "redis://r:6379/1"}},
            "the Redis URL is both in redis.url and in secrets",
        ),
        (
            {
                "redis": {"enabled": True, "url": "redis://r:6379/0"},
                "config": {"env": {"AUTH0_PROXY_PROXY_CACHE_TYPE": "simple"}},
            },
            "the chart sets AUTH0_PROXY_PROXY_CACHE_TYPE itself",
        ),
        (
            {
                "secrets": {"redisUrl": "redis://r:6379/0"},
                "config": {"env": {"AUTH0_PROXY_PROXY_CACHE_REDIS_URL_FILE": "/elsewhere"}},
            },
            "the chart sets AUTH0_PROXY_PROXY_CACHE_REDIS_URL_FILE itself",
        ),
    ],
)
def test_mistyped_contradictory_or_leaking_values_are_refused(values, refusal, tmp_path):
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    result = helm("template", RELEASE, str(CHART), "-f", str(tmp_path / "values.yaml"))
    assert result.returncode != 0
    assert refusal in result.stderr


def test_every_rendering_validates_strictly():
    """All but the ServiceMonitor, whose CRD kubernetes-validate does not know (checked below)."""
    documents = [
        doc
        for values in [None, *sorted(VALUES_FILES)]
        for doc in render(values).values()
        if doc["kind"] != "ServiceMonitor"
    ]
    assert test_deploy.validate_strictly(["-"], yaml.safe_dump_all(documents)) == len(documents)


def test_the_service_monitor_scrapes_the_metrics_service_alone():
    manifests = render("production")
    monitor = manifests[("ServiceMonitor", RELEASE)]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"  # Prometheus's selector
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s"}
    selected = monitor["spec"]["selector"]["matchLabels"].items()
    metrics, api = manifests[("Service", f"{RELEASE}-metrics")], manifests[("Service", RELEASE)]
    assert selected <= metrics["metadata"]["labels"].items()
    assert not selected <= api["metadata"]["labels"].items()
    assert [port["name"] for port in metrics["spec"]["ports"]] == ["metrics"]
    pod = manifests[("Deployment", RELEASE)]["spec"]["template"]["metadata"]
    assert metrics["spec"]["selector"].items() <= pod["labels"].items()
    # Scraped once: through the ServiceMonitor, not also through the pods' annotations.
    assert "prometheus.io/scrape" not in pod["annotations"]
    assert ("ServiceMonitor", RELEASE) not in render(None)


def test_the_ingress_serves_the_api_over_tls_only():
    ingress = render("production")[("Ingress", RELEASE)]
    assert ingress["spec"]["tls"] == [
        {"hosts": ["proxy.acme.example"], "secretName": "proxy-acme-example-tls"}
    ]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "proxy.acme.example"
    [path] = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": RELEASE, "port": {"name": "http"}}


@pytest.mark.parametrize("values", [None, *sorted(VALUES_FILES)])
def test_the_deployment_runs_the_proxy_as_deploy_kubernetes_does(values):
    [manifest] = [path for path in test_deploy.KUBERNETES if path.name == "deployment.yaml"]
    expected = yaml.safe_load(manifest.read_text())["spec"]
    actual = render(values)[("Deployment", RELEASE)]["spec"]
    assert actual["strategy"] == expected["strategy"]
    pod, expected_pod = actual["template"]["spec"], expected["template"]["spec"]
    for key in ("securityContext", "automountServiceAccountToken", "terminationGracePeriodSeconds"):
        assert pod[key] == expected_pod[key], key
    [container], [expected_container] = pod["containers"], expected_pod["containers"]
    for key in (
        "ports",
        "securityContext",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "lifecycle",
        "resources",
    ):
        assert container[key] == expected_container[key], key
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    for name in ("METRICS_BIND", "WEB_CONCURRENCY", "GUNICORN_THREADS", "TMPDIR"):
        assert env[name] == next(v["value"] for v in expected_container["env"] if v["name"] == name)
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    [tmp] = [volume for volume in pod["volumes"] if volume["name"] == mounts[test_deploy.TMPDIR]]
    assert tmp in expected_pod["volumes"]


def test_the_chart_keeps_the_promises_test_deploy_checks():
    """test_deploy's own checks of the lock-down, the shutdown, the Service, autoscaler and
    disruption budget, on the chart with all of them on."""
    manifests = render("production")
    test_deploy.test_deployment_is_locked_down(manifests)
    test_deploy.test_shutdown_fits_in_the_grace_period(manifests)
    test_deploy.test_service_autoscaler_and_budget_select_the_proxy(manifests)
    assert "replicas" not in manifests[("Deployment", RELEASE)]["spec"]  # the autoscaler's


def test_a_config_change_rolls_the_pods_and_nothing_else_does():
    assert checksum("production", "--set", "secrets.mgmtClientSecret=rotated-0123456789") != (
        checksum("production")
    )
    assert checksum("sentinel", "--set", "config.json.budget.share=0.3") != checksum("sentinel")
    unrelated = ["--set", "replicaCount=4,podAnnotations.note=x,gunicorn.threads=16"]
    assert checksum("production", *unrelated) == checksum("production")
    assert checksum("sentinel", *unrelated) == checksum("sentinel")


# The settings each values file gives the proxy, as its loader reads them from the pod.
EXPECTED_SETTINGS = {
    "standalone": {
        "auth0.domain": "acme.eu.auth0.com",
        "auth0.mgmt_client_id": "proxy-management-client",
        "auth0.mgmt_client_secret": "chart-made-mgmt-secret-0123456789",
        "auth0.api_audience": "https://m2m-proxy.acme.example",
        "clients": {"edge-acme": ("org_acme",), "edge-reseller": ("org_acme", "org_globex")},
        "proxy.cache_type": "redis",
        "proxy.cache_redis_mode": "standalone",
        "proxy.cache_redis_url": "redis://redis-master.cache:6379/0",
        "proxy.cache_ttl_seconds": 60,
        "proxy.accept_user_tokens": True,
    },
    "existing-secret": {
        "auth0.mgmt_client_secret": "existing-mgmt-secret-0123456789",
        "clients": {"edge-acme": ("org_acme",)},
        "client_grants.enabled": True,
        "client_grants.refresh_seconds": 120,
        "proxy.cache_type": "redis",
        "proxy.cache_redis_url": "rediss://:existing-redis-password@redis.cache:6380/0",
    },
    "sentinel": {
        "auth0.mgmt_client_secret": "management-secret-0123456789",
        "budget.plan": "enterprise",
        "budget.share": 0.25,
        "proxy.cache_type": "redis",
        "proxy.cache_redis_mode": "sentinel",
        "proxy.cache_redis_sentinels": (
            "redis-sentinel-0.redis-sentinel:26379",
            "redis-sentinel-1.redis-sentinel:26379",
        ),
        "proxy.cache_redis_sentinel_service": "proxy-cache",
        "proxy.cache_redis_sentinel_password": "sentinel-password-0123456789",
    },
    "production": {
        "auth0.domain": "acme.eu.auth0.com",
        "auth0.mgmt_client_secret": "chart-made-mgmt-secret-0123456789",
        "proxy.cache_type": "redis",
        "proxy.cache_redis_url": "rediss://:redis-password-0123456789@redis.cache:6380/0",
        "proxy.cache_ttl_seconds": 45,
        "events.source": "webhook",
        "events.webhook_token": "chart-made-webhook-token-0123456789abcdef",
    },
}


def setting(settings: object, key: str) -> object:
    value = functools.reduce(getattr, key.split("."), settings)
    return dict(value) if key == "clients" else value


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_the_rendered_configuration_loads_with_the_proxys_loader(values, tmp_path):
    environ = pod_environment(render(values), tmp_path)
    # Without AUTH0_PROXY_CONFIG the image has no config.json: the environment is the whole of it.
    settings = load_config_file(environ.get("AUTH0_PROXY_CONFIG", tmp_path / "none.json"), environ)
    for key, value in EXPECTED_SETTINGS[values].items():
        assert setting(settings, key) == value, key


def test_the_sentinels_are_one_json_list_and_their_password_a_file():
    container = proxy_container(render("sentinel"))
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    assert json.loads(env["AUTH0_PROXY_PROXY_CACHE_REDIS_SENTINELS"]) == [
        "redis-sentinel-0.redis-sentinel:26379",
        "redis-sentinel-1.redis-sentinel:26379",
    ]
    assert "AUTH0_PROXY_PROXY_CACHE_REDIS_SENTINEL_PASSWORD" not in env
    assert env["AUTH0_PROXY_PROXY_CACHE_REDIS_SENTINEL_PASSWORD_FILE"].startswith("/run/secrets/")


def test_the_defaults_render_a_proxy_that_asks_for_its_configuration():
    manifests = render(None)
    assert not [kind for kind, _ in manifests if kind in {"ConfigMap", "Secret", "Ingress"}]
    notes = helm("install", RELEASE, str(CHART), "--dry-run=client").stdout
    assert "WARNING: no configuration" in notes and "no management client secret" in notes


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_no_secret_value_leaves_its_secret(values):
    manifests = render(values)
    secrets = set(secret_values(manifests).values())
    for (kind, name), doc in manifests.items():
        if kind != "Secret":
            text = json.dumps(doc)
            assert not [secret for secret in secrets if secret in text], f"{kind} {name}"
        if kind == "ConfigMap":
            assert "mgmt_client_secret" not in doc["data"]["config.json"]
