"""Auth0's tenant-wide token bucket for the Management API, with the headers it sends."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

UNLIMITED_REPORTED_LIMIT = 1000


@dataclass(frozen=True)
class RateLimitDecision:
    """Whether a call may proceed and what ``x-ratelimit-*`` / ``Retry-After`` headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int = 0

    def headers(self) -> dict[str, str]:
        headers = {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


def unlimited_decision() -> RateLimitDecision:
    """Headers for an unthrottled tenant: a full bucket that is already reset."""
    limit = UNLIMITED_REPORTED_LIMIT
    return RateLimitDecision(True, limit, limit, int(time.time()))


def throttled_decision(limit: int) -> RateLimitDecision:
    """Headers for a 429 that did not come from the bucket (an injected fault): retry in 1 s."""
    return RateLimitDecision(False, limit, 0, int(time.time()) + 1, retry_after=1)


class TokenBucket:
    """``burst`` tokens refilled at ``per_second``; each call takes one (not thread-safe alone)."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("per_second must be > 0 and burst >= 1")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> RateLimitDecision:
        """Spend one token if there is one; the decision reports the bucket after the call."""
        self._refill()
        allowed = self._tokens >= 1
        if allowed:
            self._tokens -= 1
        seconds_to_full = (self.burst - self._tokens) / self.per_second
        retry_after = 0 if allowed else max(1, math.ceil((1 - self._tokens) / self.per_second))
        return RateLimitDecision(
            allowed=allowed,
            limit=self.burst,
            remaining=int(self._tokens),
            reset=math.ceil(time.time() + seconds_to_full),
            retry_after=retry_after,
        )

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
