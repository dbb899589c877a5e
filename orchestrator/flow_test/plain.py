"""``pipewell test`` without a terminal (CI, pipes): one line per change, as it happens.

A mapped node says how far its items are instead of its attempt (``RUNNING   312/5000
items (3 failed)``), on each change of its state and, while it runs, at most once a
second as its items end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.client import item_progress_text
from orchestrator.flow_test.session import NodeView, RunSession

Say = Callable[[str], None]
#: Seconds between two lines of a mapped node's progress in the same state.
PROGRESS_EVERY = 1.0


class PlainView:
    """Prints each node's state changes and log lines, each once, in the order they come."""

    def __init__(self, session: RunSession, say: Say) -> None:
        self.session = session
        self.say = say
        self._states: dict[str, tuple[str, int]] = {}
        self._lines: dict[str, int] = {}
        self._progress: dict[str, tuple[str, float]] = {}  # what was said, and when

    async def follow(self) -> None:
        async for _ in self.session.follow():
            for node_id, view in self.session.nodes.items():
                self._show(node_id, view)

    def _show(self, node_id: str, view: NodeView) -> None:
        changed = self._states.get(node_id) != (view.status, view.attempt)
        if not changed and view.items is not None and view.status != "IDLE":
            said, when = self._progress.get(node_id, ("", 0.0))
            changed = (
                item_progress_text(view.items) != said and time.monotonic() - when >= PROGRESS_EVERY
            )
        # A node's lines come after the line that says it started, before the one
        # that says how it ended.
        if changed and view.status in ("READY", "RUNNING", "RETRYING"):
            self._state_line(node_id, view)
            changed = False
        for record in view.logs[self._lines.get(node_id, 0) :]:
            self.say(f"{self._when()} {node_id:<16} | {record.stream}: {record.message}")
        self._lines[node_id] = len(view.logs)
        if changed:
            self._state_line(node_id, view)

    def _state_line(self, node_id: str, view: NodeView) -> None:
        self._states[node_id] = (view.status, view.attempt)
        if view.status == "IDLE":
            return
        if view.items is not None:  # a mapped node: its items, not its attempts
            said = item_progress_text(view.items)
            self._progress[node_id] = (said, time.monotonic())
            line = f"{self._when()} {node_id:<16} {view.status:<9} {said}"
        else:
            line = f"{self._when()} {node_id:<16} {view.status:<9} attempt {view.attempt}/"
            line += str(view.max_attempts)
        if view.status in ("COMPLETE", "ERROR", "STOPPED"):
            line += f"  {view.elapsed():.1f} s"
        failed = view.status in ("RETRYING", "ERROR", "STOPPED") and view.error
        self.say(line + (f"  {view.error}" if failed else ""))

    def _when(self) -> str:
        return f"[{self.session.elapsed():6.1f}s]"


__all__ = ["PlainView"]
