"""The proxy's one version: the package's (setup.cfg reads it here), its User-Agent and /healthz."""

__version__ = "0.2.0"
