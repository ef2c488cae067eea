# auth0-m2m-proxy: gunicorn serving the Flask app as an unprivileged user (uid 10001).
#
#   docker build -t auth0-m2m-proxy:0.2.0 .
#   docker run --read-only --tmpfs /tmp -p 8000:8000 \
#     -v "$PWD/config.json:/etc/auth0-m2m-proxy/config.json:ro" \
#     -e AUTH0_MGMT_CLIENT_SECRET auth0-m2m-proxy:0.2.0
#   docker run --rm -v "$PWD/config.json:/etc/auth0-m2m-proxy/config.json:ro" \
#     -e AUTH0_MGMT_CLIENT_SECRET auth0-m2m-proxy:0.2.0 auth0-m2m-proxy check-config
#
# The config is mounted, never built in (.dockerignore keeps config.json out of the build
# context). The process reads it as uid 10001 (group 10001): leave the secret out of it and pass
# AUTH0_MGMT_CLIENT_SECRET, or, if the file holds the secret, make it owned by 10001 (or group
# 10001) and not world-readable: chown 10001:10001 config.json && chmod 0400 config.json.
#
# Everything the proxy writes goes under $TMPDIR (/tmp): gunicorn's worker heartbeat files, the
# default file cache ($TMPDIR/auth0-m2m-proxy-10001, holding the management token: made 0700) and
# the Prometheus multiprocess directory. Run the image read-only with a tmpfs (or an emptyDir in
# Kubernetes) at /tmp. Several containers or hosts share a cache through Redis instead
# (proxy.cache_type "redis", deploy/docker-compose.yml).
FROM python:3.11-slim

# The repository the image is built from: docker build --build-arg SOURCE_URL=https://...
ARG SOURCE_URL=https://github.com/your-org/auth0-m2m-proxy
# version: auth0_proxy/version.py's (tests/test_deploy.py checks that they agree).
LABEL org.opencontainers.image.title="auth0-m2m-proxy" \
      org.opencontainers.image.description="Lets edge clients read only their own Auth0 Organization's users, holding the one real Management API credential." \
      org.opencontainers.image.version="0.2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/app \
    PORT=8000 \
    AUTH0_PROXY_CONFIG=/etc/auth0-m2m-proxy/config.json

WORKDIR /app
# Runtime dependencies only, each pinned with its hashes (requirements.lock, compiled from
# requirements.txt by pip-compile): pip refuses any file whose hash is not listed.
COPY requirements.lock .
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

COPY auth0_proxy/ auth0_proxy/
COPY wsgi.py gunicorn.conf.py ./
# The console script of setup.cfg (auth0-m2m-proxy = auth0_proxy.cli:main), for
# `docker run ... auth0-m2m-proxy check-config`. The app is not installed as a distribution (the
# build context holds the app alone, and building one would fetch a build backend the lock does
# not pin), so the script runs the module from /app, which PYTHONPATH names for any directory.
RUN printf '#!/bin/sh\nexec python -m auth0_proxy.cli "$@"\n' > /usr/local/bin/auth0-m2m-proxy \
    && chmod 0755 /usr/local/bin/auth0-m2m-proxy

RUN groupadd --system --gid 10001 proxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin proxy
USER 10001:10001

# 8000: the API (HOST, PORT). 9100: Prometheus metrics, served by the gunicorn master on
# METRICS_BIND, 127.0.0.1:9100 by default: set METRICS_BIND=0.0.0.0:9100 to scrape it from
# outside the container, and never publish it where clients reach it.
EXPOSE 8000 9100

HEALTHCHECK --interval=30s --timeout=3s \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=2)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
