"""Liveness and readiness for load balancers and Kubernetes probes."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from auth0_proxy.core.version import __version__

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Alive: the process answers, and which version it is. Makes no upstream call."""
    return jsonify(status="ok", version=__version__)


@bp.get("/readyz")
def readyz():
    """Ready: config loaded, signing keys and a management token at hand, from the cache if
    there, even stale: through an Auth0 outage the proxy still serves requests with them.

    :raise 503: either is neither cached nor to be had from Auth0.
    """
    current_app.extensions["keys"].key_set()
    current_app.extensions["management"].token()
    return jsonify(status="ready")
