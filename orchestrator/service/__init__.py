"""The service layer: what every API dialect calls, and nothing below it knows of HTTP.

``Service`` is the one façade, made once per app, with a part per concern:

- ``submissions``: a flow made a run (validated, NodeDefs resolved once, planned once,
  stores opened, static objects checked, inputs in place) and handed to the scheduler;
- ``runs``: one run resolved live-or-stored once; its status, graph, artifacts, events;
- ``retries``: a new run from an ended one, taking over what succeeded;
- ``retention``: what outlived its lifetime deleted, runs and objects, in batches;
- ``usage``: what each tenant stores, measured now and then, against its quota;
- ``collections``: a mapped node's items and a collection's, paged; a collection filled
  item by item;
- ``flows``: saved flows, what a caller needs to invoke one, config profiles;
- ``executions``: a saved flow run on an invocation's input, its outcome decoded;
- ``tasks``: Scade's integer task ids.

The ``Scheduler`` beneath only schedules: it takes ready runs (``accept``), dispatches,
reacts to results and resumes, and shows the runs it holds through a read-only view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.background import Background, every
from orchestrator.config import Settings
from orchestrator.database import Database
from orchestrator.errors import NodeDefNotFound
from orchestrator.events import EventBus
from orchestrator.models import NodeDef
from orchestrator.queue import TaskQueue
from orchestrator.run_ids import RunIds
from orchestrator.scheduler import Scheduler
from orchestrator.service.collections import Collections
from orchestrator.service.executions import Executions
from orchestrator.service.retention import Retention
from orchestrator.service.retries import Retries
from orchestrator.service.runs import Runs
from orchestrator.service.saved_flows import SavedFlows
from orchestrator.service.submissions import Submissions
from orchestrator.service.tasks import Tasks
from orchestrator.service.usage import StorageUsage
from orchestrator.state import StateStore
from orchestrator.stores import StoreCalls, StoreRegistry

#: How /api/v1/workers names a spare of an image outside the built-in catalog.
OTHER_IMAGES = "other"


class Service:
    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        state: StateStore,
        stores: StoreRegistry,
        calls: StoreCalls,
        events: EventBus,
        queue: TaskQueue,
        db: Database,
        catalog: dict[str, NodeDef],
        run_ids: RunIds,
    ) -> None:
        self.settings = settings
        self._background = Background()
        self.catalog = catalog
        self.queue = queue
        self.scheduler = scheduler
        self.usage = StorageUsage(settings, stores, calls)
        self.submissions = Submissions(
            settings, scheduler, stores, calls, catalog, run_ids, self.usage
        )
        self.runs = Runs(scheduler, state, stores, events, run_ids)
        self.retention = Retention(
            settings,
            db,
            stores,
            calls,
            running=lambda run_id: scheduler.running(run_id),
            deleted=self._forget,
        )
        self.retries = Retries(scheduler, state, self.submissions, self.runs)
        self.collections = Collections(settings, scheduler, state, self.runs)
        self.flows = SavedFlows(db, self.submissions, catalog)
        self.executions = Executions(
            settings.invocations,
            Path(settings.data_dir),
            self.submissions,
            self.flows,
            self.runs,
            stores,
            self.retention,
        )
        self.tasks = Tasks(db, self.flows)

    def _forget(self, run_ids: list[str]) -> None:
        """Retention deleted these runs, or some of their artifacts: read them anew."""
        self.scheduler.forget_ended(run_ids)
        self.runs.forget(run_ids)

    def start(self) -> None:
        """The sweeps the service runs on its own: retention's, and the measure of what
        each tenant stores."""
        settings = self.settings
        self._background.spawn(
            every(settings.retention.sweep_every, self.retention.sweep_and_say, "retention"),
            name="pipewell-retention",
        )
        self._background.spawn(
            every(settings.quotas.measure_every, self.usage.measure, "usage_measure"),
            name="pipewell-usage",
        )

    async def close(self) -> None:
        await self._background.close()
        self.submissions.close()
        self.runs.close()

    async def workers(self, tenant: str | None = None) -> dict[str, Any]:
        """The queue's view of the workers, spares named only by the catalog's images;
        what waits per tier (in the task queue and in the scheduler's order); and each
        tenant's runs against its quotas: every tenant's (``tenant`` None, the operator),
        or ``tenant``'s own.

        An image a flow names is a tenant's choice: other tenants read it here, so
        every image outside the built-in catalog is counted as "other".
        """
        described = await self.queue.describe()
        queued = described.setdefault("queued", {})
        for tier, held in self.scheduler.queued_attempts().items():
            queued[tier] = queued.get(tier, 0) + held
        usage = self.scheduler.tenant_runs()
        # The operator's view: tenants with runs, with stored objects, or configured.
        known = set(usage) | set(self.usage.tenants()) | set(self.settings.tenants)
        shown = sorted(known) if tenant is None else [tenant]
        described["tenants"] = [
            {
                "tenant": name,
                "runs": usage.get(name, {}).get("unfinished", 0),
                "running": usage.get(name, {}).get("started", 0),
                "running_limit": self.settings.running_limit(name),
                "queued_limit": self.settings.queued_limit(name),
                "stored_bytes": self.usage.of(name),
                "stored_limit": self.settings.stored_limit(name),
            }
            for name in shown
        ]
        shown = {node_def.image for node_def in self.catalog.values()}
        for worker in described.get("workers", []):
            ready: dict[tuple[str, str], int] = {}
            for spare in worker.get("spares", []):
                image = spare["image"] if spare["image"] in shown else OTHER_IMAGES
                key = (image, spare["tier"])
                ready[key] = ready.get(key, 0) + spare["ready"]
            worker["spares"] = [
                {"image": image, "tier": tier, "ready": count}
                for (image, tier), count in sorted(ready.items())
            ]
        return described

    async def object_written(self, store_name: str, key: str, digest: str | None) -> None:
        """A local store received an object (``digest``: its sha256, hashed as it was
        stored): maybe an upload a run waits for. Raises CollectionRefused for a
        collection's archive that cannot become its items (the upload's request says
        why; the run waits on for a fixed one)."""
        await self.scheduler.object_written(store_name, key, digest=digest, tell_uploader=True)

    def nodedefs(self) -> list[NodeDef]:
        """The built-in catalog, by Publisher/Name: what a flow may use without sending."""
        return [self.catalog[uses] for uses in sorted(self.catalog)]

    def nodedef(self, uses: str) -> NodeDef:
        found = self.catalog.get(uses)
        if found is None:
            raise NodeDefNotFound(uses)
        return found


__all__ = ["OTHER_IMAGES", "Service"]
