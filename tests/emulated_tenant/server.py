"""Serve a Tenant over real HTTPS on loopback, in a background thread."""

from __future__ import annotations

import ssl
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from .app import create_app
from .certs import CertificatePaths, generate_certificates
from .tenant import Tenant

# How often the serving loop checks for stop(); werkzeug's 0.5 s default makes stop() that slow.
SHUTDOWN_POLL_SECONDS = 0.02


class _QuietRequestHandler(WSGIRequestHandler):
    """No per-request access log on stderr: tests and the demo stay readable.

    The app sets ``Date`` itself (a fault may give the tenant a skewed clock), so the server
    does not add a second one as http.server's ``send_response`` would.
    """

    def log(self, type: str, message: str, *args: Any) -> None:
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self.send_response_only(code, message)
        self.send_header("Server", self.version_string())


class _QuietServer(ThreadedWSGIServer):
    """Clients that hang up or refuse the certificate are not worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class TenantServer:
    """``with TenantServer(tenant) as server:`` serves ``tenant`` at ``server.url``.

    Port 0 picks a free port; the tenant's domain (hence issuer and management audience) is set
    from the bound port before the first request can arrive.
    """

    def __init__(
        self,
        tenant: Tenant,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_dir: str | Path | None = None,
    ) -> None:
        self.tenant = tenant
        self.host = host
        self._requested_port = port
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._temporary_dir: tempfile.TemporaryDirectory[str] | None = None
        self._certificates: CertificatePaths | None = None
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> TenantServer:
        """Bind, set the tenant's domain, and serve; returns once the socket is listening."""
        if self._server is not None:
            return self
        self._certificates = generate_certificates(self._certificate_directory())
        server = _QuietServer(
            self.host,
            self._requested_port,
            create_app(self.tenant),
            handler=_QuietRequestHandler,
            ssl_context=self._ssl_context(self._certificates),
        )
        self.tenant.domain = f"localhost:{server.server_port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name=f"emulated-tenant-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (and temporary certificates)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if self._temporary_dir is not None:
            self._temporary_dir.cleanup()
            self._temporary_dir = None

    def __enter__(self) -> TenantServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server is not running")
        return self._server.server_port

    @property
    def domain(self) -> str:
        """The Auth0 "domain" a client configures: it builds ``https://{domain}/...``."""
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.domain}"

    @property
    def ca_bundle(self) -> str:
        """Path of the CA certificate to trust (``verify=`` / ``REQUESTS_CA_BUNDLE``)."""
        if self._certificates is None:
            raise RuntimeError("server is not running")
        return str(self._certificates.ca_bundle)

    def _certificate_directory(self) -> Path:
        if self._cert_dir is not None:
            return self._cert_dir
        self._temporary_dir = tempfile.TemporaryDirectory(prefix="emulated-tenant-")
        return Path(self._temporary_dir.name)

    @staticmethod
    def _ssl_context(certificates: CertificatePaths) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificates.cert, certificates.key)
        return context
