"""Per-client policy: what one edge client may cost the tenant, beyond what it may see.

Every client's allowances live here, counted in the shared store so that they hold across
workers and hosts: today how often its ``Cache-Control: no-cache`` reaches Auth0.
"""

from __future__ import annotations

from .store import Store


class ClientPolicy:
    def __init__(self, store: Store, *, fresh_read_interval: int):
        self.store = store
        self.fresh_read_interval = fresh_read_interval

    def may_read_fresh(self, client_id: str) -> bool:
        """Whether this client's ``no-cache`` is honoured now: once per interval, so that no
        client can make every one of its requests an upstream call."""
        return self.store.add(f"fresh-read:{client_id}", 1, self.fresh_read_interval)
