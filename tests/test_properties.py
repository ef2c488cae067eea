"""Property-based tests: for any id, query string or token mutation, the answer keeps its promises.

Whatever the input, the status is one docs/troubleshooting.md documents, the body is JSON in
the documented shape, and it never holds a user of another organization. The proxy runs in this
process.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ERROR_KEYS, Answer, b64, parts

DOCUMENTED_STATUSES = {200, 400, 401, 403, 404, 405, 413, 414, 429, 431, 502, 503, 504}
# The caller is edge-acme; these belong to org_globex only and must never reach it.
OTHER_ORG_SECRETS = ["frank-globex", "grace-globex", "hank-globex", "@globex.example"]

# One app serves every example of a test; the fixtures hold no state between examples.
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_promises_kept(response: Answer, sent: str = "") -> None:
    """Documented status, JSON body of the documented shape, nothing of another organization
    (but what the caller ``sent`` itself, which an error may quote: an unknown parameter)."""
    assert response.status_code in DOCUMENTED_STATUSES
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == ERROR_KEYS and body["statusCode"] == response.status_code
    for secret in OTHER_ORG_SECRETS:
        assert secret not in response.text or secret in sent


@PROPERTY_SETTINGS
@given(user_id=st.text(min_size=1, max_size=300))
def test_any_user_id(call, make_token, user_id):
    response = call("/users/" + quote(user_id, safe=""), make_token("edge-acme"))
    assert_promises_kept(response)
    assert response.status_code in {200, 404}


@PROPERTY_SETTINGS
@given(
    user_id=st.sampled_from(["auth0|alice-acme", "auth0|frank-globex", "auth0|shared-consultant"]),
    query=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=5),
)
def test_any_query_string(call, make_token, user_id, query):
    query_string = "&".join(f"{quote(key)}={quote(value)}" for key, value in query)
    for path in ["/users", "/users/" + quote(user_id, safe="")]:
        answer = call(f"{path}?{query_string}", make_token("edge-acme"))
        assert_promises_kept(answer, sent=str(query))


MUTATIONS = st.one_of(
    st.tuples(
        st.just("header"),
        st.sampled_from(["alg", "typ", "kid", "crit", "jku", "x5u"]),
        st.text(max_size=30),
    ),
    st.tuples(
        st.just("claims"),
        st.sampled_from(
            ["iss", "aud", "sub", "azp", "exp", "iat", "nbf", "org_id", "scope", "gty"]
        ),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=30),
            st.lists(st.text(max_size=10), max_size=3),
        ),
    ),
)


@PROPERTY_SETTINGS
@given(mutation=MUTATIONS, flip=st.integers(min_value=0, max_value=2000))
def test_any_token_mutation(call, make_token, mutation, flip):
    """A changed header or claim (kept with the original signature), or one flipped character."""
    token = make_token("edge-acme")
    part, name, value = mutation
    header, claims = parts(token)
    (header if part == "header" else claims)[name] = value
    signature = token.split(".")[2]
    forged = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{signature}"
    flipped = list(token)
    position = flip % len(token)
    # "A" (0) and "_" (63) differ in every bit, so the decoded bytes change even in the last
    # character of a segment, whose low bits may be padding.
    flipped[position] = "_" if flipped[position] != "_" else "A"
    for candidate in [forged, "".join(flipped)]:
        response = call("/users", candidate)
        assert_promises_kept(response)
        # Only the untouched token is valid: no mutation is ever accepted.
        assert response.status_code == 401 or candidate == token
