"""A small synchronous client for the few Auth0 Management API endpoints the proxy needs.

It holds the proxy's one real Management credential. The management token is cached in the shared
cache until shortly before it expires, so a fleet of workers asks Auth0 for it once, and is
fetched once more when Auth0 answers 401 (expired or rotated early).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import requests
from marshmallow import ValidationError

from auth0_proxy.caching.cache import SharedCache
from auth0_proxy.caching.entries import Entry
from auth0_proxy.core import clock, metrics
from auth0_proxy.core.auth0_api import (
    CLIENT_GRANT_ORGANIZATIONS,
    CLIENT_GRANTS,
    MEMBERS,
    USER,
    USER_ORGANIZATIONS,
    USERS,
    api_path,
)
from auth0_proxy.core.config import Auth0Settings
from auth0_proxy.core.errors import (
    OrganizationNotFound,
    Relayed,
    TooManyRequests,
    UpstreamFailed,
    UpstreamUnavailable,
    UserNotFound,
)
from auth0_proxy.core.paging import (
    OFFSET_PAGING_LIMIT,
    CheckpointPaging,
    OffsetPaging,
)
from auth0_proxy.core.schemas import (
    client_grants_page,
    grant_organizations_page,
    members_page,
    user_organizations_page,
    users_page,
)
from auth0_proxy.spending.budget import Prepaid

from .upstream import Upstream, retry_after_seconds

log = logging.getLogger("auth0_proxy.management")

TOKEN_CACHE_KEY = "management-token:{client_id}"  # noqa: S105 - a cache key
# Renew this long before expiry, so a token is not used in its last minutes while Auth0 answers;
# while it fails, the token serves on through them, until it expires.
TOKEN_RENEWAL_MARGIN_SECONDS = 300
# A token may expire up to this long before its ``expires_in`` says: Auth0's ``iat`` is whole
# seconds, so it may fall before the request for the token was sent.
EXPIRY_ROUNDING_SECONDS = 1
# Auth0's refusals of a caller's own request, passed on as they are.
RELAYED_STATUSES = (400, 404, 409)
USER_ORGANIZATIONS_PAGE = 100  # the endpoint's maximum per_page (Management API spec)
MAX_PAGES = 100_000  # a bound on any paging loop: 5 million members at 50 per page
MAX_TAKE = 100  # the most a checkpoint page holds (Management API spec)


class _Gone(UpstreamFailed):
    """Auth0 answered 404 for something the proxy listed moments ago."""


class ManagementClient:
    """Reads organization members and user profiles with the proxy's management token."""

    def __init__(
        self, upstream: Upstream, cache: SharedCache, auth0: Auth0Settings, *, page_size: int
    ):
        self.upstream = upstream
        self.cache = cache
        self.auth0 = auth0
        self.page_size = page_size
        self.token_cache_key = TOKEN_CACHE_KEY.format(client_id=auth0.mgmt_client_id)

    def list_members(self, org_id: str, expected_pages: int = 1) -> Iterator[list[dict]]:
        """Every page of the organization's members, as Auth0 pages them (``{"members",
        "next"}``, members with the member fields), following checkpoint paging to the end.

        Offset paging stops at 1,000 records; ``from``/``take`` does not. The
        ``expected_pages`` (the last listing's) are paid for before the first is asked for.

        :raise BudgetExhausted: the budget cannot afford the listing now (429).
        :raise OrganizationNotFound: Auth0 has no such organization (deleted: 404).
        :raise UpstreamFailed: a page of an unexpected shape, or paging that does not advance.
        """
        path = api_path(MEMBERS, id=org_id)
        prepaid = self.upstream.prepay(path, expected_pages)
        pages = self._checkpoint_pages(
            path, members_page, self.page_size, missing=OrganizationNotFound, prepaid=prepaid
        )
        for page in pages:
            yield page["members"]

    def client_grants(
        self, audience: str, client_id: str | None = None, *, patient: bool = False
    ) -> Iterator[dict]:
        """Every client grant for ``audience`` (``client_id``'s only, if given). A ``patient``
        reader's pages wait their turn at the budget, as its rank would (a walk under way),
        instead of failing at once."""
        params = {"audience": audience} | ({"client_id": client_id} if client_id else {})
        path = api_path(CLIENT_GRANTS)
        pages = self._checkpoint_pages(
            path, client_grants_page, MAX_TAKE, params, prepaid=_committed(patient)
        )
        for page in pages:
            yield from page["client_grants"]

    def grant_organization_ids(self, grant_id: str, *, patient: bool = False) -> list[str]:
        """The ids of the organizations associated with a client grant; none for a grant Auth0
        no longer has (deleted since it was listed: a 404, which the spec does not document,
        or an empty list)."""
        path = api_path(CLIENT_GRANT_ORGANIZATIONS, id=grant_id)
        pages = self._checkpoint_pages(
            path, grant_organizations_page, MAX_TAKE, missing=_Gone, prepaid=_committed(patient)
        )
        try:
            return [org["id"] for page in pages for org in page["organizations"]]
        except _Gone:
            return []

    def _checkpoint_pages(
        self,
        path: str,
        schema,
        take: int,
        params: dict | None = None,
        *,
        missing=UpstreamFailed,
        prepaid: Prepaid | None = None,
    ) -> Iterator[dict]:
        """Each page of ``path`` by checkpoint paging, loaded with ``schema``, to the end. A page
        may hold fewer than ``take`` items before the end, so only an absent ``next`` ends it;
        the checkpoint is Auth0's own ``next``: a 400 would be Auth0's fault.

        :raise missing: 404 from Auth0.
        :raise UpstreamFailed: a page of an unexpected shape, or paging that does not advance.
        """
        paging = CheckpointPaging(take)
        for _ in range(MAX_PAGES):
            query = (params or {}) | paging.params()
            page = _load(schema, self.get_json(path, query, missing=missing, prepaid=prepaid), path)
            yield page
            if not page.get("next"):
                return
            if page["next"] == paging.checkpoint:
                raise UpstreamFailed(reason=f"{path}: checkpoint paging did not advance")
            paging = CheckpointPaging(take, page["next"])
        raise UpstreamFailed(reason=f"{path}: more than {MAX_PAGES} pages")

    def search_users(self, user_ids: list[str], fields: tuple[str, ...] | None) -> list[dict]:
        """The profiles of these users (at most 100, the search's page size), in one call; with
        just ``fields``, or whole.

        Users search (``q=user_id:("a" OR "b")``) answers many users per call where
        GET /users/{id} would take one call each. Only the users asked for are kept, whatever
        the search returns.
        """
        query = "user_id:(" + " OR ".join(_lucene_phrase(user_id) for user_id in user_ids) + ")"
        params = {
            "q": query,
            "search_engine": "v3",
            "per_page": len(user_ids),
            "include_totals": "true",
        }
        if fields is not None:
            params.update(fields=",".join(fields), include_fields="true")
        path = api_path(USERS)
        page = _load(users_page, self.get_json(path, params), path)
        wanted = set(user_ids)
        return [user for user in page["users"] if user.get("user_id") in wanted]

    def get_user(self, user_id: str) -> dict:
        """:raise UserNotFound: Auth0 has no such user (404)."""
        return self.get_json(api_path(USER, id=user_id), missing=UserNotFound)

    def user_organization_ids(self, user_id: str) -> list[str]:
        """The ids of every organization the user belongs to; none for an unknown user, whether
        Auth0 answers it with an empty list or, for a user deleted moments ago, with 404
        (undocumented: both are seen as none).

        The Management API has no single-membership lookup; a user's organizations are few,
        while an organization's members may be many, so membership is read from the user's side.
        """
        path = api_path(USER_ORGANIZATIONS, id=user_id)
        org_ids: list[str] = []
        # Offset paging ends at 1,000 records: at most 10 pages of 100.
        for page_number in range(OFFSET_PAGING_LIMIT // USER_ORGANIZATIONS_PAGE):
            paging = OffsetPaging(page_number, USER_ORGANIZATIONS_PAGE)
            try:
                body = self.get_json(path, paging.params(), missing=UserNotFound)
            except UserNotFound:
                return []
            page = _load(user_organizations_page, body, path)
            org_ids += [organization["id"] for organization in page["organizations"]]
            seen = page["start"] + len(page["organizations"])
            if not page["organizations"] or seen >= page["total"]:
                break
        return org_ids

    def get_json(
        self,
        path: str,
        params: dict | None = None,
        *,
        missing=UpstreamFailed,
        invalid=UpstreamFailed,
        prepaid: Prepaid | None = None,
    ) -> dict:
        """GET a Management API path with the cached token.

        :raise missing: 404 from Auth0 (by default a 502: the proxy asked for something absent).
        :raise invalid: 400 from Auth0 (by default a 502: the proxy's own query was wrong; a
            query with the caller's parameters passes the caller's error).
        :raise TooManyRequests: Auth0 rate-limits the tenant (429, with Retry-After).
        :raise UpstreamFailed: any other error answer (502).
        """
        response = self._call("GET", path, params=params, prepaid=prepaid)
        if response.status_code in (400, 404):
            error = missing if response.status_code == 404 else invalid
            summary = _error_summary(response)
            raise error(reason=f"Auth0 answered {response.status_code} on {path}: {summary}")
        return _json_object(_success(response, path), f"GET {path}")

    def relay(
        self, method: str, path: str, *, params: dict | None = None, body: object = None
    ) -> tuple[int, object]:
        """Make a request for the caller; Auth0's status and JSON answer (None for 204). Auth0's
        refusals of the request itself (400, 404, 409) reach the caller as Auth0 worded them.
        A write is sent once: only a 429, which Auth0 answers before acting, is retried.

        :raise Relayed: Auth0 refused the request (400, 404, 409).
        :raise TooManyRequests: Auth0 rate-limits the tenant (429, with Retry-After).
        :raise UpstreamFailed: any other error answer, or a body that is not JSON (502).
        """
        response = self._call(
            method, path, params=params, json=body, retry_failures=method == "GET"
        )
        if response.status_code in RELAYED_STATUSES:
            error = _json_value(response, f"{method} {path}")
            reason = f"Auth0 answered {response.status_code} on {method} {path}"
            raise Relayed(
                response.status_code, error if isinstance(error, dict) else {}, reason=reason
            )
        status = _success(response, path).status_code
        return status, None if status == 204 else _json_value(response, f"{method} {path}")

    def stream(self, path: str, **kwargs) -> requests.Response:
        """GET ``path`` as a stream to read as it comes (the Events API); Auth0's answer, any
        status, for the caller to close."""
        return self._call("GET", path, stream=True, **kwargs)

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send with the cached token; on a 401 (expired or rotated early), once more with a
        new one: Auth0 refused the first before acting on it."""
        token = self.token()
        response = self._send(method, path, token, **kwargs)
        if response.status_code == 401:
            log.info("management token refused; using or fetching a new one")
            self.cache.discard(self.token_cache_key, token)
            response = self._send(method, path, self.token(), **kwargs)
        return response

    def token(self) -> str:
        """The proxy's management token, from the cache or fetched once for all workers.

        Renewed in the background ahead of its renewal time; past it (Auth0 failing), it serves
        on while renewal is retried, but never past its own expiry.

        :raise UpstreamUnavailable: the token endpoint failed, and no unexpired token is cached
            (503).
        """
        entry = self._cached_token()
        if clock.now() < _token_expiry(entry):
            return entry.value
        self.cache.discard(self.token_cache_key, entry.value)  # expired: fetch, or fail, anew
        return self._cached_token().value

    def _cached_token(self) -> Entry:
        return self.cache.entry(
            self.token_cache_key,
            self._fetch_token,
            refresh_ahead=True,
            stale_seconds=TOKEN_RENEWAL_MARGIN_SECONDS,
            paid_by_reader=False,  # the proxy's cost, not a client's
        )

    def _send(
        self, method: str, path: str, token: str, *, headers: dict | None = None, **kwargs
    ) -> requests.Response:
        headers = {
            "Accept": "application/json",
            **(headers or {}),
            "Authorization": f"Bearer {token}",
        }
        return self.upstream.request(method, path, headers=headers, **kwargs)

    @metrics.fetch_of("management_token")
    def _fetch_token(self) -> tuple[str, int]:
        response = self.upstream.request(
            "POST",
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.auth0.mgmt_client_id,
                "client_secret": self.auth0.mgmt_client_secret,
                "audience": self.auth0.management_audience,
            },
        )
        if response.status_code != 200:
            raise UpstreamUnavailable(
                "The proxy cannot obtain its Auth0 management token.",
                reason=f"token endpoint: {response.status_code} {_error_summary(response)}",
            )
        grant = _json_object(response, "POST /oauth/token")
        lifetime = grant.get("expires_in", 86400)
        if not isinstance(grant.get("access_token"), str) or not isinstance(lifetime, int):
            raise UpstreamUnavailable(
                "The proxy cannot obtain its Auth0 management token.",
                reason="token endpoint answered without access_token or expires_in",
            )
        log.info("fetched a management token valid for %s s", lifetime)
        # Renewed the margin before expiry, or halfway for a token living less than twice it.
        ttl = max(lifetime - TOKEN_RENEWAL_MARGIN_SECONDS, lifetime // 2)
        return grant["access_token"], ttl


def _committed(patient: bool) -> Prepaid | None:
    """Nothing prepaid, yet committed: each call queues at the budget as its rank would."""
    return Prepaid(0) if patient else None


def _token_expiry(entry: Entry) -> float:
    """When a cached management token expires, told by its cache time (``_fetch_token``): as
    long again as its renewal margin (for a short-lived token, as its cache time), less a second
    since Auth0's ``iat`` is in whole seconds, and counted from when the fetch began."""
    ttl = entry.fresh_until - entry.stored_at
    return entry.fresh_until + min(TOKEN_RENEWAL_MARGIN_SECONDS, ttl) - EXPIRY_ROUNDING_SECONDS


def _lucene_phrase(value: str) -> str:
    """A quoted Lucene term: backslashes and quotes escaped, so an id cannot widen the query."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _success(response: requests.Response, path: str) -> requests.Response:
    """The response, if Auth0 succeeded.

    :raise TooManyRequests: 429 (with Retry-After). :raise UpstreamFailed: any other error.
    """
    status = response.status_code
    if status < 300:
        return response
    reason = f"Auth0 answered {status} on {path}: {_error_summary(response)}"
    if status == 429:
        retry_after = math.ceil(retry_after_seconds(response))
        raise TooManyRequests(reason=reason, headers={"Retry-After": str(retry_after)})
    log.warning(reason)
    raise UpstreamFailed(reason=reason)


def _load(schema, body: dict, path: str) -> dict:
    """Auth0's answer in the shape the proxy relies on.

    :raise UpstreamFailed: any other shape (502).
    """
    try:
        return schema.load(body)
    except ValidationError as error:
        log.warning("Auth0 answered %s in an unexpected shape: %s", path, error.messages)
        raise UpstreamFailed(reason=f"{path}: unexpected answer shape") from None


def _json_object(response: requests.Response, endpoint: str) -> dict:
    """The JSON object Auth0 answered; anything else is a bad gateway (502), not a crash."""
    body = _json_value(response, endpoint)
    if not isinstance(body, dict):
        log.warning("Auth0 answered %s with a body that is not a JSON object", endpoint)
        raise UpstreamFailed(reason=f"{endpoint}: body is not a JSON object")
    return body


def _json_value(response: requests.Response, endpoint: str) -> object:
    """:raise UpstreamFailed: the body is not JSON (502)."""
    try:
        return response.json()
    except ValueError:
        log.warning("Auth0 answered %s with a body that is not JSON", endpoint)
        raise UpstreamFailed(reason=f"{endpoint}: body is not JSON") from None


def _error_summary(response: requests.Response) -> str:
    """Auth0's error code and message, from a Management API or an OAuth error body."""
    try:
        body = response.json()
        code = body.get("errorCode") or body.get("error")
        return f"{code}: {body.get('message') or body.get('error_description')}"
    except (ValueError, AttributeError):
        return "non-JSON body"
