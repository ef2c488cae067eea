"""Serve a Tenant over real HTTPS on loopback, in a background thread.

The server is cheroot's: HTTP/1.1 with kept-alive connections, as Auth0 serves, so a client's
connection reuse is exercised and can be counted (``connections``). werkzeug's development
server closes every connection after one answer.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from types import TracebackType

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from .app import create_app
from .certs import CertificatePaths, generate_certificates
from .tenant import Tenant

# Threads serve requests (idle kept-alive connections wait in a selector, not in a thread):
# enough for the slow answers tests inject to many concurrent callers.
SERVING_THREADS = 64
# An idle kept-alive connection is closed after this long, as a real server does.
IDLE_SECONDS = 30


class _QuietServer(wsgi.Server):
    """cheroot's threaded HTTP/1.1 server, quiet: clients that hang up or refuse the
    certificate are not worth a traceback on stderr."""

    # How long the serving loop waits on idle kept-alive connections between checks, and so
    # how long stop() takes while a client keeps one open (cheroot's default is 0.5 s).
    expiration_interval = 0.05

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
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
            (self.host, self._requested_port),
            create_app(self.tenant),
            numthreads=SERVING_THREADS,
            request_queue_size=128,
            timeout=IDLE_SECONDS,
            shutdown_timeout=1,
        )
        server.ssl_adapter = BuiltinSSLAdapter(
            str(self._certificates.cert), str(self._certificates.key)
        )
        server.stats["Enabled"] = True  # counts accepted connections
        server.keep_alive_conn_limit = None  # cheroot closes connections beyond 10 idle ones
        server.prepare()  # binds: the port is known from here on
        self.tenant.domain = f"localhost:{self._bound_port(server)}"
        self.tenant.events.open_streams()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve, name=f"emulated-tenant-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (and temporary certificates)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            # An open event stream holds its serving thread, which cheroot would wait for.
            self.tenant.events.close_streams()
            server.stop()
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
        return self._bound_port(self._server)

    @property
    def connections(self) -> int:
        """How many connections the tenant has accepted since it started."""
        return self._server.stats["Accepts"] if self._server is not None else 0

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
        return str(self.certificates.ca_bundle)

    @property
    def certificates(self) -> CertificatePaths:
        """The CA and the localhost certificate the server uses (another loopback server, such
        as the demo's proxy, may serve the same, so clients trust one CA)."""
        if self._certificates is None:
            raise RuntimeError("server is not running")
        return self._certificates

    def _certificate_directory(self) -> Path:
        if self._cert_dir is not None:
            return self._cert_dir
        self._temporary_dir = tempfile.TemporaryDirectory(prefix="emulated-tenant-")
        return Path(self._temporary_dir.name)

    @staticmethod
    def _bound_port(server: _QuietServer) -> int:
        return server.bind_addr[1]
