"""The proxy's JSON encoding: orjson, with the standard library for what orjson refuses."""

from __future__ import annotations

import json

import pytest

from auth0_proxy.core.json_codec import ascii_dumps, dumps
from tests.support import user_path


@pytest.mark.parametrize(
    "value",
    [
        {"name": "a\ud83d"},  # a lone surrogate, as json.loads makes of Auth0's "\ud83d"
        {"app_metadata": {"id": 2**70}},  # beyond 64 bits
        {1: "a"},  # not a string key
        {"nested": [{"x": "\u00e9\u2028"}]},
    ],
)
def test_anything_auth0_may_send_is_encoded_as_valid_json(value):
    decoded = json.loads(dumps(value))
    assert decoded == json.loads(json.dumps(value))


def test_log_lines_are_ascii_whatever_the_caller_sent():
    line = ascii_dumps({"path": "/users/\u2028\u0085\u00e9\ud800"})
    assert line.isascii() and "\n" not in line
    assert json.loads(line) == {"path": "/users/\u2028\u0085\u00e9\ud800"}


def test_a_member_with_a_lone_surrogate_in_a_name_is_served(call, make_token, tenant):
    user_id = "auth0|odd-name-acme"
    tenant.add_user(user_id, "odd@acme.example", name="Odd \ud83d", organizations=["org_acme"])
    try:
        token = make_token("edge-acme")
        listed = call("/users", token)
        profile = call(user_path(user_id), token)
    finally:
        tenant.remove_member("org_acme", user_id)
    assert listed.status_code == 200 and profile.status_code == 200
    [member] = [m for m in listed.json() if m["user_id"] == user_id]
    assert member["name"] == "Odd \ud83d"
    assert profile.json()["name"] == "Odd \ud83d"


def test_not_a_number_is_null_in_either_encoder():
    assert json.loads(dumps({"x": float("nan")})) == {"x": None}
    assert json.loads(dumps({"x": float("inf"), "big": 2**70})) == {"x": None, "big": 2**70}
