"""Locks across everyone who shares the store (threads, workers and, with Redis, hosts): a key
set only if absent, released only by its owner (compare-and-delete), and expiring, so a worker
that dies holding one blocks the others for at most its ``seconds``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from auth0_proxy.core import clock, metrics
from auth0_proxy.storage.store import Store


class Locks:
    """Named locks in ``store``, each held for at most ``seconds``."""

    def __init__(self, store: Store, seconds: int):
        self.store = store
        self.seconds = seconds

    @contextmanager
    def hold(
        self, name: str, *, done: Callable[[], bool] = lambda: False, poll_seconds: float = 0.05
    ) -> Iterator[None]:
        """Run the block holding the lock ``name``, across everyone who shares the store.

        A waiter stops waiting as soon as ``done()`` says the holder did the work (it then runs
        the block without the lock, re-checks and finds it done), or once the lock has been held
        for ``seconds`` (the holder is stuck or dead).
        """
        lock_key, owner = f"{name}:lock", uuid.uuid4().hex
        deadline = clock.monotonic() + self.seconds
        waited = False
        while not self.store.add(lock_key, owner, self.seconds):
            if not waited:
                waited = True
                metrics.COALESCED_WAITS.inc()
            time.sleep(poll_seconds)
            if done() or clock.monotonic() > deadline:
                owner = None
                break
        try:
            yield
        finally:
            if owner is not None:
                self.store.delete_if(lock_key, owner)

    @contextmanager
    def hold_if_free(self, name: str) -> Iterator[bool]:
        """Take the lock ``name`` if nobody holds it; whether it was taken."""
        lock_key, owner = f"{name}:lock", uuid.uuid4().hex
        held = self.store.add(lock_key, owner, self.seconds)
        try:
            yield held
        finally:
            if held:
                self.store.delete_if(lock_key, owner)
