"""The one HTTP connection pool to the Auth0 tenant: timeouts, bounded retries, shared back-off.

Network failures become the proxy's own errors here, so no caller sees a requests exception: a
timeout is a 504, a refused or broken connection a 502.

Auth0 rate-limits per tenant, for every client of it at once. So every call first spends from
the governor's shared budget, and what Auth0 answers about its limit goes back to the governor:
after a 429 every worker of every host waits for the time Auth0 names (``Retry-After``, else
``x-ratelimit-reset``) instead of each discovering the limit with a call of its own, so a burst
of clients never becomes a retry storm. A call waits or retries only within ``retry_budget``
seconds; past that the caller gets 429 with Retry-After.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable

import requests
from requests.adapters import HTTPAdapter

from auth0_proxy.core import clock, metrics
from auth0_proxy.core.auth0_api import endpoint_group, endpoint_template
from auth0_proxy.core.errors import UpstreamFailed, UpstreamTimeout
from auth0_proxy.core.version import __version__
from auth0_proxy.spending.budget import BudgetExhausted, Governor, Prepaid

log = logging.getLogger("auth0_proxy.upstream")

USER_AGENT = f"auth0-m2m-proxy/{__version__}"
# Auth0's SDK backs off 100 ms * 2^n, at most 1 s (auth0-python rest.py); jitter spreads a herd.
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 1.0
MAX_ATTEMPTS = 10
MAX_RATE_LIMIT_WAIT_SECONDS = 60.0


class Upstream:
    """A pooled ``requests.Session`` to ``base_url``; one per worker process.

    ``on_call`` is told of each call, so the request log can count upstream calls without
    this module knowing about Flask; ``before_request`` of each request before its budget is
    spent, with its endpoint group (and of a listing's first page before the listing prepays
    its pages, ``ahead=True``), and may refuse it by raising (a client's upstream allowance).
    """

    def __init__(
        self,
        base_url: str,
        governor: Governor,
        *,
        connect_timeout: float,
        read_timeout: float,
        retry_budget: float,
        pool_size: int = 16,
        on_call: Callable[[], None] | None = None,
        before_request: Callable[..., None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.governor = governor
        self.timeout = (connect_timeout, read_timeout)
        self.retry_budget = retry_budget
        self.on_call = on_call or (lambda: None)
        self.before_request = before_request or (lambda group, ahead=False: None)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def request(
        self,
        method: str,
        path: str,
        *,
        prepaid: Prepaid | None = None,
        retry_failures: bool = True,
        **kwargs,
    ) -> requests.Response:
        """Send one request to the tenant, retrying 429, 5xx and broken connections in budget.

        ``path`` must already be percent-encoded. A write passes ``retry_failures=False``: a 5xx
        or a broken connection may have left it done, so only a 429 (which Auth0 answers before
        doing anything) is retried; reads and the token request are always safe to retry. Each
        attempt is paid from
        ``prepaid`` (a listing's pages) or the governor's budget. The last answer is returned
        as it is, 429 and 5xx included.

        :raise BudgetExhausted: the budget cannot afford the call within the retry budget (429).
        :raise UpstreamTimeout: connect or read timeout (504); not retried, it used the time.
        :raise UpstreamFailed: the connection failed on every attempt (502).
        """
        group = endpoint_group(path)
        self.before_request(group)
        deadline = clock.monotonic() + self.retry_budget
        for attempt in range(MAX_ATTEMPTS):
            self._spend(group, prepaid, deadline)
            try:
                response = self._send(method, path, **kwargs)
            except UpstreamFailed:
                last = not retry_failures or attempt + 1 == MAX_ATTEMPTS
                if last or not _sleep_before_retry(attempt, deadline):
                    raise
                metrics.UPSTREAM_RETRIES.labels(group, "connection").inc()
                continue
            if response.status_code == 429:
                wait = retry_after_seconds(response)
                log.warning("Auth0 answered 429 on %s; backing off %.1fs", group, wait)
                metrics.UPSTREAM_RATE_LIMITED.labels(group).inc()
                self.governor.observe(group, response, wait)
                # Sleep here too: the shared budget may be lost (a cache outage), the wait must not.
                if not _sleep_with_jitter(wait, deadline):
                    raise BudgetExhausted(
                        reason=f"Auth0 answered 429 on {_endpoint(method, path)}",
                        headers={"Retry-After": str(math.ceil(wait))},
                    )
                metrics.UPSTREAM_RETRIES.labels(group, "429").inc()
            else:
                self.governor.observe(group, response, 0.0)
                final = response.status_code < 500 or not retry_failures
                if final or not _sleep_before_retry(attempt, deadline):
                    return response
                metrics.UPSTREAM_RETRIES.labels(group, "5xx").inc()
        return response

    def prepay(self, path: str, calls: int) -> Prepaid:
        """Pay for ``calls`` to ``path`` at once (a listing's pages); a client may queue for
        them within the retry budget.

        :raise BudgetExhausted: the budget cannot afford them now (429).
        """
        group = endpoint_group(path)
        self.before_request(group, ahead=True)
        return self.governor.prepay(group, calls, wait=self.retry_budget)

    def _spend(self, group: str, prepaid: Prepaid | None, deadline: float) -> None:
        """Pay for one attempt: from what the listing prepaid, else from the budget (a page
        beyond what was prepaid queues for it; a client may wait in its retry budget)."""
        if prepaid is not None and prepaid.take():
            return
        wait = deadline - clock.monotonic()
        committed = prepaid is not None
        self.governor.spend(group, wait=wait, committed=committed, turn=committed and prepaid.turn)

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        self.on_call()
        started = time.perf_counter()
        status = 0  # no answer
        try:
            kwargs.setdefault("timeout", self.timeout)  # a stream's reads wait longer
            response = self.session.request(
                method, self.base_url + path, allow_redirects=False, **kwargs
            )
        except requests.Timeout:
            log.warning("Auth0 timed out on %s", _endpoint(method, path))
            raise UpstreamTimeout(reason=f"timeout on {_endpoint(method, path)}") from None
        except requests.RequestException as error:
            reason = f"{type(error).__name__} on {_endpoint(method, path)}"
            log.warning("Auth0 unreachable: %s", reason)
            raise UpstreamFailed("The proxy cannot reach Auth0.", reason=reason) from None
        else:
            status = response.status_code
            return response
        finally:
            metrics.observe_upstream(
                method, endpoint_template(path), status, time.perf_counter() - started
            )


def retry_after_seconds(response: requests.Response) -> float:
    """Seconds until Auth0 accepts calls again, between 1 and ``MAX_RATE_LIMIT_WAIT_SECONDS``.

    ``Retry-After`` if given, else ``x-ratelimit-reset`` (a UNIX time) measured against Auth0's
    own clock (the ``Date`` header), so a skewed local clock cannot stretch the wait. Anything
    unreadable counts as one second and anything huge is capped, so one odd header cannot lock
    the proxy out of Auth0.
    """
    headers = response.headers
    wait = _number(headers.get("Retry-After"))
    if wait is None:
        reset = _number(headers.get("x-ratelimit-reset"))
        now = _http_date(headers.get("Date")) or clock.now()
        wait = reset - now if reset is not None else None
    return min(max(wait or 1.0, 1.0), MAX_RATE_LIMIT_WAIT_SECONDS)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text and text.isascii() else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _http_date(text: str | None) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(text).timestamp() if text else None
    except (TypeError, ValueError):
        return None


def _sleep_with_jitter(wait: float, deadline: float) -> bool:
    """Sleep ``wait`` plus full jitter (up to as long again) if that fits the budget; else no.

    The jitter spreads the callers who waited for the same reset over one more such period,
    instead of sending them all at once.
    """
    wait += random.uniform(0, wait)  # noqa: S311 - jitter, not crypto
    if clock.monotonic() + wait > deadline:
        return False
    time.sleep(wait)
    return True


def _sleep_before_retry(attempt: int, deadline: float) -> bool:
    """Back off exponentially with jitter if the retry still fits the budget; else say no."""
    return _sleep_with_jitter(
        min(FIRST_BACKOFF_SECONDS * 2**attempt, MAX_BACKOFF_SECONDS), deadline
    )


def _endpoint(method: str, path: str) -> str:
    return f"{method} {path.split('?', 1)[0]}"
