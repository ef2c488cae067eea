"""The JSON encoders the proxy could use, timed side by side on what it actually encodes.

Part of `make bench`; run alone with `python -m bench.json_encoders`. Each row times one
payload with every encoder in alternation (several rounds, the median kept), and prints each
encoder's speed relative to the standard library's ``json`` in the same run.
"""

from __future__ import annotations

import json
import statistics
import sys
import timeit

import msgspec
import orjson

from emulated_tenant.records import User

ROUNDS = 7


def stdlib(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


ENCODERS = {
    "json (stdlib)": stdlib,
    "orjson": orjson.dumps,
    "msgspec": msgspec.json.Encoder().encode,
}


def payloads() -> dict:
    """What the proxy encodes: a profile, a page of 50 members, an error body, a log line."""
    profile = User(
        "auth0|bench-00001",
        "bench-00001@example.com",
        "Bench Member",
        {"app_metadata": {"plan": "gold", "roles": ["a", "b"]}, "user_metadata": {"tz": "UTC"}},
    ).profile()
    page = [
        User(f"auth0|bench-{n:05d}", f"bench-{n:05d}@example.com", f"Member {n}", {}).member()
        for n in range(50)
    ]
    error = {"statusCode": 404, "error": "Not Found", "message": "The user does not exist."}
    log_line = {
        "time": "2026-11-26T18:00:00.000Z",
        "level": "INFO",
        "logger": "auth0_proxy.request",
        "pid": 1234,
        "message": "request",
        "request_id": "0123456789abcdef0123456789abcdef",
        "client_id": "edge-acme",
        "org_id": "org_acme",
        "method": "GET",
        "path": "/users/auth0|bench-00001",
        "status": 200,
        "duration_ms": 0.4,
        "upstream_calls": 0,
    }
    return {
        "profile": profile,
        "page of 50 members": page,
        "error body": error,
        "log line": log_line,
    }


def time_per_call(encode, value, number: int) -> float:
    return timeit.timeit(lambda: encode(value), number=number) / number


def main() -> int:
    print(f"{'payload':<20} {'bytes':>7} " + " ".join(f"{name:>16}" for name in ENCODERS))
    for label, value in payloads().items():
        assert len({orjson.loads(encode(value)) == value for encode in ENCODERS.values()}) == 1
        number = 20_000 if label != "page of 50 members" else 2_000
        rounds = {name: [] for name in ENCODERS}
        for _ in range(ROUNDS):
            for name, encode in ENCODERS.items():
                rounds[name].append(time_per_call(encode, value, number))
        base = statistics.median(rounds["json (stdlib)"])
        cells = [f"{base / statistics.median(times):>15.1f}x" for times in rounds.values()]
        print(f"{label:<20} {len(stdlib(value)):>7} " + " ".join(cells))
    print("(speed relative to json (stdlib), higher is faster; medians of 7 interleaved rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
