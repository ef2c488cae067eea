# auth0-m2m-proxy: gunicorn serving the Flask app as an unprivileged user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PORT=8000 \
    AUTH0_PROXY_CONFIG=/etc/auth0-m2m-proxy/config.json

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY auth0_proxy/ auth0_proxy/
COPY wsgi.py gunicorn.conf.py ./

RUN useradd --system --uid 10001 --no-create-home proxy
USER 10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=3s \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=2)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
