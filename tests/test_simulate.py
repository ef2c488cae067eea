"""``make simulate`` still runs: a small fleet, through both proxies, against a plan's limits."""

from __future__ import annotations

import redis

from bench.simulate import parse_args, simulate
from tests.conftest import skip_without_redis

SMALL_FLEET = "--clients 12 --orgs 3 --members 60 --poll 2 --ramp 1 --warmup 1 --minutes 0.04"


def test_a_small_fleet_gets_every_list_and_leaves_no_redis_keys() -> None:
    skip_without_redis()
    run = simulate(parse_args(SMALL_FLEET.split()))
    answers = run.fleet.answers
    assert len(answers) >= 12
    assert {answer.status for answer in answers} <= {200, 304}  # 304: the client's list is current
    assert not any(answer.cut_off for answer in answers)
    listed = {answer.org for answer in answers if answer.status == 200}
    assert listed == {"org_sim00000", "org_sim00001", "org_sim00002"}
    assert {request["group"] for request in run.requests} <= {None, "organization_members"}
    assert not list(redis.Redis(host="127.0.0.1", port=6379).scan_iter(f"{run.redis_prefix}*"))
