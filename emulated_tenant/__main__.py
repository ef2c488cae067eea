"""Run the demo tenant in the foreground: ``python -m emulated_tenant --port 8443 ...``."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
from pathlib import Path
from types import FrameType

from .demo import demo_tenant, proxy_config
from .ratelimit import PLANS
from .server import TenantServer
from .tenant import Tenant


class StopRequested(Exception):
    """Raised in the main thread by Ctrl-C (SIGINT) or SIGTERM: shut the server down cleanly."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m emulated_tenant",
        description="Serve the demo Auth0 tenant over HTTPS on loopback until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    parser.add_argument("--cert-dir", required=True, type=Path, help="where the CA/cert PEMs go")
    parser.add_argument("--config-out", type=Path, help="write the proxy's config.json here")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    parser.add_argument("--rate-limit", type=float, help="Management API calls per second")
    parser.add_argument("--plan", choices=sorted(PLANS), help="enforce this Auth0 plan's limits")
    parser.add_argument("--event-stream-url", help="push each new event to this webhook")
    parser.add_argument("--event-stream-token", help="the webhook's bearer token")
    parser.add_argument("--event-stream-ca", type=Path, help="CA bundle the webhook's TLS is of")
    args = parser.parse_args(argv)
    if args.event_stream_url and not args.event_stream_token:
        parser.error("--event-stream-url needs --event-stream-token")
    return args


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM stop the server, whatever the parent left them as.

    A background job of a script (``make test &``) inherits SIGINT ignored (POSIX Shell Command
    Language 2.11, "Signals and Error Handling"), and Python then installs no KeyboardInterrupt
    handler ("if the parent process has not changed it", docs of the ``signal`` module).
    """
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _request_stop)


def _request_stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested(signal.Signals(signum).name)


def serve(args: argparse.Namespace) -> None:
    """Serve the demo tenant until a stop signal arrives."""
    tenant = demo_tenant()
    tenant.latency = args.latency_ms / 1000
    tenant.set_rate_limit(args.rate_limit)
    tenant.enforce_plan(args.plan)
    with (
        TenantServer(tenant, port=args.port, cert_dir=args.cert_dir) as server,
        event_stream(tenant, args),
    ):
        if args.config_out:
            args.config_out.write_text(json.dumps(proxy_config(tenant), indent=2) + "\n")
        print(f"Emulated Auth0 tenant at {server.url} (CA: {server.ca_bundle})", flush=True)
        if args.config_out:
            print(f"Proxy config written to {args.config_out}", flush=True)
        if args.event_stream_url:
            print(f"Pushing events to {args.event_stream_url}", flush=True)
        threading.Event().wait()


def event_stream(tenant: Tenant, args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The Event Stream the flags ask for (stopped on leaving), or nothing."""
    if not args.event_stream_url:
        return contextlib.nullcontext()
    return tenant.add_event_stream(
        args.event_stream_url,
        {"method": "bearer", "token": args.event_stream_token},
        verify=str(args.event_stream_ca) if args.event_stream_ca else True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    try:
        serve(args)
    except StopRequested:
        print("Emulated tenant stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
