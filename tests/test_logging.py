"""One JSON line per request, with who and what, and never a token or a secret."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auth0_proxy.ops.logs import SECRET_PATTERN, JsonFormatter, formatter, redact
from tests.support import TOKEN, assert_refused, user_path

MGMT_SECRET = "proxy-mgmt-secret"


def test_each_request_is_one_json_line_with_its_facts(call, make_token):
    request_id = f"test-{uuid.uuid4().hex}"
    answer = call("/users", make_token("edge-acme"), headers={"X-Request-ID": request_id})
    line = answer.log
    assert line["caller_request_id"] == request_id
    assert line["level"] == "INFO" and line["logger"] == "auth0_proxy.request"
    assert line["client_id"] == "edge-acme" and line["org_id"] == "org_acme"
    assert line["method"] == "GET" and line["path"] == "/users" and line["status"] == 200
    assert line["upstream_calls"] >= 1 and line["duration_ms"] >= 0
    assert "reason" not in line


def test_the_request_id_is_the_proxys_own_and_the_callers_is_kept_beside_it(call, make_token):
    """A caller cannot choose the id its requests are logged (and audited) by: two requests
    sending the same id get ids of their own; the caller's is logged beside, if harmless."""
    generated = call("/users", make_token())
    assert len(generated.headers["X-Request-ID"]) == 32 and generated.log
    assert generated.log["caller_request_id"] is None
    answers = [call("/users", make_token(), headers={"X-Request-ID": "victim-request-0001"})
               for _ in range(2)]  # fmt: skip
    assert answers[0].headers["X-Request-ID"] != answers[1].headers["X-Request-ID"]
    for answered in answers:
        assert answered.headers["X-Request-ID"] != "victim-request-0001"
        assert answered.log["request_id"] == answered.headers["X-Request-ID"]
        assert answered.log["caller_request_id"] == "victim-request-0001"
    for unsafe in ['x" {"level": "forged"}', "x" * 129]:
        answered = call("/users", make_token(), headers={"X-Request-ID": unsafe})
        assert answered.headers["X-Request-ID"] != unsafe
        assert answered.log["request_id"] == answered.headers["X-Request-ID"]
        assert answered.log["caller_request_id"] is None


def test_denial_is_logged_at_warning_with_its_reason(call, make_token):
    answer = call("/users", make_token(claims={"aud": "https://other.example.com"}))
    assert_refused(answer, 401, "invalid_token", "invalid claim aud")
    assert answer.log["level"] == "WARNING" and answer.log["status"] == 401


@pytest.mark.parametrize("probe", ["/healthz", "/readyz"])
def test_a_probes_success_is_logged_at_debug_not_info(call, caplog, probe):
    """A probe every few seconds from each load balancer would crowd out the requests' lines."""
    quiet = call(probe)
    assert quiet.status_code == 200 and quiet.read_log() is None
    caplog.set_level(logging.DEBUG, logger="auth0_proxy.request")
    answer = call(probe)
    assert answer.status_code == 200
    assert answer.log["level"] == "DEBUG" and answer.log["path"] == probe
    assert answer.log["status"] == 200


def test_a_failing_probe_is_still_logged_at_error(make_app, call, tenant):
    proxy = make_app(failure_cooldown_seconds=0, retry_budget_seconds=0)
    tenant.inject_fault(TOKEN, status=500, times=1000)
    answer = call("/readyz", via=proxy)
    assert answer.status_code == 503
    assert answer.log["level"] == "ERROR" and answer.log["path"] == "/readyz"


def test_no_log_line_contains_a_token_or_secret(proxy, call, make_token, tenant):
    """Through gunicorn, whose own lines are in the same log."""
    tokens = [make_token("edge-acme"), make_token("edge-acme", claims={"aud": "https://x.example"})]
    for token in tokens:
        call("/users", token, via=proxy)
        call(user_path("auth0|alice-acme"), token, via=proxy)
        call(user_path(token), token, via=proxy)  # a caller that puts its token in the path
        call("/users", headers={"Authorization": f"Basic {token}"}, via=proxy)
    management_tokens = tenant.live_management_tokens()
    assert management_tokens, "the proxy should have obtained a management token"
    log = proxy.log_text()
    assert log.strip(), "the proxy should have logged"
    for secret in [*tokens, *management_tokens, MGMT_SECRET]:
        # Not the token, nor its claims or its signature alone (a line may cut a token short).
        for part in secret.split(".")[-2:]:
            assert part not in log
    assert "Bearer " not in log and "Authorization" not in log


SECRET_SHAPED_PARTS = [
    "eyJ",
    "eyj",
    "EYJ",
    ".",
    "%2E",
    "%2e",
    "abc",
    "_-",
    " ",
    "Bearer",
    "bEaReR",
    "basic",
    "BASIC",
    "\u017f",
    "\u0131",
    "\u212a",
    "access",
    "ACCESS",
    "_",
    "%5F",
    "token",
    "client",
    "secret",
    "=",
    "%3D",
    "&",
    '"',
    "/users/",
    "\u00e9",
]


@given(st.lists(st.sampled_from(SECRET_SHAPED_PARTS), max_size=24).map("".join))
@settings(max_examples=2000, deadline=None)
def test_redact_skips_the_pattern_only_where_it_could_not_match(text):
    """The quick check that spares most lines the regular expression never spares a secret."""
    assert redact(text) == SECRET_PATTERN.sub("[redacted]", text)


def test_every_kind_of_secret_is_redacted():
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    for text in [
        f"GET /users/{jwt}",
        f"GET /users/{jwt.replace('.', '%2E')}",
        f"Authorization: BEARER {jwt[:20]}",
        "Authorization: Basic ZWRnZTpzZWNyZXQ=",
        "GET /users?Access_Token=abc123&x=1",
        "client%5Fsecret%3Dabc123",
        "ba\u017fic abc123 for /users/\u00e9",
    ]:
        redacted = redact(text)
        assert (
            "[redacted]" in redacted and "abc123" not in redacted and "c2lnbmF0dXJl" not in redacted
        )


@pytest.mark.parametrize(
    "path",
    [
        'access_token=a"b',
        "access_token=a\\b",
        'x"} {"level": "forged',
        "bearer\u00a0opaque-credential-123",
        "basic\u2028opaque-credential-123",
        "ba\u017fic opaque-credential-123 \ud800",  # a lone surrogate: orjson refuses the line
    ],
)
def test_every_log_line_is_valid_json_and_redacted_whatever_the_path(path):
    record = logging.LogRecord("auth0_proxy.request", logging.WARNING, "", 0, "request", (), None)
    record.fields = {"path": f"/users/{path}"}
    line = JsonFormatter().format(record)
    assert line.isascii()
    fields = json.loads(line)
    assert set(fields) == {"time", "level", "logger", "pid", "message", "path"}
    assert "opaque-credential-123" not in line and 'a"b' not in fields["path"]


# A line a caller would like the log to hold: LOG_FORMAT=text's shape, an audit line.
FORGED = "2026-12-04 10:00:00,000 INFO auth0_proxy.audit: forged"


class TextLog(logging.Handler):
    """The proxy's lines as LOG_FORMAT=text writes them: each record and a newline."""

    def __init__(self):
        super().__init__()
        self.setFormatter(formatter("text"))
        self.text = ""
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.text += self.format(record) + "\n"
        self.records += 1


def test_a_text_line_is_one_line_whatever_the_caller_puts_in_its_path(make_app, make_token):
    """A newline in the path ("%0A") is escaped: no caller can forge a line of the text log."""
    app, log = make_app(), TextLog()
    logging.getLogger("auth0_proxy").addHandler(log)
    try:
        path = f"/users/alice%0A{quote(FORGED)}"
        answer = app.test_client().get(path, headers={"Authorization": f"Bearer {make_token()}"})
    finally:
        logging.getLogger("auth0_proxy").removeHandler(log)
    assert answer.status_code == 404
    lines = log.text.splitlines()
    assert len(lines) == log.records
    assert not [line for line in lines if line.startswith(FORGED)]
    [line] = [line for line in lines if "forged" in line]
    assert " WARNING auth0_proxy.request: request " in line
    assert f"path=/users/alice\\n{FORGED}" in line


@pytest.mark.parametrize(
    "separator",
    ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1b[2J", "\x00"],
)
def test_a_text_line_escapes_every_line_break_and_control_character(separator):
    record = logging.LogRecord(
        "auth0_proxy.request", logging.WARNING, "", 0, f"request{separator}{FORGED}", (), None
    )
    record.fields = {"path": f"/users/x{separator}{FORGED}", "status": 404}
    line = formatter("text").format(record)
    assert line.isprintable() and len(line.splitlines()) == 1
    escaped = repr(separator)[1:-1]  # as Python writes it in a string: "\\n", "\\u2028"
    assert line.count(f"{escaped}{FORGED}") == 2  # in the message and in the path
    assert line.endswith(f"path=/users/x{escaped}{FORGED} status=404")


def test_a_text_line_is_redacted_before_it_is_escaped():
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    record = logging.LogRecord("auth0_proxy.request", logging.WARNING, "", 0, "request", (), None)
    record.fields = {"path": f"/users/Bearer\nopaque-credential-123/{jwt}"}
    line = formatter("text").format(record)
    assert "opaque-credential-123" not in line and "c2lnbmF0dXJl" not in line
    assert line.endswith("path=/users/[redacted]")  # the credential, from its line break on


def test_a_tracebacks_lines_are_indented_under_its_record():
    try:
        raise ValueError(f"no such user: x\n{FORGED}")
    except ValueError:
        record = logging.LogRecord(
            "auth0_proxy", logging.ERROR, "", 0, "failed\nagain", (), sys.exc_info()
        )
    first, *rest = formatter("text").format(record).split("\n")
    assert first.endswith("ERROR auth0_proxy: failed\\nagain")
    assert rest and all(line.startswith("    ") for line in rest)
    assert f"    {FORGED}" in rest
