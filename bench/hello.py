"""The ceilings of this stack for `make bench`: bare Flask endpoints under the same gunicorn, one
answering a small JSON object, one the very bytes of a member list the proxy answered (the file
named by ``BENCH_USERS_JSON``)."""

import os
from pathlib import Path

from flask import Flask, Response, jsonify

app = Flask(__name__)
USERS_JSON = (
    Path(os.environ["BENCH_USERS_JSON"]).read_bytes() if "BENCH_USERS_JSON" in os.environ else b"[]"
)


@app.get("/healthz")
def hello():
    return jsonify(status="ok")


@app.get("/users")
def users():
    return Response(USERS_JSON, mimetype="application/json")
