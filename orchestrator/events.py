"""Per-run event bus feeding Server-Sent Events.

What one subscriber may hold is bounded, whatever the run's size and however
slowly it reads: its log lines up to ``log_bytes`` (later ones are dropped: the
run's Logs still hold them), the names of the nodes and edges that changed since
it last took a status (at most the run's own), and the end. A status event is no
snapshot: the reader takes the run as it is when it gets there, so one that fell
behind skips to the present and nothing is serialized per change. A slow
subscriber never slows the engine down nor holds what the others have read; a
run nobody watches costs nothing per change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

#: Bytes of log lines one subscriber may have waiting before later ones are dropped.
LOG_BYTES = 1024 * 1024


class Event:
    """One event, shared by every subscriber.

    A ``status`` event carries no snapshot of the run: which nodes changed and which
    artifacts came (a reader takes the run as it is when it gets there).
    """

    def __init__(
        self,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        nodes: frozenset[str] = frozenset(),
        edges: tuple[str, ...] = (),
    ) -> None:
        self.name = name  # "status" | "log" | "end"
        self.data = data or {}
        self.nodes = nodes
        self.edges = edges

    @property
    def size(self) -> int:
        """What a log line weighs against LOG_BYTES (its text, and room for its fields)."""
        return len(str(self.data.get("message", ""))) + 128


class Subscriber:
    """What one reader has not read yet: log lines in order, the latest snapshot, the end."""

    def __init__(self, log_bytes: int) -> None:
        self.log_bytes = log_bytes
        self._lines: deque[Event] = deque()
        self._line_bytes = 0
        self._status: Event | None = None
        self._end: Event | None = None
        # What changed since this reader was last handed a status (``take_changes``):
        # at most the run's nodes and edges, however far behind it is.
        self._nodes: set[str] = set()
        self._edges: dict[str, None] = {}
        self._ready = asyncio.Event()

    def offer(self, event: Event) -> None:
        if event.name == "log":
            if self._line_bytes + event.size > self.log_bytes:
                return  # the run's Logs keep it: a reader behind reads it there
            self._lines.append(event)
            self._line_bytes += event.size
        elif event.name == "end":
            self._end = event
        else:
            self._status = event  # an older snapshot not yet read is of no use now
            self._nodes.update(event.nodes)
            self._edges.update(dict.fromkeys(event.edges))
        self._ready.set()

    def take_changes(self) -> tuple[set[str], list[str]]:
        """The nodes changed and artifacts added since the last call (or the subscription)."""
        nodes, edges = self._nodes, list(self._edges)
        self._nodes, self._edges = set(), {}
        return nodes, edges

    async def get(self) -> Event:
        """The next event: waiting lines first, then the latest snapshot, the end last."""
        while True:
            if self._lines:
                event = self._lines.popleft()
                self._line_bytes -= event.size
                return event
            if self._status is not None:
                event, self._status = self._status, None
                return event
            if self._end is not None:
                event, self._end = self._end, None
                return event
            self._ready.clear()
            await self._ready.wait()


class EventBus:
    def __init__(self, log_bytes: int = LOG_BYTES) -> None:
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self._log_bytes = log_bytes

    def watched(self, run_id: str) -> bool:
        return run_id in self._subscribers

    def publish(
        self,
        run_id: str,
        name: str,
        data: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        *,
        nodes: frozenset[str] = frozenset(),
        edges: tuple[str, ...] = (),
    ) -> None:
        """Hand an event to the run's subscribers; ``data`` may be a function, called
        (now, once) only when the run has any."""
        subscribers = self._subscribers.get(run_id)
        if not subscribers:
            return
        event = Event(name, data() if callable(data) else data, nodes=nodes, edges=edges)
        for subscriber in subscribers:
            subscriber.offer(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[Subscriber]:
        subscriber = Subscriber(self._log_bytes)
        self._subscribers[run_id].add(subscriber)
        try:
            yield subscriber
        finally:
            self._subscribers[run_id].discard(subscriber)
            if not self._subscribers[run_id]:
                del self._subscribers[run_id]


__all__ = ["LOG_BYTES", "Event", "EventBus", "Subscriber"]
