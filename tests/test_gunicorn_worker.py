"""The one gunicorn internal the proxy relies on, checked, so that an upgrade cannot break it
unnoticed: gunicorn answers requests it refuses itself (invalid HTTP, over-long lines) through
``gunicorn.util.write_error``, which ``Worker.handle_error`` calls by module lookup and the
proxy's worker replaces to answer in JSON. setup.cfg pins gunicorn to the release line checked
here; test_server.py shows the JSON answers themselves."""

from __future__ import annotations

import inspect

from gunicorn import util
from gunicorn.workers.base import Worker

from auth0_proxy.ops.gunicorn_worker import ProxyWorker, write_json_error


def test_gunicorn_answers_its_refusals_through_util_write_error():
    assert "util.write_error(client, status_int, reason, mesg)" in inspect.getsource(
        Worker.handle_error
    )
    assert list(inspect.signature(util.write_error).parameters) == list(
        inspect.signature(write_json_error).parameters
    )


def test_the_proxy_worker_is_gunicorns_threaded_worker():
    from gunicorn.workers.gthread import ThreadWorker

    assert issubclass(ProxyWorker, ThreadWorker)
