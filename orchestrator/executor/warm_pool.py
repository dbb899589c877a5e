"""Spares: gated containers (orchestrator.executor.gate) started before any attempt asked.

Spares are kept per :class:`Shape` (image, tier, user): what Docker fixes at
create. One background thread makes them, one at a time so that they never crowd
the starts of attempts that are waiting. Each claim asks for a replacement, and a
claim that found none asks for two, so a pool grows to what recent demand needs,
up to ``executor.warm_containers``; spares unused for ``executor.warm_idle`` seconds
are removed.

Lifecycle: :meth:`WarmPool.open` starts the thread, :meth:`WarmPool.close` stops
it, waits for a spare being made, then removes every spare. Nothing is started by
the constructor, so a pool that is never opened leaves nothing to clean up.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

#: Seconds the replenisher pauses after it failed to make a spare.
FAILURE_PAUSE = 2.0
#: Seconds without a claim before spares are made for a shape that still has one
#: ready: making one costs the engine what starting one does, which would slow
#: the attempts of a burst that the ready spares serve.
QUIET = 0.3
#: Seconds an unclaimed spare outlives ``warm_idle`` before it exits by itself
#: (its gate script's limit, and the deadline its label carries). The pool never
#: hands out a spare past ``warm_idle``, so this only has to cover the pool's own
#: removal running late; past it, a spare whose service died is gone too.
UNCLAIMED_GRACE = 10.0


@dataclass(frozen=True)
class Shape:
    """What Docker fixes when it creates a container, and so what a spare must match."""

    image: str
    image_id: str
    tier: str
    user: str | None


@dataclass(frozen=True)
class Spare:
    """A gated container: started, waiting at its gate, its directory on the host.

    ``attempt_id`` is its one identity: it names the container's attempt label,
    its directory and (once claimed) the attempt that runs in it.
    """

    shape: Shape
    attempt_id: str
    container_id: str
    #: The container's name now: ``pipewell-warm-…`` until an attempt claims it.
    name: str
    directory: Path
    made_at: float = field(default_factory=time.monotonic, compare=False)


class WarmPool:
    """Spares per shape, made by one background thread and claimed by attempts.

    ``make`` creates and starts one spare (blocking, may raise); ``discard``
    removes one. Both are the gated launcher's.
    """

    def __init__(
        self,
        make: Callable[[Shape], Spare],
        discard: Callable[[Spare], None],
        size: int,
        idle: float,
    ) -> None:
        self._make = make
        self._discard = discard
        self.size = size
        self.idle = idle
        self._ready: dict[Shape, deque[Spare]] = {}
        # Spares past ``idle`` found by a claim: the replenisher removes them.
        self._stale: list[Spare] = []
        self._wanted: deque[Shape] = deque()
        self._making = 0
        self._last_claim = 0.0
        self._closed = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Start making spares as claims ask for them."""
        with self._changed:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._replenish, name="pipewell-warm", daemon=True
            )
            self._thread.start()

    def claim(self, shape: Shape) -> Spare | None:
        """A ready spare of ``shape`` (now the caller's), or None; asks for replacements."""
        with self._changed:
            now = time.monotonic()
            self._last_claim = now
            ready = self._ready.get(shape)
            spare = None
            while ready and spare is None:
                candidate = ready.popleft()
                if now - candidate.made_at <= self.idle:
                    spare = candidate
                else:
                    self._stale.append(candidate)
            if ready is not None and not ready:
                del self._ready[shape]
            wanted = 0 if self._closed else 1 if spare is not None else 2
            room = self.size - self._count()
            self._wanted.extend([shape] * max(0, min(wanted, room)))
            self._changed.notify()
        return spare

    def counts(self) -> dict[str, int]:
        """Spares ready, asked for and being made now."""
        with self._changed:
            ready = sum(len(q) for q in self._ready.values())
            return {"ready": ready, "wanted": len(self._wanted), "making": self._making}

    def ready(self) -> dict[Shape, int]:
        """Spares ready now, per shape."""
        with self._changed:
            return {shape: len(spares) for shape, spares in self._ready.items()}

    def close(self, timeout: float) -> int:
        """Stop making spares, wait up to ``timeout`` for the one being made, remove them all.

        Returns how many were removed. The replenisher removes a spare it finishes
        after the pool closed; one still being made after ``timeout`` (a hung
        engine) is left to its own deadline (UNCLAIMED_GRACE).
        """
        with self._changed:
            self._closed = True
            self._wanted.clear()
            self._changed.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "warm_container_left", reason="still being made when the worker stopped"
                )
        with self._changed:
            spares = [s for q in self._ready.values() for s in q] + self._stale
            self._ready.clear()
            self._stale = []
        for spare in spares:
            self._discard(spare)
        return len(spares)

    def _next_wanted(self) -> Shape | None:
        """The first shape asked for that has no spare ready, else (once quiet) the first."""
        quiet = time.monotonic() - self._last_claim >= QUIET
        for shape in self._wanted:
            if quiet or not self._ready.get(shape):
                self._wanted.remove(shape)
                return shape
        return None

    def _count(self) -> int:
        return sum(len(q) for q in self._ready.values()) + len(self._wanted) + self._making

    def _expired(self) -> list[Spare]:
        now = time.monotonic()
        gone, self._stale = self._stale, []
        for shape in list(self._ready):
            kept = deque(s for s in self._ready[shape] if now - s.made_at <= self.idle)
            gone += [s for s in self._ready[shape] if now - s.made_at > self.idle]
            if kept:
                self._ready[shape] = kept
            else:
                del self._ready[shape]
        return gone

    def _replenish(self) -> None:
        while True:
            with self._changed:
                while not self._wanted and not self._closed:
                    expired = self._expired()
                    if expired:
                        break
                    self._changed.wait(timeout=min(self.idle, 5.0))
                else:
                    expired = []
                if self._closed:
                    return
                shape = self._next_wanted() if not expired else None
                if shape is None and not expired:
                    self._changed.wait(timeout=QUIET)
                    continue
                if shape is not None:
                    self._making += 1
            for spare in expired:
                self._discard(spare)
            if shape is None:
                continue
            try:
                spare = self._make(shape)
            except Exception as exc:  # the pool is an optimisation: attempts go cold
                log.warning("warm_container_failed", image=shape.image, error=str(exc)[:300])
                with self._changed:
                    self._making -= 1
                    # Asking again at once would fail the same way.
                    self._wanted = deque(s for s in self._wanted if s != shape)
                    self._changed.wait(timeout=FAILURE_PAUSE)
                continue
            with self._changed:
                self._making -= 1
                closed = self._closed
                if not closed:
                    self._ready.setdefault(shape, deque()).append(spare)
            if closed:
                self._discard(spare)
                return


__all__ = ["QUIET", "UNCLAIMED_GRACE", "Shape", "Spare", "WarmPool"]
