"""The one HTTP connection pool to the Auth0 tenant, with explicit timeouts.

Network failures become the proxy's own errors here, so no caller sees a requests exception:
a timeout is a 504, a refused or broken connection a 502.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import requests
from requests.adapters import HTTPAdapter

from .errors import UpstreamFailed, UpstreamTimeout

log = logging.getLogger(__name__)

USER_AGENT = "auth0-m2m-proxy/0.1"


class Upstream:
    """A pooled ``requests.Session`` to ``base_url``; one per worker process.

    ``on_call`` is told of each call, so the request log can count upstream calls without
    this module knowing about Flask.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        pool_size: int = 16,
        on_call: Callable[[], None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.on_call = on_call or (lambda: None)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send one request to the tenant; ``path`` must already be percent-encoded.

        :raise UpstreamTimeout: connect or read timeout (504).
        :raise UpstreamFailed: the connection failed (502).
        """
        self.on_call()
        url = self.base_url + path
        try:
            return self.session.request(
                method, url, timeout=self.timeout, allow_redirects=False, **kwargs
            )
        except requests.Timeout:
            log.warning("Auth0 timed out", extra={"upstream": _endpoint(method, path)})
            raise UpstreamTimeout(reason=f"timeout on {_endpoint(method, path)}") from None
        except requests.RequestException as error:
            reason = f"{type(error).__name__} on {_endpoint(method, path)}"
            log.warning("Auth0 unreachable: %s", reason)
            raise UpstreamFailed("The proxy cannot reach Auth0.", reason=reason) from None


def _endpoint(method: str, path: str) -> str:
    return f"{method} {path.split('?', 1)[0]}"
