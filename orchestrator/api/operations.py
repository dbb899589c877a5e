"""What an operator runs the service with: ``/api/v1/gc``, retention's sweep by hand.

For admin keys; with auth off (loopback only), for any local caller, as ``pipewell gc``.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from orchestrator.api.auth import require_admin
from orchestrator.api.bodies import answer, read_model
from orchestrator.api.openapi import Answer, operation
from orchestrator.api.resources import SERVICE

routes = web.RouteTableDef()


class SweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: StrictBool = Field(
        default=False, alias="DryRun", description="say what is due, delete nothing"
    )


class SweepAnswer(BaseModel):
    """What the sweep deleted (or, with DryRun, what is due now)."""

    model_config = ConfigDict(serialize_by_alias=True)

    dry_run: bool = Field(alias="DryRun")
    runs: int = Field(alias="Runs", description="runs whose rows and objects were deleted")
    early_edges: int = Field(
        alias="EarlyEdges",
        description="edges deleted before their run (a DataWell Lifetime shorter than the run's)",
    )
    kept_objects: int = Field(
        alias="KeptObjects",
        description="objects kept beyond their run, or without one (uploads), now deleted",
    )
    objects: int = Field(alias="Objects", description="object deletions asked of the stores")
    skipped: int = Field(
        alias="Skipped",
        description="objects at a key later runs may write that hold other bytes now: kept",
    )
    failed_stores: list[str] = Field(
        alias="FailedStores", description="stores that refused: their runs wait for the next sweep"
    )
    run_ids: list[str] = Field(alias="RunIDs", description="the runs deleted (with DryRun, due)")


@routes.post("/api/v1/gc")
@operation(
    "Sweep what outlived its lifetime now",
    tag="service",
    answers={200: Answer("what was deleted, or with DryRun what is due", SweepAnswer)},
    errors=("FORBIDDEN", "BODY_MALFORMED"),
)
async def sweep(request: web.Request) -> web.Response:
    """Retention's sweep, now rather than at its next turn (`retention.sweep_every`): ended
    runs, their objects and kept objects whose lifetime ran out. With `DryRun`, how many
    are due, and which runs (the first 100)."""
    require_admin(request, "sweeping")
    wanted = await read_model(request, SweepRequest, empty_ok=True)
    report = await request.app[SERVICE].retention.sweep(dry_run=wanted.dry_run)
    return answer(SweepAnswer.model_validate(report.json()))


__all__ = ["routes"]
