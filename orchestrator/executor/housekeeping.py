"""Which containers are whose, and removing them: kills, leftovers, expired spares.

A worker's containers carry its identity (``pipewell.worker_id``), never only
its name, since the services of one host share a name. What one worker may
remove of another's: the containers of a worker known to be dead, and spares
whose deadline (a label) has passed, since their service would have removed
them by then if it were alive.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
import structlog

from orchestrator.executor.errors import AttemptFailed, engine_problem, tolerated
from orchestrator.executor.spec import (
    LABEL_ATTEMPT_ID,
    LABEL_DEADLINE,
    LABEL_RUN,
    LABEL_WORKER_ID,
    SPARE_PREFIX,
)
from orchestrator.messages import Task

log = structlog.get_logger(__name__)

#: Ended runs remembered, so attempts still setting up for them do not start.
ENDED_RUNS_KEPT = 1000


class InFlight:
    """The attempts a worker has in hand: their ids, their containers, the runs that ended.

    Shared by the launchers (which add to it) and clean-up (which must leave
    these alone); any thread may call it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[str] = set()
        # Container id -> run id: a spare was labelled before it had a run.
        self._containers: dict[str, str] = {}
        # Runs that ended while attempts of theirs were still being set up: an
        # attempt checks this around its start, since a kill cannot reach a
        # container that is created but not started, nor one not created yet.
        self._ended: OrderedDict[str, None] = OrderedDict()

    def begin(self, attempt_id: str) -> None:
        with self._lock:
            self._live.add(attempt_id)

    def own(self, container_id: str, run_id: str) -> None:
        with self._lock:
            self._containers[container_id] = run_id

    def forget(self, attempt_id: str, container_id: str | None) -> None:
        with self._lock:
            self._live.discard(attempt_id)
            if container_id is not None:
                self._containers.pop(container_id, None)

    def live(self) -> set[str]:
        with self._lock:
            return set(self._live)

    def containers_of(self, run_id: str | None) -> set[str]:
        """Containers running an attempt of ``run_id`` (None: of any run)."""
        with self._lock:
            return {c for c, run in self._containers.items() if run_id in (None, run)}

    def end_run(self, run_id: str) -> None:
        with self._lock:
            self._ended[run_id] = None
            while len(self._ended) > ENDED_RUNS_KEPT:
                self._ended.popitem(last=False)

    def check_run_live(self, task: Task) -> None:
        with self._lock:
            ended = task.run_id in self._ended
        if ended:
            raise AttemptFailed(
                "cancelled: the run ended before this node started", retryable=False
            )

    def run_ended(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._ended


class Housekeeping:
    """Kills and removals of one worker's containers and attempt directories."""

    def __init__(
        self,
        client: docker.DockerClient,
        worker_id: str,
        mount_root: Path | None,
        in_flight: InFlight,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.mount_root = mount_root
        self.in_flight = in_flight

    def ping(self) -> str | None:
        """None when the Docker engine answers, else what is wrong."""
        try:
            self.client.ping()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            return engine_problem(exc)
        return None

    def kill_run(self, run_id: str) -> int:
        """Kill the containers of a run that ended; attempts not started yet will not start."""
        self.in_flight.end_run(run_id)
        return self._kill(run_id)

    def kill_all(self) -> int:
        return self._kill(None)

    def _kill(self, run_id: str | None) -> int:
        targets = self.in_flight.containers_of(run_id)
        try:
            # Labelled with the run: also those created and not yet registered.
            targets |= {c["Id"] for c in self._own_containers(run_id)}
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # Their attempts end anyway: the engine's failure ends them.
            log.warning("kill_skipped", run_id=run_id, docker=engine_problem(exc))
        killed = 0
        for container_id in targets:
            with tolerated("kill", "a container that exited meanwhile cannot be killed"):
                self.client.api.kill(container_id)
                killed += 1
        return killed

    def dispose(self, container_id: str | None, directory: Path | None, attempt_id: str) -> None:
        """Remove an attempt's (or a spare's) container and directory; forget its id.

        A container the engine could not remove now is a leftover: removed once
        the engine answers again (remove_leftovers).
        """
        if container_id is not None:
            self.remove(container_id)
        if directory is not None:
            # What cannot go now (a file still held open) goes with remove_leftovers.
            shutil.rmtree(directory, ignore_errors=True)
        self.in_flight.forget(attempt_id, container_id)

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass  # removed already: what was asked for
        except docker.errors.APIError as exc:
            log.warning("container_remove_failed", container=container_id[:12], error=str(exc))
        except requests.RequestException as exc:
            # Left for remove_leftovers, once the engine answers again.
            log.warning(
                "container_remove_failed", container=container_id[:12], docker=engine_problem(exc)
            )

    def remove_leftovers(self) -> int:
        """Remove what attempts of this worker left behind: containers, attempt directories.

        At start-up (after a crash, a SIGKILL) that is every container of this
        worker's identity; once the engine answers again after an outage, those
        of the attempts it cut short, while the attempts in flight keep theirs.
        """
        live = self.in_flight.live()
        if self.mount_root is not None:
            for stale in self.mount_root.iterdir():
                if stale.name not in live:
                    # Best effort, as in dispose: the next clean-up tries again.
                    shutil.rmtree(stale, ignore_errors=True)
        removed = 0
        for container in self._own_containers():
            if (container.get("Labels") or {}).get(LABEL_ATTEMPT_ID) not in live:
                self.remove(container["Id"])
                removed += 1
        return removed + self.remove_expired_spares()

    def remove_containers_of(self, worker_ids: set[str]) -> int:
        """Remove the containers of other workers known to be dead (same engine, other identity).

        Their attempts run elsewhere again; nothing else would ever remove them.
        """
        removed = 0
        for container in self._list([LABEL_RUN, LABEL_WORKER_ID]):
            owner = (container.get("Labels") or {}).get(LABEL_WORKER_ID)
            if owner in worker_ids and owner != self.worker_id:
                self.remove(container["Id"])
                removed += 1
        return removed

    def remove_expired_spares(self) -> int:
        """Remove unclaimed spares of any worker on this engine whose deadline has passed.

        Such a spare has exited by itself (its gate's limit), or never started
        (its service died between create and start). A claimed one was renamed
        for its attempt and is never taken for a spare here; a running one is
        left to its own limit, so a live service's spare is never pulled away.
        """
        now = time.time()
        removed = 0
        for container in self._list([LABEL_DEADLINE]):
            names = container.get("Names") or []
            deadline = (container.get("Labels") or {}).get(LABEL_DEADLINE, "")
            if (
                names
                and names[0].lstrip("/").startswith(SPARE_PREFIX)
                and container.get("State") != "running"
                and deadline.isdigit()
                and int(deadline) < now
            ):
                self.remove(container["Id"])
                removed += 1
        if removed:
            log.info("removed_expired_spares", count=removed)
        return removed

    def _own_containers(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Containers of this worker's identity (of one run)."""
        run_label = f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN
        return self._list([run_label, f"{LABEL_WORKER_ID}={self.worker_id}"])

    def _list(self, labels: list[str]) -> list[dict[str, Any]]:
        # The list call's own summary (no inspect per container): one removed
        # meanwhile (an attempt cleaning up) must not fail the whole listing.
        return self.client.api.containers(all=True, filters={"label": labels})


__all__ = ["ENDED_RUNS_KEPT", "Housekeeping", "InFlight"]
