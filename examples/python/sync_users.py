#!/usr/bin/env python3
"""Sync your organization's users from auth0-m2m-proxy: an edge client to copy.

1. Get an M2M access token from your Auth0 tenant (client credentials, ``audience`` = the
   proxy's API), and keep it until shortly before it expires.
2. List every member of your organization through the proxy, page by page (``GET /users`` with
   Auth0's checkpoint paging: ``take``, then ``from`` = the previous page's ``next``).
3. Read one member's full profile (``GET /users/{id}``).

Every call to the proxy is retried when the proxy says "later" (``429``/``503`` with
``Retry-After``), a bounded number of times, and repeated once with a new token after a ``401``.

Needs only ``requests`` (``pip install requests``). Settings come from the command line or the
environment (``--help`` lists both). Prints one line per member (``user_id<TAB>email``), the
profile read, and a count; retries are told on stderr. Exits 1 if anything fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from email.utils import parsedate_to_datetime
from urllib.parse import quote

import requests

TIMEOUT = (5, 60)  # seconds: to connect, and to wait for an answer
MAX_ATTEMPTS = 5  # tries per call to the proxy while it answers 429/503
MAX_WAIT = 60  # seconds: never wait longer than this between two tries


class Failure(Exception):
    """Something the sync cannot get past; its message says what."""


class TokenSource:
    """An M2M token for the proxy's API, fetched once and reused until shortly before expiry."""

    def __init__(self, session, domain, client_id, client_secret, audience, organization=None):
        self.session = session
        self.url = f"https://{domain}/oauth/token"
        self.form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "audience": audience,
        }
        if organization:  # a client of several organizations names the one it wants
            self.form["organization"] = organization
        self.token = None
        self.renew_at = 0.0  # time.monotonic() after which the token is fetched again

    def get(self) -> str:
        if self.token is None or time.monotonic() >= self.renew_at:
            self.refresh()
        return self.token

    def refresh(self) -> None:
        answer = self.session.post(self.url, data=self.form, timeout=TIMEOUT)
        if answer.status_code != 200:
            raise Failure(f"token request: {answer.status_code} {answer.text[:200]}")
        body = answer.json()
        lifetime = int(body.get("expires_in", 3600))
        self.token = body["access_token"]
        # Renew a minute early (or at half-life for short-lived tokens): no call is ever sent
        # with a token that expires on the way.
        self.renew_at = time.monotonic() + lifetime - min(60, lifetime / 2)


class Proxy:
    """GETs to the proxy with the token, retrying what is worth retrying."""

    def __init__(self, session, base_url, tokens: TokenSource):
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens

    def get(self, path: str, params: dict | None = None):
        refreshed = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            headers = {"Authorization": f"Bearer {self.tokens.get()}"}
            answer = self.session.get(
                self.base_url + path, params=params, headers=headers, timeout=TIMEOUT
            )
            if answer.status_code == 401 and not refreshed:
                # Revoked keys, a clock off: fetch a new token, once, and try again.
                self.tokens.refresh()
                refreshed = True
                continue
            if answer.status_code in (429, 503) and attempt < MAX_ATTEMPTS:
                # 429: this client's rate limit, or the proxy's share of Auth0's is spent;
                # 503: the proxy waits for Auth0. Either way Retry-After says how long.
                wait = retry_after(answer)
                log(f"{answer.status_code} on {path}: retrying in {wait:g}s ({attempt})")
                time.sleep(wait)
                continue
            if answer.status_code != 200:
                raise Failure(f"GET {path}: {answer.status_code} {error_message(answer)}")
            return answer.json()
        raise Failure(f"GET {path}: still refused after {MAX_ATTEMPTS} tries")


def retry_after(answer) -> float:
    """``Retry-After`` in seconds (a number, or an HTTP date), 1 if absent, at most MAX_WAIT."""
    value = answer.headers.get("Retry-After", "1")
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = 1
    return min(max(seconds, 0), MAX_WAIT)


def error_message(answer) -> str:
    """The proxy answers errors in the Management API's shape: {"errorCode", "message", ...}."""
    try:
        body = answer.json()
        return f"{body['errorCode']}: {body['message']}"
    except (ValueError, KeyError, TypeError):
        return answer.text[:200]


def all_members(proxy: Proxy, page_size: int) -> list[dict]:
    """Every member, following the pages until one comes without ``next``. Each page is a small
    call of its own, so a retry repeats one page, not the whole list."""
    members, params = [], {"take": page_size}
    while True:
        page = proxy.get("/users", params)
        members.extend(page["members"])
        if not page.get("next"):
            return members
        params = {"take": page_size, "from": page["next"]}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def settings(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Sync an organization's users from the proxy.")
    option = parser.add_argument
    option("--domain", default=env("AUTH0_DOMAIN"), help="tenant domain [AUTH0_DOMAIN]")
    option("--client-id", default=env("AUTH0_CLIENT_ID"), help="[AUTH0_CLIENT_ID]")
    option("--client-secret", default=env("AUTH0_CLIENT_SECRET"), help="[AUTH0_CLIENT_SECRET]")
    option("--audience", default=env("PROXY_AUDIENCE"), help="the proxy's API [PROXY_AUDIENCE]")
    option("--proxy-url", default=env("PROXY_URL"), help="e.g. https://proxy.example [PROXY_URL]")
    option("--organization", default=env("AUTH0_ORGANIZATION"), help="[AUTH0_ORGANIZATION]")
    option("--page-size", type=int, default=int(env("PAGE_SIZE", "50")), help="1-100 [PAGE_SIZE]")
    option(
        "--ca-bundle",
        default=env("REQUESTS_CA_BUNDLE"),
        help="CA certificates to trust, for a private CA [REQUESTS_CA_BUNDLE]",
    )
    args = parser.parse_args(argv)
    missing = [
        name
        for name in ("domain", "client_id", "client_secret", "audience", "proxy_url")
        if not getattr(args, name)
    ]
    if missing:
        parser.error("missing: " + ", ".join("--" + name.replace("_", "-") for name in missing))
    args.domain = args.domain.removeprefix("https://").rstrip("/")  # bare, as Auth0 shows it
    return args


def main(argv: list[str] | None = None) -> int:
    args = settings(argv)
    session = requests.Session()  # one connection pool, kept alive across calls
    if args.ca_bundle:
        session.verify = args.ca_bundle
    tokens = TokenSource(
        session, args.domain, args.client_id, args.client_secret, args.audience, args.organization
    )
    proxy = Proxy(session, args.proxy_url, tokens)
    try:
        members = all_members(proxy, args.page_size)
        for member in members:
            print(f"{member['user_id']}\t{member.get('email', '')}")
        if members:
            first = members[0]["user_id"]
            profile = proxy.get(f"/users/{quote(first, safe='')}")  # "|" and "/" encoded
            print(f"profile of {first}: {profile.get('name')} <{profile.get('email')}>")
    except (Failure, requests.RequestException) as error:
        log(f"sync failed: {error}")
        return 1
    print(f"synced {len(members)} members")
    return 0


if __name__ == "__main__":
    sys.exit(main())
