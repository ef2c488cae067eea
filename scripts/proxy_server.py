"""Run the proxy for real: gunicorn with the project's gunicorn.conf.py, on a free loopback port.

Shared by the end-to-end tests and ``make demo``, so both exercise exactly what users deploy.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from emulated_tenant.certs import CertificatePaths

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, and SIGKILL if it has not exited 15 s later (a server shutting down gracefully
    gets that long)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ProxyServer:
    """gunicorn serving ``app`` (the proxy's ``wsgi:app``) with the given config dict and the
    project's gunicorn.conf.py; logs captured to a file. With ``tls`` (a certificate and key,
    and the CA that signed them), gunicorn serves HTTPS itself, as the Auth0 SDKs require."""

    def __init__(
        self,
        config: dict,
        *,
        ca_bundle: str,
        workers: int = 2,
        threads: int = 4,
        port: int | None = None,
        workdir: str | None = None,
        env: dict | None = None,
        app: str = "wsgi:app",
        tls: CertificatePaths | None = None,
    ):
        self.app = app
        self.tls = tls
        self.workers = workers
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="auth0-proxy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "config.json"
        self.log_path = self.workdir / "proxy.log"
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.metrics_dir = self.workdir / "metrics"  # where the workers write their samples
        self.domain = f"127.0.0.1:{self.port}"  # what an Auth0 SDK takes as its domain
        self.url = f"{'https' if tls else 'http'}://{self.domain}"
        proxy_block = {"cache_dir": str(self.workdir / "cache"), **config.get("proxy", {})}
        self.config_path.write_text(json.dumps({**config, "proxy": proxy_block}, indent=2))
        self.env = {
            **os.environ,
            "AUTH0_PROXY_CONFIG": str(self.config_path),
            "REQUESTS_CA_BUNDLE": ca_bundle,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
            "METRICS_BIND": f"127.0.0.1:{self.metrics_port}",
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            # gunicorn's own lines at INFO whatever the app's LOG_LEVEL: start() waits for its
            # "Worker ready" lines.
            "GUNICORN_CMD_ARGS": "--log-level info"
            + (f" --certfile {tls.cert} --keyfile {tls.key}" if tls else ""),
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> ProxyServer:
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app],
            cwd=ROOT,
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        log_file.close()
        self._wait_until_healthy(timeout)
        return self

    def stop(self) -> int | None:
        if self.process:
            stop_process(self.process)
        return self.process.returncode if self.process else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict]:
        """The JSON lines the app and gunicorn logged (any other line is skipped)."""
        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records

    def _wait_until_healthy(self, timeout: float) -> None:
        """Until every worker has loaded the app: clients that connect at once (a benchmark's,
        kept alive) would otherwise all land on the first worker up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited ({self.process.returncode}):\n{self.log_text()}"
                )
            if self.log_text().count("Worker ready (pid:") >= self.workers:
                try:
                    verify = str(self.tls.ca_bundle) if self.tls else True
                    healthz = requests.get(f"{self.url}/healthz", timeout=1, verify=verify)
                    if healthz.status_code == 200:
                        return
                except requests.ConnectionError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gunicorn did not become healthy in {timeout}s:\n{self.log_text()}")

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
