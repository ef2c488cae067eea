"""Auth0's token buckets for the Management API, by plan and endpoint group, with the headers
they send.

Auth0 limits the Management API per tenant: a bucket for the whole API (on some plans) and one
per endpoint group; a call spends a token from each bucket that covers it.
(auth0.com/docs/troubleshoot/customer-support/operational-policies/rate-limit-policy and its
rate-limit-configurations pages; /work/shared/auth0-facts.md, "Rate limits".)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

UNLIMITED_REPORTED_LIMIT = 1000

ORGANIZATION_MEMBERS = "organization_members"
USERS = "users"
USER_ORGANIZATIONS = "user_organizations"
ORGANIZATIONS = "organizations"
#: the whole Management API: every /api/v2 call counts against it
MANAGEMENT = "management"
GROUPS = (ORGANIZATION_MEMBERS, USERS, USER_ORGANIZATIONS, ORGANIZATIONS, MANAGEMENT)


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
        return self._decision(allowed)

    def peek(self) -> RateLimitDecision:
        """What ``take`` would decide now, spending nothing."""
        self._refill()
        return self._decision(self._tokens >= 1)

    def _decision(self, allowed: bool) -> RateLimitDecision:
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


def take_from_each(buckets: Iterable[TokenBucket]) -> RateLimitDecision:
    """One token from every bucket, or from none when any is empty.

    A refusal reports the bucket that refused (the longest wait, if several did); an allowed
    call reports the tightest bucket (fewest tokens left); no bucket at all is unlimited.
    """
    buckets = list(buckets)
    if not buckets:
        return unlimited_decision()
    refusals = [decision for decision in (b.peek() for b in buckets) if not decision.allowed]
    if refusals:
        return max(refusals, key=lambda decision: decision.retry_after)
    return min((bucket.take() for bucket in buckets), key=lambda decision: decision.remaining)


@dataclass(frozen=True)
class Limit:
    """One published bucket: ``burst`` requests at once, refilled at ``per_second``."""

    burst: int
    per_second: float

    @classmethod
    def per_minute(cls, burst: int, per_minute: int) -> Limit:
        return cls(burst, per_minute / 60)

    @property
    def rate_per_minute(self) -> float:
        return self.per_second * 60

    def bucket(self, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
        return TokenBucket(self.per_second, self.burst, clock)


# Essentials and Professional (rate-limit-configurations/essentials-professional-b2b):
# Read Organization Members, Read Users and Read User's Organizations burst 40, 500/min; Read
# Organizations by ID burst 20, 200/min. The whole Management API: no figure of that page in the
# excerpts we hold. Stricter reading than none: the older policy's 16 requests/s ("Self Service
# (Production)", rate-limit-policy/management-api-endpoint-rate-limits, the same figure it gives
# Enterprise), with Enterprise's burst of 50 (enterprise-public): a whole-API burst below 40
# would leave the published group bursts of 40 unreachable.
# "organizations" also holds GET /api/v2/organizations (the list), which Auth0 limits more
# tightly on self-service plans (burst 5, 50/min, self-service-public): the proxy never lists
# organizations, so the group carries the by-id figure.
_PAID_GROUPS = {
    ORGANIZATION_MEMBERS: Limit.per_minute(40, 500),
    USERS: Limit.per_minute(40, 500),
    USER_ORGANIZATIONS: Limit.per_minute(40, 500),
    ORGANIZATIONS: Limit.per_minute(20, 200),
}
_SELF_SERVICE = {**_PAID_GROUPS, MANAGEMENT: Limit(50, 16)}

#: plan → endpoint group → its bucket; a group a plan leaves out is limited only by
#: ``management`` (and a plan without ``management`` has no whole-API bucket)
PLANS: Mapping[str, Mapping[str, Limit]] = {
    # Free (rate-limit-configurations/free-public): the whole Management API burst 2, 2/s; none
    # of the endpoints the proxy uses has a bucket of its own there.
    "free": {MANAGEMENT: Limit(2, 2)},
    "essentials": _SELF_SERVICE,
    "professional": _SELF_SERVICE,
    # Enterprise (rate-limit-configurations/enterprise-public): production burst 50, 16/s; Read
    # Organization Members and Read User's Organizations burst 40, 500/min. Read Users and Read
    # Organizations by ID are not in the excerpts we hold: stricter reading, the paid plans'
    # figures (burst 40, 500/min; burst 20, 200/min) rather than none.
    "enterprise": {**_PAID_GROUPS, MANAGEMENT: Limit(50, 16)},
}


def endpoint_group(method: str, endpoint_or_path: str) -> str:
    """The endpoint group a Management API call counts against besides ``management`` (or
    ``management`` alone when no group covers it).

    ``endpoint_or_path`` is a raw path (``/api/v2/users/auth0%7Cx?fields=email``) or a route
    template (``/api/v2/users/{id}``).

    :raise ValueError: not a Management API path.
    """
    path = endpoint_or_path.split("?", 1)[0].rstrip("/")
    prefix = "/api/v2"
    if path != prefix and not path.startswith(prefix + "/"):
        raise ValueError(f"{endpoint_or_path!r} is not a Management API path")
    segments = path[len(prefix) + 1 :].split("/") if path != prefix else []
    # Auth0's endpoint groups are reads; a write (creating users, invitations, members, roles)
    # counts against the whole API's bucket only.
    if method.upper() != "GET" or not segments:
        return MANAGEMENT
    resource, rest = segments[0], segments[1:]
    # An organization's other reads (invitations, enabled connections) are published under no
    # group of their own: stricter reading, Read Organizations by ID's bucket; a member's roles
    # are read with its members. Its client grants (Machine-to-Machine Access) are grant
    # administration, not a read of the organization: like /client-grants, no group covers them.
    if resource == "organizations":
        if len(rest) >= 2 and rest[0] != "name" and rest[1] == "members":
            return ORGANIZATION_MEMBERS
        if len(rest) >= 2 and rest[0] != "name" and rest[1] == "client-grants":
            return MANAGEMENT
        return ORGANIZATIONS
    if resource == "users":
        if len(rest) <= 1:
            return USERS
        if len(rest) == 2 and rest[1] == "organizations":
            return USER_ORGANIZATIONS
        return MANAGEMENT
    if resource == "users-by-email" and not rest:
        return USERS
    return MANAGEMENT


class PlanLimits:
    """A plan's buckets, full at the start; ``buckets_for(group)`` are those a call spends from."""

    def __init__(self, plan: str, clock: Callable[[], float] = time.monotonic) -> None:
        """:raise ValueError: an unknown plan."""
        if plan not in PLANS:
            raise ValueError(f"unknown plan {plan!r}; expected one of {sorted(PLANS)}")
        self.plan = plan
        self._buckets = {group: limit.bucket(clock) for group, limit in PLANS[plan].items()}

    def buckets_for(self, group: str) -> list[TokenBucket]:
        """The group's bucket and the whole API's, those the plan has."""
        names = [group] if group == MANAGEMENT else [group, MANAGEMENT]
        return [self._buckets[name] for name in names if name in self._buckets]
