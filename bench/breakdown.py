"""Where a warm GET /users/<id> spends its time: the app's layers, peeled off one at a time.

Part of `make bench`; run alone with `python -m bench.breakdown`. The app runs in this process
(no gunicorn, no sockets) against the emulated tenant, with a warm cache; each row replaces one
more layer with nothing and times what is left, so the differences between rows are the cost
of each layer. Medians of 5 runs of 4,000 requests, microseconds per request.
"""

from __future__ import annotations

import io
import logging
import os
import statistics
import sys
import tempfile
import time
from urllib.parse import quote

from flask import Response
from werkzeug.test import EnvironBuilder

from auth0_proxy import create_app
from auth0_proxy.access import require_organization
from auth0_proxy.extensions import require_oauth
from emulated_tenant import TenantServer, demo_tenant
from emulated_tenant.demo import API_AUDIENCE, proxy_config

REQUESTS, RUNS = 4_000, 5


def empty(*_, **__):
    return Response(b"{}", mimetype="application/json")


def token_only(view):
    """The view behind the token and scope check alone."""

    def checked(**kwargs):
        require_oauth.acquire_token(["read:users"])
        return view(**kwargs)

    return checked


def timer(app, path: str, token: str):
    """Microseconds per request of ``app`` answering ``path`` (median of RUNS runs)."""
    environ = EnvironBuilder(path=path, headers={"Authorization": f"Bearer {token}"}).get_environ()

    def call() -> None:
        body = app({**environ, "wsgi.input": io.BytesIO(b"")}, lambda *args: None)
        b"".join(body)
        body.close()

    def measure() -> float:
        for _ in range(300):
            call()
        runs = []
        for _ in range(RUNS):
            started = time.perf_counter()
            for _ in range(REQUESTS):
                call()
            runs.append(1e6 * (time.perf_counter() - started) / REQUESTS)
        return statistics.median(runs)

    return measure


def main() -> int:
    tenant = demo_tenant()
    with TenantServer(tenant) as tenant_server:
        os.environ["REQUESTS_CA_BUNDLE"] = tenant_server.ca_bundle
        config = proxy_config(tenant)
        config["proxy"] = {"cache_ttl_seconds": 600, "cache_dir": tempfile.mkdtemp()}
        app = create_app(config)
        logger = logging.getLogger("auth0_proxy")
        logger.handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the whole run
        token = tenant.issue_token("edge-acme", API_AUDIENCE, scope="read:users")
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
