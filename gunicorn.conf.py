"""gunicorn settings for auth0-m2m-proxy, read from the environment.

PORT (8000), WEB_CONCURRENCY worker processes (2), GUNICORN_THREADS threads per worker (8),
GUNICORN_TIMEOUT seconds before a stuck worker is replaced (30), GUNICORN_REUSE_PORT (1: a
listening socket per worker). The proxy waits on Auth0, not on the CPU, so threaded workers
(gthread) serve many slow upstream calls per process.
"""

import os
import sys

from auth0_proxy import load_configuration
from auth0_proxy.config import ConfigError

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread, answering gunicorn's own refusals in JSON and redacting its log lines.
worker_class = "auth0_proxy.gunicorn_worker.ProxyWorker"
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
        load_configuration()
    except ConfigError as error:
        print(f"auth0-m2m-proxy: configuration error: {error}", file=sys.stderr)
        sys.exit(1)


def post_worker_init(worker):
    """Say when a worker can take requests (its app is loaded), not only that it is booting."""
    worker.log.info("Worker ready (pid: %s)", worker.pid)
