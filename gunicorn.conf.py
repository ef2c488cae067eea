"""gunicorn settings for auth0-m2m-proxy, read from the environment.

PORT (8000), WEB_CONCURRENCY worker processes (2), GUNICORN_THREADS threads per worker (8),
GUNICORN_TIMEOUT seconds before a stuck worker is replaced (30), GUNICORN_REUSE_PORT (1: a
listening socket per worker), METRICS_BIND (127.0.0.1:9100; empty: no metrics). The proxy
waits on Auth0, not on the CPU, so threaded workers (gthread) serve many slow upstream calls
per process.

SIGHUP re-reads config.json (and this file): a bad config is refused with one ERROR line and the
workers go on with the configuration accepted before; a good one reaches every new worker.
"""

import os
import tempfile

METRICS_BIND = os.environ.get("METRICS_BIND", "127.0.0.1:9100")


def prepare_metrics_directory() -> None:
    """prometheus-client picks its multiprocess mode when first imported (by auth0_proxy,
    below), from PROMETHEUS_MULTIPROC_DIR: every worker then writes its samples to files there,
    which the master sums. Files of an earlier run would be summed in: the directory starts
    empty. Once per master: a reload runs this file again, and keeps the directory."""
    if os.environ.get("AUTH0_PROXY_METRICS_DIR_READY"):
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="auth0-m2m-proxy-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        os.environ["AUTH0_PROXY_OWN_METRICS_DIR"] = "1"  # made here: removed at exit
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))
    os.environ["AUTH0_PROXY_METRICS_DIR_READY"] = "1"


if METRICS_BIND:
    prepare_metrics_directory()
else:  # no metrics served: the workers keep their samples in memory, not in files
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from flask import Flask  # noqa: E402

from auth0_proxy import accept_configuration, stop_background_work  # noqa: E402 - after the variable
from auth0_proxy.core import metrics  # noqa: E402
from auth0_proxy.core.config import ConfigError  # noqa: E402

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread, answering gunicorn's own refusals in JSON and redacting its log lines.
worker_class = "auth0_proxy.ops.gunicorn_worker.ProxyWorker"
# gunicorn's own lines (boot, workers, errors) in the app's format, redacted.
logger_class = "auth0_proxy.ops.gunicorn_worker.ProxyLogger"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# A socket per worker (SO_REUSEPORT): the kernel spreads new connections over the workers. On
# one shared socket a gthread worker accepts every connection waiting, so kept-alive clients
# that connect together can crowd onto a few workers while the others idle.
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "1") == "1"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# The app logs one JSON line per request itself; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn 27's control socket lives in $HOME, which the container user has not, and would be
# shared by several proxies on one host; the proxy needs none of its commands.
control_socket_disable = True


def on_starting(server):
    """Refuse to start with a bad config: one clear line, not a worker traceback per worker."""
    try:
        accept_configuration()
    except ConfigError as error:
        server.log.error("auth0-m2m-proxy: configuration error: %s", error)
        on_exit(server)  # gunicorn does not call it when starting fails
        raise SystemExit(1) from None


def when_ready(server):
    """Serve the workers' metrics from the master, on their own address."""
    if not METRICS_BIND:
        return
    try:
        metrics.serve(METRICS_BIND)
    except (OSError, ValueError) as error:
        server.log.error("metrics not served on %s: %s", METRICS_BIND, error)
    else:
        server.log.info("Metrics at http://%s/metrics", METRICS_BIND)


def on_reload(server):
    """SIGHUP: the workers about to be forked take the new config, if it is valid. Counted
    here, in the master, whose samples are served with the workers'."""
    try:
        accept_configuration()
    except ConfigError as error:
        metrics.observe_reload(accepted=False)
        server.log.error("configuration not reloaded, the running one stays: %s", error)
    else:
        metrics.observe_reload(accepted=True)
        server.log.info("configuration reloaded")


def post_worker_init(worker):
    """Say when a worker can take requests (its app is loaded), not only that it is booting."""
    worker.log.info("Worker ready (pid: %s)", worker.pid)


def worker_exit(server, worker):
    """A worker stops: the work it runs in the background ends (the Events API lease is given
    up for another worker to take at once)."""
    if isinstance(worker.wsgi, Flask):
        stop_background_work(worker.wsgi)


def child_exit(server, worker):
    metrics.worker_exited(worker.pid)


def on_exit(server):
    if os.environ.get("AUTH0_PROXY_OWN_METRICS_DIR"):
        metrics.remove_directory(os.environ["PROMETHEUS_MULTIPROC_DIR"])
