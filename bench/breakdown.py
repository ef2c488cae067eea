"""Where a warm GET /users/<id> spends its time: the app's layers, peeled off one at a time.

Part of `make bench`; run alone with `python -m bench.breakdown`. The app runs in this process
(no gunicorn, no sockets) with a warm cache, against the emulated tenant in a process of its own
(its server threads would otherwise share this one's interpreter lock). The app is timed whole,
then with one more layer replaced by nothing at each step; a layer's cost is what removing it
saved. The fastest of 7 runs of 4,000 requests, microseconds per request (the fastest run is the
one least disturbed by the rest of the machine); the steps take turns, run by run.
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
from auth0_proxy.access.caller import require_organization
from auth0_proxy.access.tokens import require_oauth
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
    """Microseconds per request of ``app`` answering ``path``, in one run of REQUESTS."""
    environ = EnvironBuilder(path=path, headers={"Authorization": f"Bearer {token}"}).get_environ()

    statuses = []

    def call() -> None:
        body = app(
            {**environ, "wsgi.input": io.BytesIO(b"")}, lambda status, *_: statuses.append(status)
        )
        b"".join(body)
        body.close()

    def measure() -> float:
        for _ in range(200):
            call()
        if statuses[-1] != "200 OK":  # a layer that answers otherwise (a 429) is not measured
            raise RuntimeError(f"{path} answered {statuses[-1]}, not 200")
        statuses.clear()
        started = time.perf_counter()
        for _ in range(REQUESTS):
            call()
        return 1e6 * (time.perf_counter() - started) / REQUESTS

    return measure


def layers(app: Flask) -> dict[str, Callable[[], None]]:
    """For the whole request, then for each layer, a function that strips the app of it and of
    every layer before it."""
    view = app.view_functions["users.get_user"]
    hooks = {"before": app.before_request_funcs[None], "after": app.after_request_funcs[None]}
    logger = logging.getLogger("auth0_proxy")

    def strip(level: str, stripped_view: Callable | None = None, bare: bool = False):
        def apply() -> None:
            logger.setLevel(level)
            app.view_functions["users.get_user"] = stripped_view or view
            app.before_request_funcs[None] = [] if bare else hooks["before"]
            app.after_request_funcs[None] = [] if bare else hooks["after"]

        return apply

    return {
        "the whole request": strip("INFO"),
        "its JSON log line": strip("WARNING"),
        "the profile lookup and its JSON": strip(
            "WARNING", require_organization("read:users")(empty)
        ),
        "the organization check and rate limit": strip("WARNING", token_only(empty)),
        "the token check": strip("WARNING", empty),
        "the request hooks": strip("WARNING", empty, bare=True),
    }


def main() -> int:
    with tenant_process() as (config, ca_bundle):
        os.environ["REQUESTS_CA_BUNDLE"] = ca_bundle
        config["proxy"] = {"cache_ttl_seconds": 600, "cache_dir": tempfile.mkdtemp()}
        # The default rate limits: no request limit, and a client's upstream allowance that a
        # warm request never spends (make bench's warm rows, with none, take the same path).
        app = create_app(config)
        logging.getLogger("auth0_proxy").handlers[0].fd = os.open(os.devnull, os.O_WRONLY)
        token = edge_token(f"https://{config['auth0']['domain']}", ca_bundle)
        measure = timer(app, "/users/" + quote("auth0|alice-acme", safe=""), token)
        rows_apps, runs = layers(app), {}
        # Round by round, every row in turn, so that the machine's moods weigh on all alike.
        for _ in range(RUNS):
            for label, apply in rows_apps.items():
                apply()
                runs.setdefault(label, []).append(measure())
        fastest = [(label, min(times)) for label, times in runs.items()]

    (_, whole), *layers_removed = fastest
    print(f"{'warm GET /users/<id>, in process':<46} {'us/req':>7}")
    print(f"{'the whole request':<46} {whole:>7.0f}")
    for (label, left), (_, before) in zip(layers_removed, fastest, strict=False):
        print(f"{'  ' + label:<46} {before - left:>7.0f}")
    print(f"{'  bare Flask under it all':<46} {fastest[-1][1]:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
