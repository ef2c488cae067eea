"""Per-client policy: what one edge client may cost the tenant and change, beyond what it may see.

Every client's allowances live here: how often its ``Cache-Control: no-cache`` reaches Auth0
(counted in the shared store, so that it holds across workers and hosts), and the writes it may
make through /api/v2 (from the ``writes`` block of the config; none by default).
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import WriteGrant
from .errors import OperationNotAllowed
from .store import Store

NO_WRITES = WriteGrant()


class ClientPolicy:
    def __init__(
        self,
        store: Store,
        *,
        fresh_read_interval: int,
        writes: Mapping[str, WriteGrant] | None = None,
    ):
        self.store = store
        self.fresh_read_interval = fresh_read_interval
        self.writes = dict(writes or {})

    def may_read_fresh(self, client_id: str) -> bool:
        """Whether this client's ``no-cache`` is honoured now: once per interval, so that no
        client can make every one of its requests an upstream call."""
        return self.store.add(f"fresh-read:{client_id}", 1, self.fresh_read_interval)

    def write_grant(self, client_id: str, permission: str) -> WriteGrant:
        """What the client may touch with a write that needs ``permission``.

        :raise OperationNotAllowed: the config does not let this client make such writes (403).
        """
        grant = self.writes.get(client_id, NO_WRITES)
        if permission not in grant.permissions:
            raise OperationNotAllowed(
                f"Writes that need {permission} are not enabled for this client in the proxy.",
                reason=f"{permission} not in the client's writes",
            )
        return grant
