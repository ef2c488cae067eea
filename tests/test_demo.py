"""`make demo` works: the script runs the whole product path and shows real answers."""

from __future__ import annotations

import subprocess
import sys

from scripts.proxy_server import ROOT, free_port


def test_demo_shows_an_organizations_users_and_a_refusal():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.demo",
            "--once",
            "--port",
            str(free_port()),
            "--tenant-port",
            str(free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "GET /users: all members of org_acme" in out
    assert "auth0|alice-acme" in out
    assert "-> 404" in out and "-> 401" in out and "-> 304 (0 bytes of body)" in out
    assert "auth0|carol-acme" in out.split("8. The Auth0 Python SDK")[1], "the SDK pages on"
    assert "auth0.clients.list() -> 403" in out
    assert "auth0|carol-acme gone after" in out.split("10. Events on")[1]  # by the event
    assert "added back in Auth0: listed again after" in out
    onboarding = out.split("11. Onboarding in Auth0")[1]  # a client config.json does not name
    assert "its token names org_id org_initech" in onboarding
    assert "GET /users as edge-initech: served at once" in onboarding
    assert "-> 200" in onboarding and "auth0|peter-initech" in onboarding
    metrics = out.split("9. The proxy's metrics")[1]
    assert 'auth0_proxy_requests_total{client="edge-acme",method="GET",route="/users",' in metrics
    assert "Stopped the proxy and the emulated tenant." in out
