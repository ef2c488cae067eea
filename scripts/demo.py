"""`make demo`: the proxy under gunicorn in front of the emulated Auth0 tenant, used for real.

Starts the emulated tenant (HTTPS on loopback), writes a config.json for it, starts the proxy with
gunicorn, gets an M2M token for an edge client of one organization, calls the proxy and prints
what it answers. Then it leaves both running for you to try with curl, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import sys
import time

import requests
from auth0.management import ManagementClient
from auth0.management.errors import ForbiddenError

from emulated_tenant import TenantServer, demo_tenant
from emulated_tenant.demo import (
    ACME_CLIENT_ID,
    ACME_CLIENT_SECRET,
    API_AUDIENCE,
    edge_token,
    proxy_config,
)
from scripts.proxy_server import ROOT, ProxyServer

WORKDIR = ROOT / ".demo"
VERIFY = str(WORKDIR / "certs" / "ca.pem")  # the emulated tenant's CA: it signs both servers
DEMO_LEAVER = "auth0|carol-acme"
NEWCO_ORG_ID = "org_initech"
NEWCO_CLIENT_ID = "edge-initech"
NEWCO_CLIENT_SECRET = "edge-initech-secret"
LOG_FIELDS = ("level", "client_id", "org_id", "path", "status", "upstream_calls", "reason")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    parser.add_argument(
        "--tenant-port", type=int, default=int(os.environ.get("DEMO_TENANT_PORT", "8443"))
    )
    parser.add_argument("--once", action="store_true", help="exit after the calls (for CI)")
    args = parser.parse_args()

    # The emulated tenant makes new signing keys each run: start with an empty cache.
    shutil.rmtree(WORKDIR / "cache", ignore_errors=True)
    tenant = TenantServer(
        demo_tenant(), port=args.tenant_port, cert_dir=str(WORKDIR / "certs")
    ).start()
    config = proxy_config(tenant.tenant)
    config["events"] = {"source": "events_api"}  # step 10: a change in Auth0, seen in seconds
    config["client_grants"] = {"enabled": True}  # step 11: a customer onboarded in Auth0 alone
    proxy = ProxyServer(
        config,
        ca_bundle=tenant.ca_bundle,
        port=args.port,
        workdir=str(WORKDIR),
        env={"LOG_LEVEL": "INFO"},
        tls=tenant.certificates,  # HTTPS, as the Auth0 SDKs require; one CA for both servers
    )
    try:
        proxy.start()
        show(tenant, proxy)
        if not args.once:
            print("\nBoth are running. Press Ctrl-C to stop.", flush=True)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        tenant.stop()
        print("\nStopped the proxy and the emulated tenant.")
    return 0


def show(tenant: TenantServer, proxy: ProxyServer) -> None:
    heading(f"Emulated Auth0 tenant at {tenant.url}; proxy (gunicorn) at {proxy.url}")
    token = edge_token(tenant.url, tenant.ca_bundle)
    heading(f"1. {ACME_CLIENT_ID} got an M2M token for {API_AUDIENCE}; its claims:")
    print(json.dumps(claims_of(token), indent=2))

    auth = {"Authorization": f"Bearer {token}"}
    members = call("GET", f"{proxy.url}/users", auth, "2. GET /users: all members of org_acme")
    call(
        "GET",
        f"{proxy.url}/users/{quote(members[0]['user_id'])}",
        auth,
        f"3. GET /users/{members[0]['user_id']}: one member's profile",
    )
    call(
        "GET",
        f"{proxy.url}/users/{quote('auth0|frank-globex')}",
        auth,
        "4. A user of another organization: the same 404 as a user who does not exist",
    )
    call("GET", f"{proxy.url}/users", {}, "5. No token: 401")
    show_conditional_request(f"{proxy.url}/users", auth)
    show_sdk_call(proxy, token)
    show_metrics(proxy)
    show_event(tenant, f"{proxy.url}/users", auth)
    show_onboarding(tenant, proxy)

    heading("The proxy logged one JSON line per call (no token in them):")
    requests_logged = [record for record in proxy.log_records() if "status" in record]
    for record in requests_logged[-6:]:
        print(" ", json.dumps({key: record.get(key) for key in LOG_FIELDS}))

    heading("Try it yourself:")
    print(f"""  export TOKEN=$(curl -s --cacert {tenant.ca_bundle} {tenant.url}/oauth/token \\
      -d grant_type=client_credentials -d client_id={ACME_CLIENT_ID} \\
      -d client_secret={ACME_CLIENT_SECRET} -d audience={API_AUDIENCE} | python3 -c \\
      'import json,sys; print(json.load(sys.stdin)["access_token"])')
  export CURL_CA_BUNDLE={tenant.ca_bundle}
  curl -s -H "Authorization: Bearer $TOKEN" {proxy.url}/users
  curl -s -H "Authorization: Bearer $TOKEN" {proxy.url}/users/auth0%7Calice-acme
  curl -s -H "Authorization: Bearer $TOKEN" {proxy.url}/users/changes
  curl -s -H "Authorization: Bearer $TOKEN" {proxy.url}/api/v2/organizations/org_acme/members
The proxy's JSON log: {proxy.log_path}""")


def show_conditional_request(url: str, auth: dict) -> None:
    """A cached answer says how fresh it is; sending its ETag back costs nothing upstream."""
    heading("6. GET /users again: from the cache, saying how fresh it is")
    cached = requests.get(url, headers=auth, timeout=30, verify=VERIFY)
    print(f"GET {url} -> {cached.status_code}")
    for name in ("Age", "Cache-Status", "ETag"):
        print(f"  {name}: {cached.headers.get(name)}")
    heading("7. The same with If-None-Match: that ETag: 304, no body, no call to Auth0")
    validator = {**auth, "If-None-Match": cached.headers.get("ETag", "")}
    unchanged = requests.get(url, headers=validator, timeout=30, verify=VERIFY)
    print(f"GET {url} -> {unchanged.status_code} ({len(unchanged.content)} bytes of body)")


def show_sdk_call(proxy: ProxyServer, token: str) -> None:
    """The official Auth0 SDK, changed in two settings only: the domain and the token."""
    heading(
        "8. The Auth0 Python SDK pointed at the proxy: "
        f'ManagementClient(domain="{proxy.domain}", token=<the same token>)'
    )
    os.environ["SSL_CERT_FILE"] = str(proxy.tls.ca_bundle)  # the demo's CA, for the SDK
    auth0 = ManagementClient(domain=proxy.domain, token=token)
    members = auth0.organizations.members.list("org_acme", take=3)
    print("auth0.organizations.members.list('org_acme', take=3), every page:")
    for member in members:
        print(f"  {member.user_id:28} {member.email}")
    try:
        auth0.clients.list()
    except ForbiddenError as refusal:
        print(f"auth0.clients.list() -> {refusal.status_code}: {refusal.body['message']}")


def show_metrics(proxy: ProxyServer) -> None:
    """What an operator's Prometheus sees: the workers' counts, summed by gunicorn's master on
    an address of its own (never the edge clients' listener)."""
    heading(f"9. The proxy's metrics, from gunicorn's master at {proxy.metrics_url}:")
    text = requests.get(proxy.metrics_url, timeout=10).text
    shown = ("auth0_proxy_requests_total{", "auth0_proxy_upstream_calls_total{")
    shown += ("auth0_proxy_cache_answers_total{",)
    for line in text.splitlines():
        if line.startswith(shown) and 'route="/api/v2' not in line:
            print(f"  {line}")


def show_event(tenant: TenantServer, url: str, auth: dict) -> None:
    """With events on, a member removed in Auth0 leaves the proxy's answer within seconds, not
    after the cached list's refresh."""
    heading(
        f"10. Events on (events.source events_api): an admin removes {DEMO_LEAVER} from org_acme"
        " in Auth0"
    )
    tenant.tenant.remove_member("org_acme", DEMO_LEAVER)
    print(
        f"GET {url}: {DEMO_LEAVER} {until(lambda: DEMO_LEAVER not in listed(url, auth), 'gone')}"
        " (the list was cached for 30 s)"
    )
    tenant.tenant.add_member("org_acme", DEMO_LEAVER)
    print(f"added back in Auth0: {until(lambda: DEMO_LEAVER in listed(url, auth), 'listed again')}")


def show_onboarding(tenant: TenantServer, proxy: ProxyServer) -> None:
    """With client_grants on, a new customer's edge application is authorized in Auth0 (its
    grant for the proxy's API associated with the customer's organization) and the running
    proxy serves it: no config change, no restart."""
    heading(
        f"11. Onboarding in Auth0 (client_grants.enabled): {NEWCO_CLIENT_ID}, a new customer's"
        f" edge application, is authorized for {NEWCO_ORG_ID}"
    )
    admin = tenant.tenant
    admin.add_organization(NEWCO_ORG_ID, "initech", "Initech")
    for name in ("peter", "milton"):
        user_id = f"auth0|{name}-initech"
        admin.add_user(user_id, f"{name}@initech.example", name.title(), [NEWCO_ORG_ID])
    admin.add_client(NEWCO_CLIENT_ID, NEWCO_CLIENT_SECRET)
    grant = admin.add_client_grant(
        NEWCO_CLIENT_ID, API_AUDIENCE, ["read:users"], organization_usage="require"
    )
    admin.associate_client_grant(NEWCO_ORG_ID, grant.id)
    print(
        f"in Auth0: {NEWCO_CLIENT_ID}'s grant {grant.id} for the proxy's API requires an"
        f" organization and is associated with {NEWCO_ORG_ID} (config.json names no such client)"
    )
    token = edge_token(
        tenant.url, tenant.ca_bundle, NEWCO_CLIENT_ID, NEWCO_CLIENT_SECRET, NEWCO_ORG_ID
    )
    print(f"its token names org_id {claims_of(token)['org_id']}")
    call(
        "GET",
        f"{proxy.url}/users",
        {"Authorization": f"Bearer {token}"},
        f"GET /users as {NEWCO_CLIENT_ID}: served at once, the proxy still running",
    )


def listed(url: str, auth: dict) -> set[str]:
    response = requests.get(url, headers=auth, timeout=30, verify=VERIFY)
    return {member["user_id"] for member in response.json()}


def until(condition, done: str, timeout: float = 30.0) -> str:
    """``done`` and how long until ``condition()`` held (checked every 100 ms), or that it did
    not within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return f"{done} after {time.monotonic() - started:.1f} s"
        time.sleep(0.1)
    return f"not {done} within {timeout:g} s"


def call(method: str, url: str, headers: dict, title: str):
    heading(title)
    response = requests.request(method, url, headers=headers, timeout=30, verify=VERIFY)
    print(f"{method} {url} -> {response.status_code}")
    body = response.json()
    print(json.dumps(body, indent=2))
    return body


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def quote(user_id: str) -> str:
    return requests.utils.quote(user_id, safe="")


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
