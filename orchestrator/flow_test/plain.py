"""``pipewell test`` without a terminal (CI, pipes): one line per change, as it happens."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.flow_test.session import NodeView, RunSession

Say = Callable[[str], None]


class PlainView:
    """Prints each node's state changes and log lines, each once, in the order they come."""

    def __init__(self, session: RunSession, say: Say) -> None:
        self.session = session
        self.say = say
        self._states: dict[str, tuple[str, int]] = {}
        self._lines: dict[str, int] = {}

    async def follow(self) -> None:
        async for _ in self.session.follow():
            for node_id, view in self.session.nodes.items():
                self._show(node_id, view)

    def _show(self, node_id: str, view: NodeView) -> None:
        changed = self._states.get(node_id) != (view.status, view.attempt)
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
        line = f"{self._when()} {node_id:<16} {view.status:<9} attempt {view.attempt}/"
        line += str(view.max_attempts)
        if view.status in ("COMPLETE", "ERROR", "STOPPED"):
            line += f"  {view.elapsed():.1f} s"
        failed = view.status in ("RETRYING", "ERROR", "STOPPED") and view.error
        self.say(line + (f"  {view.error}" if failed else ""))

    def _when(self) -> str:
        return f"[{self.session.elapsed():6.1f}s]"


__all__ = ["PlainView"]
