"""The warm pool's policy: what it makes, when, and what it gives back (no Docker here;
the containers themselves are tested in tests/integration/test_warm_containers.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from orchestrator.executor.warm_pool import QUIET, Shape, Spare, WarmPool

A = Shape("img/a", "sha256:a", "c-nano", "65534:65534")
B = Shape("img/b", "sha256:b", "c-nano", None)


class Maker:
    """Records what the pool asks for; each spare is a token, made in ``seconds``."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.made: list[Shape] = []
        self.discarded: list[Spare] = []
        self.lock = threading.Lock()

    def make(self, shape: Shape) -> Spare:
        time.sleep(self.seconds)
        with self.lock:
            self.made.append(shape)
            number = str(len(self.made))
            return Spare(shape, number, f"container-{number}", f"spare-{number}", Path())

    def discard(self, spare: Spare) -> None:
        with self.lock:
            self.discarded.append(spare)


def settle(pool: WarmPool, seconds: float = 3.0) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        counts = pool.counts()
        if counts["wanted"] == 0 and counts["making"] == 0:
            return counts
        time.sleep(0.01)
    raise AssertionError(f"the pool did not settle: {pool.counts()}")


def test_a_claim_that_finds_none_asks_for_two_and_the_pool_grows_to_its_size():
    maker = Maker()
    pool = WarmPool(maker.make, maker.discard, size=3, idle=60)
    pool.open()
    try:
        assert pool.claim(A) is None
        assert settle(pool)["ready"] == 2
        assert pool.claim(A) is not None  # takes one, asks for one more
        assert pool.claim(B) is None  # another shape: asks for two, room for one
        assert settle(pool)["ready"] == 3
        assert sorted(s.image for s in maker.made) == ["img/a", "img/a", "img/a", "img/b"]
    finally:
        pool.close(timeout=5)


def test_a_claim_gets_a_ready_spare_of_its_own_shape_only():
    maker = Maker()
    pool = WarmPool(maker.make, maker.discard, size=4, idle=60)
    pool.open()
    try:
        pool.claim(A)
        settle(pool)
        assert pool.claim(B) is None
        spare = pool.claim(A)
        assert spare is not None and spare.shape == A
    finally:
        pool.close(timeout=5)


def test_replacements_wait_for_a_quiet_moment_while_spares_are_ready():
    """During a burst the ready spares serve it; making more would slow its attempts."""
    maker = Maker()
    pool = WarmPool(maker.make, maker.discard, size=4, idle=60)
    pool.open()
    try:
        pool.claim(A)
        time.sleep(QUIET + 0.2)
        settle(pool)
        made = len(maker.made)
        assert made == 2
        assert pool.claim(A) is not None  # one still ready: its replacement waits
        time.sleep(QUIET / 3)
        assert len(maker.made) == made
        deadline = time.monotonic() + 10
        while len(maker.made) == made:  # once quiet, made
            assert time.monotonic() < deadline, pool.counts()
            time.sleep(0.02)
        assert len(maker.made) == made + 1
    finally:
        pool.close(timeout=5)


def test_unclaimed_spares_expire_and_close_removes_the_rest():
    maker = Maker()
    pool = WarmPool(maker.make, maker.discard, size=4, idle=0.3)
    pool.open()
    try:
        pool.claim(A)
        settle(pool)
        deadline = time.monotonic() + 10
        while len(maker.discarded) < 2:
            assert time.monotonic() < deadline, pool.counts()
            time.sleep(0.05)
        assert pool.counts()["ready"] == 0
    finally:
        pool.close(timeout=5)
    again = WarmPool(maker.make, maker.discard, size=4, idle=60)
    again.open()
    again.claim(B)
    settle(again)
    assert again.close(timeout=5) == 2
    assert [s.shape for s in maker.discarded[-2:]] == [B, B]
    assert again.claim(B) is None and again.counts() == {"ready": 0, "wanted": 0, "making": 0}


def test_a_failing_engine_makes_no_busy_loop():
    calls = []

    def fail(shape: Shape) -> Spare:
        calls.append(shape)
        raise RuntimeError("engine down")

    pool = WarmPool(fail, lambda spare: None, size=4, idle=60)
    pool.open()
    try:
        pool.claim(A)
        time.sleep(1.0)
        assert len(calls) == 1  # the rest of the shape's requests were dropped
    finally:
        pool.close(timeout=5)


def test_close_waits_for_a_spare_being_made_and_removes_it():
    """A spare made while the worker stops must not outlive it (SIGTERM right after a run)."""
    maker = Maker(seconds=0.5)
    pool = WarmPool(maker.make, maker.discard, size=4, idle=60)
    pool.open()
    pool.claim(A)
    deadline = time.monotonic() + 5
    while pool.counts()["making"] == 0:
        assert time.monotonic() < deadline, pool.counts()
        time.sleep(0.01)
    pool.close(timeout=5)
    # Everything made is removed by the time close() returns, the one in flight included.
    assert len(maker.made) == 1
    assert [s.attempt_id for s in maker.discarded] == ["1"]
    time.sleep(0.6)
    assert len(maker.made) == 1  # and nothing is made after it


def test_a_claim_never_hands_out_a_spare_past_its_idle_time():
    """Past warm_idle a spare is about to exit by itself: a claim must not take it."""
    maker = Maker()
    pool = WarmPool(maker.make, maker.discard, size=2, idle=0.2)
    pool.open()
    try:
        pool.claim(A)
        settle(pool)
        time.sleep(0.3)
        assert pool.claim(A) is None
    finally:
        pool.close(timeout=5)


def test_a_pool_never_opened_makes_nothing():
    maker = Maker()
    pool = WarmPool(maker.make, maker.discard, size=2, idle=60)
    assert pool.claim(A) is None
    time.sleep(0.2)
    assert maker.made == []
    assert pool.close(timeout=1) == 0
