"""The file that holds a host's token buckets: one limit for every process, whatever the number
of keys, and a slot per bucket only while it is not full."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from auth0_proxy.storage import buckets
from auth0_proxy.storage.buckets import Bucket, BucketFile, BucketFileFull

SLOW = 1e-6  # tokens a second: none come back during a test


def taken_by_processes(path: str, bucket: Bucket, processes: int, tries: int) -> int:
    """How many of ``processes`` x ``tries`` spends from one bucket were granted, each process
    spending at once from a file it mapped itself (after the fork)."""
    context = multiprocessing.get_context("fork")
    granted = context.Queue()
    start = context.Event()

    def spend() -> None:
        start.wait()
        file = BucketFile(path)
        granted.put(sum(file.take([bucket], 1)[0] for _ in range(tries)))

    workers = [context.Process(target=spend) for _ in range(processes)]
    for worker in workers:
        worker.start()
    start.set()
    total = sum(granted.get(timeout=30) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    return total


def test_processes_spending_at_once_spend_one_bucket(tmp_path):
    bucket = Bucket("limit:requests:edge-acme", rate=SLOW, capacity=100)
    assert taken_by_processes(str(tmp_path / "buckets"), bucket, processes=4, tries=60) == 100


def test_a_process_forked_after_spending_maps_the_file_again(tmp_path):
    """The parent's mapping and lock are not the child's: both spend from one bucket."""
    file = BucketFile(str(tmp_path / "buckets"))
    bucket = Bucket("budget:users", rate=SLOW, capacity=3)
    assert file.take([bucket], 1)[0]
    child = os.fork()
    if child == 0:  # the child: the same object, in a process of its own
        os._exit(0 if file.take([bucket], 1)[0] else 1)
    assert os.waitpid(child, 0)[1] == 0
    assert file.take([bucket], 1) == (True, [pytest.approx(0, abs=1e-3)])
    assert file.take([bucket], 1)[0] is False


def test_spends_from_several_buckets_are_all_or_none(tmp_path):
    file = BucketFile(str(tmp_path / "buckets"))
    client, fresh = Bucket("client", SLOW, capacity=5), Bucket("fresh", SLOW, capacity=1)
    assert file.take([fresh, client], 1)[0]
    assert file.take([fresh, client], 1) == (False, [pytest.approx(0, abs=1e-3), pytest.approx(4)])
    assert file.take([client], 1) == (True, [pytest.approx(3)])  # the refused spend took none


def test_a_full_bucket_frees_its_slot_and_the_file_never_grows(tmp_path, monkeypatch, clock):
    """Four slots: four buckets being spent fill them; once full again, others take them."""
    monkeypatch.setattr(buckets, "SLOTS", 4)
    monkeypatch.setattr(buckets, "PROBES", 4)
    path = tmp_path / "buckets"
    file = BucketFile(str(path))
    quick = [Bucket(f"limit:requests:client-{n}", rate=10.0, capacity=1) for n in range(5)]
    for bucket in quick[:4]:
        assert file.take([bucket], 1)[0]
    with pytest.raises(BucketFileFull):
        file.take([quick[4]], 1)
    assert file.take([quick[0]], 1)[0] is False  # its slot still holds it: empty
    clock.advance(2.1)  # full again (a tenth of a second, rounded up) and past the second of grace
    assert file.take([quick[4]], 1)[0]
    assert file.take([quick[0]], 1)[0]  # a full bucket, in a freed slot
    assert path.stat().st_size == 4 * buckets.SLOT.size


def test_the_file_is_this_users_alone(tmp_path):
    path = tmp_path / "buckets"
    BucketFile(str(path)).take([Bucket("k", SLOW, capacity=1)], 1)
    assert path.stat().st_mode & 0o077 == 0


def test_a_file_removed_or_replaced_is_mapped_again_by_every_process(tmp_path):
    """Workers that kept the old file would each have a limit of their own."""
    path = str(tmp_path / "buckets")
    first, second = BucketFile(path), BucketFile(path)
    bucket = Bucket("limit:requests:edge-acme", rate=SLOW, capacity=1)
    assert first.take([bucket], 1)[0]
    os.unlink(path)  # the cache directory emptied by hand, say
    assert second.take([bucket], 1)[0]  # a new file: a full bucket
    assert first.take([bucket], 1)[0] is False  # the first follows the file at the path
