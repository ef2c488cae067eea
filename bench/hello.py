"""The ceiling of this stack for `make bench`: a bare Flask endpoint under the same gunicorn."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/healthz")
def hello():
    return jsonify(status="ok")
