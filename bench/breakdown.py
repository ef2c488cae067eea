"""Where a warm GET /users/<id> spends its time: the app's layers, peeled off one at a time.

Part of `make bench`; run alone with `python -m bench.breakdown`. The app runs in this process
(no gunicorn, no sockets) with a warm cache, against the emulated tenant in a process of its own
(its server threads would otherwise share this one's interpreter lock). Each row replaces one
more layer with nothing and times what is left, so the differences between rows are the cost of
each layer. The fastest of 7 runs of 4,000 requests, microseconds per request: the fastest run
is the one least disturbed by the rest of the machine.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from flask import Flask, Response
from werkzeug.test import EnvironBuilder

from auth0_proxy import create_app
from auth0_proxy.access import require_organization
from auth0_proxy.extensions import require_oauth
from emulated_tenant.demo import edge_token

REQUESTS, RUNS = 4_000, 7


def empty(*_, **__):
    return Response(b"{}", mimetype="application/json")


def token_only(view):
    """The view behind the token and scope check alone."""

    def checked(**kwargs):
        require_oauth.acquire_token(["read:users"])
        return view(**kwargs)

    return checked


@contextmanager
def tenant_process() -> Iterator[tuple[dict, str]]:
    """The demo tenant served by ``python -m emulated_tenant``: the proxy's config, its CA."""
    workdir = Path(tempfile.mkdtemp(prefix="breakdown-"))
    config_path = workdir / "config.json"
    command = [sys.executable, "-m", "emulated_tenant", "--port", "0"]
    command += ["--cert-dir", str(workdir / "certs"), "--config-out", str(config_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        process.stdout.readline()  # the banner: serving, config written
        yield json.loads(config_path.read_text()), str(workdir / "certs" / "ca.pem")
    finally:
        process.terminate()
        process.communicate(timeout=10)


def timer(app: Flask, path: str, token: str) -> Callable[[], float]:
    """Microseconds per request of ``app`` answering ``path`` (the fastest of RUNS runs)."""
    environ = EnvironBuilder(path=path, headers={"Authorization": f"Bearer {token}"}).get_environ()

    def call() -> None:
        body = app({**environ, "wsgi.input": io.BytesIO(b"")}, lambda *args: None)
        b"".join(body)
        body.close()

    def measure() -> float:
        for _ in range(500):
            call()
        runs = []
        for _ in range(RUNS):
            started = time.perf_counter()
            for _ in range(REQUESTS):
                call()
            runs.append(1e6 * (time.perf_counter() - started) / REQUESTS)
        return min(runs)

    return measure


def main() -> int:
    with tenant_process() as (config, ca_bundle):
        os.environ["REQUESTS_CA_BUNDLE"] = ca_bundle
        config["proxy"] = {"cache_ttl_seconds": 600, "cache_dir": tempfile.mkdtemp()}
        app = create_app(config)
        logger = logging.getLogger("auth0_proxy")
        logger.handlers[0].fd = os.open(os.devnull, os.O_WRONLY)  # as deployed, but not shown
        token = edge_token(f"https://{config['auth0']['domain']}", ca_bundle)
        measure = timer(app, "/users/" + quote("auth0|alice-acme", safe=""), token)
        views, hooks = app.view_functions, (app.before_request_funcs, app.after_request_funcs)

        rows = [("the whole request", measure())]
        logger.setLevel("WARNING")
        rows.append(("without its log line", measure()))
        views["users.get_user"] = require_organization("read:users")(empty)
        rows.append(("and without the profile lookup and its JSON", measure()))
        views["users.get_user"] = token_only(empty)
        rows.append(("and without the organization check", measure()))
        views["users.get_user"] = empty
        rows.append(("and without the token check", measure()))
        for functions in hooks:
            functions[None] = []
        rows.append(("and without the request hooks: bare Flask", measure()))

    print(f"{'warm GET /users/<id>, in process':<46} {'us/req':>7} {'layer':>7}")
    for (label, micros), (_, below) in zip(rows, [*rows[1:], (None, 0.0)], strict=True):
        print(f"{label:<46} {micros:>7.0f} {micros - below:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
