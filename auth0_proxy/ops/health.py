"""Liveness and readiness for load balancers and Kubernetes probes."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from auth0_proxy.core.version import __version__

bp = Blueprint("health", __name__)
# The probes' endpoints: a probe that succeeds is logged at DEBUG (request_log), not one INFO
# line per probe every few seconds.
PROBES = frozenset({f"{bp.name}.healthz", f"{bp.name}.readyz"})


@bp.get("/healthz")
def healthz():
    """Alive: the process answers, and which version it is. Makes no upstream call."""
    return jsonify(status="ok", version=__version__)


@bp.get("/readyz")
def readyz():
    """Ready: config loaded, signing keys and a management token at hand, from the cache if
    there, even stale: through an Auth0 outage the proxy still serves requests with them.

    The shared store is reported (``store``: ``ok`` or ``unavailable``), never a reason to be
    unready: through its outage each process spends from buckets of its own and fetches from
    Auth0 directly, and every instance of a fleet sharing one Redis would go unready at once.

    :raise 503: the keys or the token are neither cached nor to be had from Auth0.
    """
    current_app.extensions["keys"].key_set()
    current_app.extensions["management"].token()
    store = current_app.extensions["store"]
    return jsonify(status="ready", store="ok" if store.answers() else "unavailable")
