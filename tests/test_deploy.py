"""The deployment files, checked where no Docker engine or cluster is at hand.

docker-compose.yml against the Compose Specification's JSON schema (tests/compose-spec.json),
the Kubernetes manifests with kubernetes-validate (strict, against the API's own schemas), and
what each of them must keep: the settings that agree with gunicorn.conf.py, the app's limits,
the package's version and the hash-locked dependencies. tests/test_nginx.py runs the nginx site.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import jsonschema
import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from auth0_proxy.core.config import ConfigError, load_settings
from auth0_proxy.core.version import __version__
from auth0_proxy.edge.body_limits import MAX_BODY_BYTES
from auth0_proxy.ops.request_log import REQUEST_ID
from scripts.proxy_server import free_port
from tests.support import redis_binary, wait_for_redis
from tests.test_defaults import filled_in

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
SITE = DEPLOY / "nginx" / "auth0-m2m-proxy.conf"
KUBERNETES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
REDIS_EXAMPLE = sorted((DEPLOY / "kubernetes" / "redis-example").glob("*.yaml"))
CONFIG_DIR = "/etc/auth0-m2m-proxy"
TMPDIR = "/tmp"  # noqa: S108 - the containers' $TMPDIR, a volume of its own


def gunicorn_setting(name: str) -> int:
    """A setting of gunicorn.conf.py, read without running the file (it sets up metrics): a
    constant, or the default of ``int(os.environ.get(VARIABLE, "default"))``."""
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            name
        ]:
            value = node.value
            if isinstance(value, ast.Constant):
                return value.value
            if isinstance(value, ast.Call) and len(value.args) == 1:  # int(os.environ.get(...))
                return int(ast.literal_eval(value.args[0].args[1]))
    raise AssertionError(f"gunicorn.conf.py sets no {name}")


def nginx_directives(text: str) -> str:
    """The site file without its comments."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[unit]


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_follows_the_compose_specification(compose):
    schema = json.loads((ROOT / "tests" / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The schema does reject what is not Compose (it is no ``{}``).
    assert list(validator.iter_errors({"services": {"proxy": {"imagee": "x"}}}))


def test_compose_runs_proxy_redis_and_nginx_as_documented(compose):
    services = compose["services"]
    assert set(services) == {"proxy", "redis", "nginx"}
    proxy, redis, nginx = services["proxy"], services["redis"], services["nginx"]

    assert (COMPOSE.parent / proxy["build"]["context"] / proxy["build"]["dockerfile"]).is_file()
    [config] = [v for v in proxy["volumes"] if v["target"] == f"{CONFIG_DIR}/config.json"]
    assert config["read_only"] is True and config["type"] == "bind"
    assert proxy["environment"]["AUTH0_PROXY_CONFIG"] == f"{CONFIG_DIR}/config.json"
    # The secret comes from the environment of `docker compose`, never from this file.
    assert proxy["environment"]["AUTH0_MGMT_CLIENT_SECRET"].startswith(
        "${AUTH0_MGMT_CLIENT_SECRET:?"
    )
    assert proxy["read_only"] is True and any(t.startswith(TMPDIR) for t in proxy["tmpfs"])
    assert proxy["depends_on"]["redis"]["condition"] == "service_healthy"

    # Only nginx publishes a port: the proxy's API and metrics, and Redis, stay inside.
    assert nginx["ports"] == ["443:443"]
    assert "ports" not in proxy and "ports" not in redis
    assert set(proxy["expose"]) == {"8000", "9100"}
    assert redis["networks"] == ["cache"] and compose["networks"]["cache"]["internal"] is True
    assert "cache" not in nginx["networks"]

    # nginx serves deploy/nginx/auth0-m2m-proxy.conf, rendered by the image's envsubst with
    # every placeholder of the file set (and only those).
    [site] = [v for v in nginx["volumes"] if v["target"].startswith("/etc/nginx/templates/")]
    assert (COMPOSE.parent / site["source"]).resolve() == SITE and site["read_only"] is True
    assert site["target"].endswith(".conf.template")
    placeholders = set(re.findall(r"\$\{(AUTH0_PROXY_[A-Z_]+)\}", SITE.read_text()))
    set_here = {name for name in nginx["environment"] if name.startswith("AUTH0_PROXY_")}
    assert set_here == placeholders
    assert nginx["environment"]["AUTH0_PROXY_UPSTREAM"] == "proxy:8000"
    assert nginx["environment"]["NGINX_ENVSUBST_FILTER"] == "^AUTH0_PROXY_"

    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", f"{name} has no healthcheck"


def test_docker_compose_accepts_the_file(tmp_path):
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI: the file is checked against the Compose schema only")
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if version.returncode != 0:
        pytest.skip("no `docker compose` plugin: the file is checked against the Compose schema")
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "AUTH0_MGMT_CLIENT_SECRET": "test",
        "AUTH0_PROXY_TLS_DIR": str(tmp_path),
        "AUTH0_PROXY_CONFIG_FILE": str(ROOT / "config.json.example"),
    }
    checked = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr


# --- the nginx site --------------------------------------------------------------------------


def test_nginx_site_matches_gunicorn_and_the_apps_limits():
    site = nginx_directives(SITE.read_text())
    upstream = re.search(r"upstream auth0_m2m_proxy \{(.*?)\n\}", site, re.S).group(1)
    assert re.search(r"^\s*keepalive \d+;", upstream, re.M)
    keepalive_timeout = re.search(r"keepalive_timeout (\w+);", upstream).group(1)
    assert seconds(keepalive_timeout) < gunicorn_setting("keepalive")
    assert "proxy_http_version 1.1;" in site and 'proxy_set_header Connection "";' in site
    read_timeout = re.search(r"proxy_read_timeout (\w+);", site).group(1)
    assert seconds(read_timeout) == gunicorn_setting("timeout")
    assert re.search(r"client_max_body_size (\d+)m;", site).group(1) == str(MAX_BODY_BYTES >> 20)
    assert "proxy_set_header X-Request-ID $auth0_m2m_proxy_request_id;" in site
    users = re.search(r"location = /users \{(.*?)\}", site, re.S).group(1)
    assert "proxy_buffering off;" in users
    assert re.search(r"ssl_protocols TLSv1\.2 TLSv1\.3;", site)


def test_nginx_passes_on_the_request_ids_the_proxy_keeps():
    """The same pattern, so the id nginx logs is the one the proxy logs as the caller's."""
    site = nginx_directives(SITE.read_text())
    mapping = re.search(
        r"map \$http_x_request_id \$auth0_m2m_proxy_request_id \{(.*?)\}\n", site, re.S
    )
    pattern = re.search(r'"~(.*?)"\s+\$http_x_request_id;', mapping.group(1)).group(1)
    assert pattern == REQUEST_ID.pattern


def test_nginx_logs_no_header_and_no_query_string():
    site = nginx_directives(SITE.read_text())
    log_format = re.search(r"log_format auth0_m2m_proxy (.*?);", site, re.S).group(1)
    variables = set(re.findall(r"\$(\w+)", log_format))
    assert not {"request", "request_uri", "args", "query_string", "uri"} & variables
    assert not [v for v in variables if v.startswith(("http_", "cookie_", "arg_"))]
    assert "auth0_m2m_proxy_logged_uri" in variables  # $uri, redacted
    assert "$http_authorization" not in site


def test_nginx_never_reaches_the_metrics_port():
    site = nginx_directives(SITE.read_text())
    assert re.findall(r"proxy_pass (\S+);", site) == ["http://auth0_m2m_proxy"] * 2
    assert "9100" not in site and "metrics" not in re.sub(r"location = /metrics", "", site)


# --- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict]:
    """Every resource of deploy/kubernetes (the Redis example too), by (kind, name)."""
    resources = {}
    for path in KUBERNETES + REDIS_EXAMPLE:
        for document in yaml.safe_load_all(path.read_text()):
            resources[(document["kind"], document["metadata"]["name"])] = document
    return resources


def validate_strictly(paths: list[str], text: str | None = None) -> int:
    """kubernetes-validate, strict, on the files (``-``: ``text``): how many resources passed,
    once none failed or drew a warning."""
    checked = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *paths],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "ERROR" not in output and "WARN" not in output, output
    return output.count("passed for resource")


def test_kubernetes_manifests_validate_strictly():
    assert KUBERNETES and REDIS_EXAMPLE
    assert validate_strictly([str(path) for path in KUBERNETES + REDIS_EXAMPLE]) == 9


def test_deployment_is_locked_down(manifests):
    pod = manifests[("Deployment", "auth0-m2m-proxy")]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == security["runAsUser"] == 10001
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]


def test_deployment_probes_volumes_and_secret(manifests):
    pod = manifests[("Deployment", "auth0-m2m-proxy")]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000, "metrics": 9100}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[TMPDIR]["name"]]  # $TMPDIR: heartbeats, metrics, cache
    config = volumes[mounts[CONFIG_DIR]["name"]]
    assert mounts[CONFIG_DIR]["readOnly"] is True
    assert config["configMap"]["name"] == "auth0-m2m-proxy-config"
    assert ("ConfigMap", "auth0-m2m-proxy-config") in manifests

    env = {variable["name"]: variable for variable in container["env"]}
    assert env["AUTH0_PROXY_CONFIG"]["value"] == f"{CONFIG_DIR}/config.json"
    assert env["METRICS_BIND"]["value"] == f"0.0.0.0:{ports['metrics']}"
    reference = env["AUTH0_MGMT_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]
    secret = manifests[("Secret", reference["name"])]
    assert reference["key"] in secret["stringData"]
    assert "REPLACE-ME" in secret["stringData"][reference["key"]]  # a placeholder, marked

    annotations = manifests[("Deployment", "auth0-m2m-proxy")]["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"


def test_shutdown_fits_in_the_grace_period(manifests):
    pod = manifests[("Deployment", "auth0-m2m-proxy")]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert (
        int(command[1]) + gunicorn_setting("graceful_timeout")
        <= pod["terminationGracePeriodSeconds"]
    )


def test_service_autoscaler_and_budget_select_the_proxy(manifests):
    deployment = manifests[("Deployment", "auth0-m2m-proxy")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = manifests[("Service", "auth0-m2m-proxy")]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]  # the API only: no metrics port
    assert service["spec"]["selector"].items() <= labels.items()
    hpa = manifests[("HorizontalPodAutoscaler", "auth0-m2m-proxy")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "auth0-m2m-proxy",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = manifests[("PodDisruptionBudget", "auth0-m2m-proxy")]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def secret_environment(manifests) -> dict[str, str]:
    """The proxy container's variables that come from its Secret, with the Secret's values."""
    pod = manifests[("Deployment", "auth0-m2m-proxy")]["spec"]["template"]["spec"]
    secret = manifests[("Secret", "auth0-m2m-proxy-secret")]["stringData"]
    return {
        variable["name"]: secret[variable["valueFrom"]["secretKeyRef"]["key"]]
        for variable in pod["containers"][0]["env"]
        if "secretKeyRef" in variable.get("valueFrom", {})
    }


def test_configmaps_config_is_valid_once_filled_in_and_shares_redis(manifests):
    data = manifests[("ConfigMap", "auth0-m2m-proxy-config")]["data"]
    secret = secret_environment(manifests)
    assert set(secret) == {"AUTH0_MGMT_CLIENT_SECRET", "AUTH0_PROXY_PROXY_CACHE_REDIS_URL"}
    # Applied as it is, the proxy would refuse to start: its tenant is the examples' placeholder.
    with pytest.raises(ConfigError, match=re.escape("auth0.domain 'your-tenant.eu.auth0.com'")):
        load_settings(json.loads(data["config.json"]), secret)
    settings = load_settings(json.loads(filled_in(data["config.json"])), secret)
    assert settings.proxy.cache_type == "redis"
    config = json.loads(data["config.json"])
    assert "mgmt_client_secret" not in config["auth0"] and "cache_redis_url" not in config["proxy"]
    # The Redis example is the one the Secret's URL names, and only the proxy's pods may reach it.
    url = settings.proxy.cache_redis_url
    host = re.fullmatch(r"redis://:[^@]+@([^:/]+):6379/0", url).group(1)
    assert ("Service", host) in manifests
    policy = manifests[("NetworkPolicy", host)]
    [rule] = policy["spec"]["ingress"]
    proxy_labels = manifests[("Deployment", "auth0-m2m-proxy")]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert rule["from"] == [{"podSelector": {"matchLabels": proxy_labels}}]


# --- Dockerfile, .dockerignore, requirements.lock --------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_labels_carry_the_package_version():
    labels = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "LABEL":
            labels.update(re.findall(r'(\S+)="([^"]*)"', arguments))
    prefix = "org.opencontainers.image."
    assert {f"{prefix}{k}" for k in ("title", "description", "version", "source", "licenses")} <= (
        set(labels)
    )
    assert labels[f"{prefix}version"] == __version__
    assert labels[f"{prefix}licenses"] == "MIT"  # setup.cfg's license


def test_dockerfile_installs_the_lock_and_copies_only_the_app():
    instructions = dockerfile_instructions()
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in runs
    copied = [
        arguments.split()[:-1] for instruction, arguments in instructions if instruction == "COPY"
    ]
    assert copied == [["requirements.lock"], ["auth0_proxy/"], ["wsgi.py", "gunicorn.conf.py"]]
    assert ("EXPOSE", "8000 9100") in instructions
    assert ("USER", "10001:10001") in instructions


CONSOLE_SCRIPT = "/usr/local/bin/auth0-m2m-proxy"


def console_scripts() -> dict[str, str]:
    """setup.cfg's console scripts: name -> ``module:function``."""
    section = (ROOT / "setup.cfg").read_text().split("console_scripts =", 1)[1].split("\n\n")[0]
    return dict(re.findall(r"^\s+(\S+) = (\S+)$", section, re.M))


def test_the_image_has_the_console_script_the_readme_names(tmp_path):
    """What the Dockerfile writes as ``auth0-m2m-proxy`` runs the entry point of setup.cfg, from
    the app the image copies to its WORKDIR (on PYTHONPATH), in any working directory."""
    instructions = dockerfile_instructions()
    [workdir] = [arguments for instruction, arguments in instructions if instruction == "WORKDIR"]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in instructions if i == "ENV")))
    assert env["PYTHONPATH"] == workdir
    assert ("COPY", "auth0_proxy/ auth0_proxy/") in instructions  # into the WORKDIR
    [writes_script] = [a for i, a in instructions if i == "RUN" and CONSOLE_SCRIPT in a]
    assert console_scripts()["auth0-m2m-proxy"] == "auth0_proxy.cli:main"
    assert "python -m auth0_proxy.cli" in writes_script  # whose __main__ calls main()

    # The very instruction, with the script written here instead; run as the image would.
    script = tmp_path / "bin" / "auth0-m2m-proxy"
    script.parent.mkdir()
    subprocess.run(["sh", "-c", writes_script.replace(CONSOLE_SCRIPT, str(script))], check=True)
    path = f"{script.parent}:{Path(sys.executable).parent}:/usr/bin:/bin"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["auth0-m2m-proxy", *args],
            env={"PATH": path, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)},
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=60,
        )

    usage = run("check-config", "--help")
    assert usage.returncode == 0 and usage.stdout.startswith("usage: auth0-m2m-proxy check-config")
    refused = run("check-config", str(ROOT / "config.json.example"))
    assert refused.returncode == 1 and "is the example's placeholder" in refused.stderr


def test_the_package_installs_the_console_script(tmp_path):
    """The project as a distribution (``pip install .``) has the same entry point."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "auth0_proxy", source / "auth0_proxy", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = tmp_path / "target"
    # Offline: no index, and the build backend of this environment (setuptools).
    offline = ["--no-deps", "--no-index", "--no-build-isolation"]
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", *offline, "--target", target, source],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    script = (target / "bin" / "auth0-m2m-proxy").read_text()
    assert "from auth0_proxy.cli import main" in script


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern that matches
    it, or one of its parent directories, decides (``!`` lets back in)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if glob.startswith("**/"):
            suffix = glob[3:]
            hit = any(fnmatch.fnmatchcase(part, suffix) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates)
        if hit:
            ignored = not negated
    return ignored


def test_dockerignore_keeps_secrets_and_tooling_out_of_the_build():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        "config.json",
        "deploy/config.json",
        "auth0_proxy/config.json",
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_deploy.py",
        "bench/bench.py",
        ".pytest_cache/README.md",
        ".ruff_cache/CACHEDIR.TAG",
        "auth0_proxy/__pycache__/config.cpython-311.pyc",
        ".demo/certs/server-key.pem",
        "requirements-dev.txt",
    ):
        assert dockerignored(path, patterns), path
    for path in ("requirements.lock", "wsgi.py", "gunicorn.conf.py", "auth0_proxy/__init__.py"):
        assert not dockerignored(path, patterns), path


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock: normalized name -> (version, hashes)."""
    text = (ROOT / "requirements.lock").read_text()
    entries = {}
    for block in re.split(r"\n(?=\S)", re.sub(r"^#.*\n", "", text, flags=re.M)):
        requirement = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if requirement:
            entries[normalized(requirement.group(1))] = (
                requirement.group(2),
                re.findall(r"--hash=sha256:([0-9a-f]{64})", block),
            )
        else:
            assert not block.strip(), f"an entry of requirements.lock is not pinned: {block!r}"
    return entries


def test_lock_pins_every_requirement_at_its_version_with_hashes():
    locked = lock_entries()
    header = (ROOT / "requirements.lock").read_text().split("\n\n", 1)[0]
    assert "pip-compile --generate-hashes" in header and "requirements.txt" in header
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, version = line.split("==")
        assert normalized(name) in locked, f"{name} is not in requirements.lock: re-lock"
        assert locked[normalized(name)][0] == version, f"{name}: re-lock requirements.lock"
    for name, (_, hashes) in locked.items():
        assert hashes, f"{name} has no --hash in requirements.lock"


def test_lock_holds_every_package_the_app_imports():
    """The image installs the lock alone: a third-party import of auth0_proxy (or wsgi.py,
    gunicorn.conf.py) whose distribution is not in it would fail in production only."""
    modules = set()
    sources = [*(ROOT / "auth0_proxy").rglob("*.py"), ROOT / "wsgi.py", ROOT / "gunicorn.conf.py"]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"auth0_proxy", "__future__"}
    distributions = packages_distributions()
    locked = lock_entries()
    for module in sorted(third_party):
        assert module in distributions, f"{module} is imported but not installed"
        names = {normalized(name) for name in distributions[module]}
        assert names & set(locked), f"{module} ({names}) is missing from requirements.lock"


def test_the_example_redises_ask_for_the_password_the_proxy_sends(compose, manifests, tmp_path):
    """Compose: the password comes from one variable, for the server and the proxy's URL; run
    as the file says (a real redis-server), it refuses a client without it."""
    redis_service, proxy = compose["services"]["redis"], compose["services"]["proxy"]
    variable = "${AUTH0_PROXY_REDIS_PASSWORD:?set AUTH0_PROXY_REDIS_PASSWORD}"
    assert redis_service["environment"]["REDISCLI_AUTH"] == variable
    url = proxy["environment"]["AUTH0_PROXY_PROXY_CACHE_REDIS_URL"]
    assert url == f"redis://:{variable}@redis:6379/0"
    redis_binary()  # skips where there is none
    password, port = "0123456789abcdef", free_port()
    command = [part.replace("$$", "$") for part in redis_service["command"]]  # compose's escape
    command += ["--port", str(port), "--dir", str(tmp_path)]
    environ = {**os.environ, "REDISCLI_AUTH": password}
    server = subprocess.Popen(command, env=environ, stdout=subprocess.DEVNULL)
    try:
        wait_for_redis(redis.Redis(port=port, password=password))
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, retry=Retry(NoBackoff(), 0)).get("anything")
    finally:
        server.terminate()
        server.wait(timeout=10)
    # Kubernetes: the server's argument and the probes' variable are the Secret's password.
    example = {doc["kind"]: doc for doc in yaml.safe_load_all(REDIS_EXAMPLE[0].read_text()) if doc}
    [container] = example["Deployment"]["spec"]["template"]["spec"]["containers"]
    [auth] = container["env"]
    assert auth["name"] == "REDISCLI_AUTH"
    assert auth["valueFrom"]["secretKeyRef"] == {"name": "auth0-m2m-proxy-redis", "key": "password"}
    assert container["args"][:2] == ["--requirepass", "$(REDISCLI_AUTH)"]


def test_the_example_redis_never_evicts_a_budget_bucket(compose, manifests):
    """Every entry the proxy stores expires on its own; an evicted budget bucket would refill at
    once and let the proxy spend more than its share, so the example Redis never evicts."""
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    redis = yaml.safe_load_all(REDIS_EXAMPLE[0].read_text())
    deployment = next(doc for doc in redis if doc and doc["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
