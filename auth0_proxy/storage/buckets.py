"""Token buckets: what one is, how a spend from several works, and the file that holds them for
every process of one host (the file cache's; Redis keeps them in a script, store.py).

The file cache's buckets (the budget's, and each client's rate limits) are spent on every
request, so a spend must cost next to nothing, whatever the number of clients: each bucket is
one fixed-size slot, found by hashing its key (open addressing, linear probing), and a spend is
an ``flock`` held for a few microseconds of arithmetic on shared memory, with no read or write
call. (A JSON file of every bucket, read and rewritten per spend, cost more than the request.)
A slot whose bucket is full again is free for another key; an unknown key is a full bucket.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from auth0_proxy.core import clock

SLOT = struct.Struct("<8sddd")  # the key's digest, level, at, full_at (when it is full again)
SLOTS = 32_768  # a megabyte: thousands of clients' buckets, most of them full (free) at a time
# The file's name says its layout: a key's slot depends on it, so another layout is another file.
FILE_NAME = f".buckets-{SLOTS}x{SLOT.size}"
PROBES = 64  # slots a key may be from its home slot
NO_KEY = bytes(8)  # the digest of a slot never used (the file starts as zeros)


@dataclass(frozen=True)
class Bucket:
    """A token bucket to spend from: ``capacity`` tokens, refilled at ``rate`` per second. A
    spend must leave at least ``floor`` (below zero: calls queued for tokens to come); the level
    is first lowered to ``ceiling`` (what the tenant says is left)."""

    key: str
    rate: float
    capacity: float
    floor: float = 0.0
    ceiling: float = float("inf")

    def refilled(self, state: Sequence[float] | None, now: float) -> float:
        level, at = state[:2] if state is not None else (self.capacity, now)
        return min(self.capacity, level + max(0.0, now - at) * self.rate, self.ceiling)

    def seconds_to_refill(self, level: float) -> int:
        return math.ceil((self.capacity - level) / self.rate) + 1


def spend_from(
    buckets: Sequence[Bucket], states: Sequence[tuple[float, float] | None], calls: int, now: float
) -> tuple[bool, list[float]]:
    """Refill the buckets (``states``: level and time of each, None for a full one), then spend
    ``calls`` from all of them if each keeps its floor: whether they were spent, and the levels."""
    levels = [bucket.refilled(state, now) for bucket, state in zip(buckets, states, strict=True)]
    floors = [bucket.floor for bucket in buckets]
    granted = all(level - calls >= floor for level, floor in zip(levels, floors, strict=True))
    return granted, [level - calls for level in levels] if granted else levels


class BucketFileFull(Exception):
    """Every slot within reach of a key's home holds a bucket that is not full."""


class BucketFile:
    """The slots in ``path`` (created for this user alone). Safe across threads and processes:
    each process maps the file itself (again after a fork, whose flock would be shared)."""

    def __init__(self, path: str):
        self.path = path
        self._mutex = threading.Lock()  # an flock excludes processes, not threads sharing it
        self._pid: int | None = None
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._file_id: tuple[int, int] | None = None  # device and inode of the mapped file

    def take(self, buckets: Sequence[Bucket], calls: int) -> tuple[bool, list[float]]:
        """``spend_from`` the buckets as this file holds them, and keep their levels."""
        with self._mutex:
            table = self._mapped()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                return self._spend(table, buckets, calls, clock.now())
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _spend(
        self, table: mmap.mmap, buckets: Sequence[Bucket], calls: int, now: float
    ) -> tuple[bool, list[float]]:
        digests = [hashlib.blake2b(b.key.encode(), digest_size=8).digest() for b in buckets]
        slots: list[int] = []
        for digest in digests:
            slots.append(self._slot_of(table, digest, now, taken=slots))
        states = [self._state(table, slot, now) for slot in slots]
        granted, levels = spend_from(buckets, states, calls, now)
        for bucket, digest, slot, level in zip(buckets, digests, slots, levels, strict=True):
            full_at = now + bucket.seconds_to_refill(level)
            SLOT.pack_into(table, slot * SLOT.size, digest, level, now, full_at)
        return granted, levels

    @staticmethod
    def _slot_of(table: mmap.mmap, digest: bytes, now: float, taken: list[int]) -> int:
        """The key's slot, else the first free one in its reach (not one of ``taken``)."""
        home = int.from_bytes(digest, "little") % SLOTS
        free = None
        for probe in range(PROBES):
            slot = (home + probe) % SLOTS
            if slot in taken:
                continue
            key, _, _, full_at = SLOT.unpack_from(table, slot * SLOT.size)
            if key == digest:
                return slot
            if key == NO_KEY:  # never used: the key is not further on
                return slot if free is None else free
            if free is None and full_at <= now:
                free = slot
        if free is None:
            raise BucketFileFull(f"no free slot within {PROBES} of a key's home in {SLOTS}")
        return free

    @staticmethod
    def _state(table: mmap.mmap, slot: int, now: float) -> tuple[float, float] | None:
        key, level, at, full_at = SLOT.unpack_from(table, slot * SLOT.size)
        return (level, at) if key != NO_KEY and full_at > now else None  # None: full

    def _mapped(self) -> mmap.mmap:
        """This process's mapping of the file at ``path`` now: mapped again after a fork, or
        once the file was replaced or removed (every worker then spends from the new one)."""
        if self._pid == os.getpid() and self._maps_path():
            return self._map
        self._unmap()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Blocks allocated now, not at the first write to each page: on a full disk that
            # write would kill the worker (SIGBUS); this fails with an OSError (a cache outage).
            os.posix_fallocate(fd, 0, SLOTS * SLOT.size)  # zeros: every slot never used
            self._map = mmap.mmap(fd, SLOTS * SLOT.size)
        except BaseException:
            os.close(fd)
            raise
        mapped = os.fstat(fd)
        self._fd, self._pid, self._file_id = fd, os.getpid(), (mapped.st_dev, mapped.st_ino)
        return self._map

    def _maps_path(self) -> bool:
        try:
            on_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (on_path.st_dev, on_path.st_ino) == self._file_id

    def _unmap(self) -> None:
        """Let go of the mapping and descriptor this object holds (inherited from the parent
        after a fork: the child maps its own, and takes its own flock)."""
        if self._map is not None:
            self._map.close()
            os.close(self._fd)
        self._map, self._fd, self._pid, self._file_id = None, -1, None, None
