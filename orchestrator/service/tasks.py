"""Scade's tasks: an integer id per execution, with the request that started it."""

from __future__ import annotations

from typing import Any

from orchestrator.database import Database
from orchestrator.registry import TaskRecord
from orchestrator.service.saved_flows import SavedFlows


class Tasks:
    def __init__(self, db: Database, flows: SavedFlows) -> None:
        self._db = db.run
        self.registry = flows.registry

    async def add(
        self, tenant: str, execution_id: str, flow_seq: int, request: dict[str, Any]
    ) -> TaskRecord:
        return await self._db(self.registry.add_task, tenant, execution_id, flow_seq, request)

    async def get(self, tenant: str, task_id: int) -> TaskRecord | None:
        return await self._db(self.registry.task, tenant, task_id)


__all__ = ["Tasks"]
