"""Runs one attempt of one node as a Docker container (the node contract).

inputs opened → image → launched (gated or plain) → wait (killed at the
timeout) → outputs up → container and files removed, whatever happened.

A batch (items of one run's one node, ``Task.batch``) runs its items one after
another, each an attempt of its own: launched plain, each in a container of its own
as above; gated, all in one container (``GatedLauncher.start_batch``), one program
invocation per item, a fresh container only after an item that killed or lost its own.

Everything here blocks (the ``docker`` and ``requests`` clients do): the worker
calls :meth:`DockerExecutor.run` from a bounded thread pool, never on the event
loop. Errors become failed attempts (orchestrator.executor.errors), naming the
component that failed (the Docker engine or the store); nothing here raises past
``run``. An attempt whose Docker engine stopped answering comes back with
``engine_down`` set: the worker then waits for the engine, and the attempt is not
counted against the node.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from pathlib import Path

import docker
import docker.errors
import structlog

from orchestrator import command
from orchestrator.config import ExecutorSettings
from orchestrator.errors import ConfigError
from orchestrator.executor import spec
from orchestrator.executor.errors import (
    AttemptFailed,
    CommandFailed,
    EngineUnreachable,
    engine_problem,
    step,
    tolerated,
)
from orchestrator.executor.gate import gate_command, static_busybox
from orchestrator.executor.gated import BatchContainer, GatedLauncher
from orchestrator.executor.housekeeping import Housekeeping, InFlight
from orchestrator.executor.images import Images
from orchestrator.executor.launcher import Attempt, Launcher, LaunchKit, Stopwatch
from orchestrator.executor.plain import PlainLauncher
from orchestrator.executor.protocol import BeginItem, Cleanup, Emit, EndItem, LaunchMode
from orchestrator.executor.transfers import Input, Transfers
from orchestrator.messages import AttemptResult, SpareCount, Task
from orchestrator.tiers import TIERS, Tier

log = structlog.get_logger(__name__)


def connect_docker(settings: ExecutorSettings, connections: int) -> docker.DockerClient:
    """A client of the Docker engine of ``DOCKER_HOST`` (or the local socket), checked.

    Blocks: call it off the event loop. ConfigError saying what to do if unreachable.
    """
    try:
        client = docker.from_env(timeout=int(settings.docker_timeout), max_pool_size=connections)
        client.ping()
    except docker.errors.DockerException as exc:
        raise ConfigError(
            f"cannot reach the Docker engine ({exc}); start dockerd (make setup does) "
            "or set worker.enabled: false to run without a local worker"
        ) from exc
    return client


def engine_is_local(client: docker.DockerClient) -> bool:
    """Whether the engine shares our filesystem (a unix socket), so bind mounts see our files."""
    return str(client.api.base_url).startswith("http+docker://")


class DockerExecutor:
    """Executes tasks on one Docker engine (implements orchestrator.executor.Executor)."""

    def __init__(
        self,
        client: docker.DockerClient,
        settings: ExecutorSettings,
        worker: str,
        worker_id: str,
        work_dir: Path,
    ) -> None:
        self.client = client
        self.settings = settings
        self.worker = worker
        self.worker_id = worker_id
        # mount: each attempt's files live in a host directory bind-mounted into the
        # container; archive: they are copied in and out through the Engine API.
        transfer = settings.transfer
        if transfer == "auto":
            transfer = "mount" if engine_is_local(client) else "archive"
        mount_root: Path | None = None
        if transfer == "mount":
            mount_root = work_dir.resolve() / "attempts"
            mount_root.mkdir(parents=True, exist_ok=True)
            # A node that runs as root may leave a setuid file in its out/ (0777):
            # no other user of this host may reach it while the attempt runs.
            mount_root.chmod(0o700)
        self.in_flight = InFlight()
        self.housekeeping = Housekeeping(client, worker_id, mount_root, self.in_flight)
        self.transfers = Transfers(settings)
        self.images = Images(client, settings)
        kit = LaunchKit(
            client, settings, worker, worker_id, mount_root, self.transfers, self.housekeeping
        )
        self.launcher = _launcher(kit)
        self.launch: LaunchMode = self.launcher.mode
        self._aborting = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        self.launcher.open()

    def close(self) -> int:
        """Stop making spares and remove them (waiting for one being made); how many."""
        return self.launcher.close()

    def abort_all(self) -> int:
        """Shutting down: kill this worker's containers so their attempts end now.

        The aborted attempts report nothing; the scheduler dispatches their
        nodes again when it resumes. Spares are killed too (they carry this
        worker's identity); ``close`` then removes them.
        """
        self._aborting.set()
        return self.housekeeping.kill_all()

    def spares(self) -> list[SpareCount]:
        ready: Counter[tuple[str, str]] = Counter()
        for shape, count in self.launcher.spares().items():
            ready[(shape.image, shape.tier)] += count
        return [SpareCount(image=i, tier=t, ready=n) for (i, t), n in sorted(ready.items())]

    # ------------------------------------------------------------ housekeeping

    def kill_run(self, run_id: str) -> int:
        """Kill this worker's containers of a run that has ended; their attempts then end."""
        return self.housekeeping.kill_run(run_id)

    def ping(self) -> str | None:
        return self.housekeeping.ping()

    def reconnect(self) -> str | None:
        """After an outage: None once the engine answers and leftovers are removed, else why not."""
        problem = self.ping()
        if problem is not None:
            return problem
        try:
            removed = self.remove_leftovers()
        except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
            return engine_problem(exc)
        log.info("docker_engine_back", worker=self.worker, removed_leftovers=removed)
        return None

    def remove_leftovers(self) -> int:
        return self.housekeeping.remove_leftovers()

    def remove_containers_of(self, worker_ids: set[str]) -> int:
        return self.housekeeping.remove_containers_of(worker_ids)

    def remove_expired_spares(self) -> int:
        return self.housekeeping.remove_expired_spares()

    # ------------------------------------------------------------ one attempt

    def run(self, task: Task, emit: Emit) -> tuple[AttemptResult, Cleanup]:
        """Run one attempt to its end; never raises, the result says what happened.

        Returns the result and a cleanup that removes the container and says how
        long that took: the caller reports the result first, then cleans up, so
        removal is not on the flow's critical path.
        """
        attempt = Attempt(task)
        timings = attempt.timings
        result = AttemptResult.of(task, ok=False)
        inputs: list[Input] = []
        try:
            spec.check_names(task)
            tier = TIERS[task.tier]
            image = None
            if task.reuse:
                with timings("create"):
                    image = self.images.get(task, emit)
                if image.id in task.reuse:
                    return _reused(task, image, timings.totals), _nothing_to_clean
            with timings("input_transfer"):
                for input_spec in task.inputs:
                    inputs.append(self.transfers.open_input(input_spec))
            paths = _paths(task, inputs)
            if image is None:
                with timings("create"):
                    image = self.images.get(task, emit)
            result.image_id = image.id
            self.launcher.launch(attempt, tier, image, inputs, paths, emit)
            assert attempt.container_id is not None and attempt.workspace is not None
            if self.in_flight.run_ended(task.run_id):
                with tolerated("kill", "the container may have exited already"):
                    self.client.api.kill(attempt.container_id)
            with timings("run"):
                exit_code = self._wait(attempt)
            if self._aborting.is_set():
                raise AttemptFailed("the worker is shutting down; the node will run again")
            if exit_code != 0:
                raise self._command_failed(attempt, exit_code, tier)
            with timings("output_transfer"):
                for output in task.outputs:
                    result.outputs[output.name] = attempt.workspace.take_output(
                        output, paths.outputs[output.name], task.max_output_bytes
                    )
            result.ok = True
        except AttemptFailed as failure:
            result.error, result.retryable = failure.message, failure.retryable
            if isinstance(failure, CommandFailed):
                result.exit_code, result.oom = failure.exit_code, failure.oom
            # A Docker call got no answer. If the engine is down that is not the
            # node's failure (and the node runs again once it is back); if it
            # answers again, the failure counts like any other.
            result.engine_down = isinstance(failure, EngineUnreachable) and self.ping() is not None
        except Exception as exc:  # a bug of ours must still end the attempt, not the worker
            log.exception("executor_crashed", run_id=task.run_id, node_id=task.node_id)
            result.error = f"internal error in the worker: {type(exc).__name__}: {exc}"
        finally:
            for opened in inputs:
                opened.close()
        result.timings = timings.totals

        def cleanup() -> float:
            began = time.perf_counter()
            directory = attempt.workspace.directory if attempt.workspace is not None else None
            if attempt.attempt_id:
                self.housekeeping.dispose(attempt.container_id, directory, attempt.attempt_id)
            return time.perf_counter() - began

        return result, cleanup

    # ------------------------------------------------------------ a batch of items

    def run_batch(self, task: Task, begin: BeginItem, end: EndItem) -> Cleanup:
        """Run a batch's items one after another, each an attempt of its own; never raises.

        Gated: in one container, one program invocation per item; plain: each in a
        container of its own, as ``run`` runs it. The cleanup removes them all.
        """
        items = _BatchItems(task.batch or [task], begin, end)
        used: list[Attempt] = []  # every container (and its directory) the batch made
        cleanups: list[Cleanup] = []  # a plain batch's, one per item

        def cleanup() -> float:
            began = time.perf_counter()
            for attempt in used:
                directory = attempt.workspace.directory if attempt.workspace else None
                if attempt.attempt_id:
                    self.housekeeping.dispose(attempt.container_id, directory, attempt.attempt_id)
            return time.perf_counter() - began + sum(each() for each in cleanups)

        try:
            # Never two runs, nor two nodes, in one container: a batch is one run's one
            # node by construction (the scheduler's), and is refused whole otherwise.
            mixed = _mixed(task)
            if mixed is not None:
                log.error("batch_refused", run_id=task.run_id, node_id=task.node_id, why=mixed)
                items.end_rest(f"internal error in the worker: {mixed}", retryable=False)
            elif isinstance(self.launcher, GatedLauncher):
                self._gated_batch(task, items, used)
            else:
                self._plain_batch(items, cleanups)
        except Exception as exc:  # a bug of ours must still end each item, not the worker
            log.exception("executor_crashed", run_id=task.run_id, node_id=task.node_id)
            items.end_rest(f"internal error in the worker: {type(exc).__name__}: {exc}")
        return cleanup

    def _plain_batch(self, items: _BatchItems, cleanups: list[Cleanup]) -> None:
        """Each item as ``run`` runs a lone attempt, in a container of its own."""
        while (began := items.next()) is not None:
            item, emit = began
            if self.in_flight.run_ended(item.run_id):
                items.ended(_refused(item))
                continue
            result, cleanup = self.run(item, emit)
            cleanups.append(cleanup)
            items.ended(result)
            if result.engine_down:
                items.end_rest(result.error, engine_down=True)

    def _gated_batch(self, task: Task, items: _BatchItems, used: list[Attempt]) -> None:
        """Every item in one gated container, one after another; a fresh container only
        after an item whose end took its container with it (a timeout, a kill, exit 137)."""
        launcher = self.launcher
        assert isinstance(launcher, GatedLauncher)
        tier = TIERS[task.tier]
        box: BatchContainer | None = None
        image: spec.Image | None = None
        try:
            while (began := items.next()) is not None:
                item, emit = began
                timings = Stopwatch()
                if item.reuse and image is None:
                    image = self._image_if_found(task, emit, timings)
                if image is not None and image.id in item.reuse:
                    items.ended(_reused(item, image, timings.totals))
                    continue
                result = AttemptResult.of(item, ok=False)
                inputs: list[Input] = []
                keep = False  # whether the container may run the next item
                try:
                    spec.check_names(item)
                    self.in_flight.check_run_live(item)
                    with timings("input_transfer"):
                        for input_spec in item.inputs:
                            inputs.append(self.transfers.open_input(input_spec))
                    paths = _paths(item, inputs)
                    if box is None:
                        # Its create and start are the first item's, as a lone attempt's are.
                        with timings("create"):
                            image = image or self.images.get(task, emit)
                        attempt = Attempt(task, timings=timings)
                        used.append(attempt)
                        box = launcher.start_batch(attempt, tier, image, emit)
                    assert image is not None
                    result.image_id = image.id
                    with timings("input_transfer"):
                        box.workspace.prepare(inputs, item.outputs)
                    self.in_flight.check_run_live(item)
                    argv = spec.program(item, image, paths)
                    script = gate_command(spec.environment(item, paths), argv)
                    with timings("run"):
                        exit_code = self._run_item(box, item, script, emit)
                    if self._aborting.is_set():
                        raise AttemptFailed("the worker is shutting down; the node will run again")
                    if exit_code != 0:
                        if exit_code == 137 and self._container_alive(box):
                            # Its memory limit, or a kill: only the exited container says
                            # which (OOMKilled), and only of its last item if it goes now.
                            self._stop(box)
                        raise self._command_failed(box.attempt, exit_code, tier)
                    with timings("output_transfer"):
                        for output in item.outputs:
                            result.outputs[output.name] = box.workspace.take_output(
                                output, paths.outputs[output.name], item.max_output_bytes
                            )
                    result.ok = True
                    keep = True
                except AttemptFailed as failure:
                    result.error, result.retryable = failure.message, failure.retryable
                    if isinstance(failure, CommandFailed):
                        result.exit_code, result.oom = failure.exit_code, failure.oom
                    result.engine_down = (
                        isinstance(failure, EngineUnreachable) and self.ping() is not None
                    )
                    # A failure before the item's program ran leaves its container as it was.
                    keep = box is not None and self._container_alive(box, ask=False)
                except Exception as exc:  # a bug of ours ends the item, and its container
                    log.exception("executor_crashed", run_id=item.run_id, item=item.item)
                    result.error = f"internal error in the worker: {type(exc).__name__}: {exc}"
                finally:
                    for opened in inputs:
                        opened.close()
                result.timings = timings.totals
                items.ended(result)
                if result.engine_down:
                    items.end_rest(result.error, engine_down=True)
                    break
                if box is not None:
                    try:
                        if not keep:
                            raise AttemptFailed("the item took its container with it")
                        box.clear()  # its files gone before the next item's come
                    except AttemptFailed:
                        if self._container_alive(box, ask=False):
                            self._stop(box)
                        box.gate.close()
                        box = None
        finally:
            if box is not None:
                box.end()

    def _image_if_found(self, task: Task, emit: Emit, timings: Stopwatch) -> spec.Image | None:
        """The batch's image, to see whether an item's cached result may stand; None if
        it cannot be had now (the item's own attempt then says why)."""
        try:
            with timings("create"):
                return self.images.get(task, emit)
        except AttemptFailed:
            return None

    def _run_item(self, box: BatchContainer, item: Task, script: str, emit: Emit) -> int:
        """Run one item in the batch's container; its exit code. Killed at its Timeout."""
        ended = box.run(script, emit, item.attempt)
        if not ended.wait(item.timeout):
            self._stop(box)
            raise AttemptFailed(
                f"timed out after {item.timeout:g} s (the NodeDef's Timeout); container killed"
            )
        if ended.status is not None:
            return ended.status
        # The container's output ended before the item did: it was killed (its run
        # ended, the worker stopping) or died; its exit code says how.
        box.gate.close()
        with step("waiting for the container", engine=True):
            status = self.client.api.wait(box.container_id, timeout=10)
        return int(status.get("StatusCode", -1))

    def _container_alive(self, box: BatchContainer, *, ask: bool = True) -> bool:
        """Whether the batch's container still runs its loop (``ask``: the engine too)."""
        if box.gate.closed or not box.pump.alive():
            return False
        launcher = self.launcher
        assert isinstance(launcher, GatedLauncher)
        return not ask or launcher.running(box.container_id)

    def _stop(self, box: BatchContainer) -> None:
        """Kill a batch's container and wait for it to exit (its log read to the end):
        the next item, if any, gets a fresh one; clean-up removes this one."""
        box.gate.close()
        with tolerated("kill", "the container may have exited already"):
            self.client.api.kill(box.container_id)
        with tolerated("wait", "clean-up removes it whatever its state"):
            self.client.api.wait(box.container_id, timeout=10)
        box.pump.join(5)

    def _wait(self, attempt: Attempt) -> int:
        task, container_id, pump = attempt.task, attempt.container_id, attempt.pump
        assert container_id is not None and pump is not None
        began = time.monotonic()
        try:
            with step("waiting for the container", engine=True):
                status = self.client.api.wait(container_id, timeout=task.timeout)
        except EngineUnreachable:
            if time.monotonic() - began < task.timeout:
                raise  # too early for our timeout: the connection to the engine broke
            with tolerated("kill", "the container may have ended as its time ran out"):
                self.client.api.kill(container_id)
            pump.join(5)
            raise AttemptFailed(
                f"timed out after {task.timeout:g} s (the NodeDef's Timeout); container killed"
            ) from None
        pump.join(10)
        return int(status.get("StatusCode", -1))

    def _command_failed(self, attempt: Attempt, exit_code: int, tier: Tier) -> CommandFailed:
        assert attempt.container_id is not None and attempt.pump is not None
        try:
            # An engine going down kills its containers: their exit is not the node's
            # failure, and an unanswered inspect says so (EngineUnreachable).
            with step("inspect the exited container", engine=True):
                state = self.client.api.inspect_container(attempt.container_id)["State"]
            oom = bool(state.get("OOMKilled"))
        except EngineUnreachable:
            raise
        except AttemptFailed:  # the engine no longer has it: the exit code says enough
            oom = False
        if oom:
            message = (
                f"out of memory (limit {tier.memory_mib} MiB, tier {tier.name}); "
                f"exit code {exit_code}"
            )
            return CommandFailed(message, exit_code=exit_code, oom=True)
        message = f"command exited with code {exit_code}"
        if exit_code == 137:
            message += " (killed by SIGKILL)"
        if attempt.pump.stderr_tail:
            message += f": {attempt.pump.stderr_tail[-1][:500]}"
        return CommandFailed(message, exit_code=exit_code)


def _nothing_to_clean() -> float:
    return 0.0


def _reused(task: Task, image: spec.Image, timings: dict[str, float]) -> AttemptResult:
    """The task's image is one its cached result was made with: nothing runs."""
    return AttemptResult.of(task, ok=True, reused=True, image_id=image.id, timings=timings)


def _paths(task: Task, inputs: list[Input]) -> spec.Paths:
    """Where the attempt's inputs and outputs are in its container. A collection's path
    is its directory: ${Name} and INPUT_/OUTPUT_<NAME> name it."""
    return spec.Paths(
        inputs={i.spec.name: i.container_path for i in inputs},
        outputs={
            o.name: command.output_path(o.name, "" if o.collection else o.suffix)
            for o in task.outputs
        },
    )


def _mixed(task: Task) -> str | None:
    """Why a batch's items cannot share one container, if they cannot."""
    for item in task.batch or []:
        if (item.run_id, item.node_id) != (task.run_id, task.node_id):
            return (
                f"a batch of {task.run_id}/{task.node_id} holds an item of "
                f"{item.run_id}/{item.node_id}"
            )
        if (item.image, item.tier, item.run_as_root) != (task.image, task.tier, task.run_as_root):
            return f"the items of a batch of {task.run_id}/{task.node_id} differ in container"
    return None


def _refused(task: Task) -> AttemptResult:
    """An attempt of a run that ended before it started, as ``run`` refuses it."""
    error = "cancelled: the run ended before this node started"
    return AttemptResult.of(task, ok=False, error=error, retryable=False)


class _BatchItems:
    """A batch's items as the executor goes through them: each begun (the worker's
    ``begin``), then ended (``end``) once, in order; the rest once ``begin`` says stop."""

    def __init__(self, items: list[Task], begin: BeginItem, end: EndItem) -> None:
        self._todo = deque(items)
        self._begin = begin
        self._end = end
        self._current: Task | None = None

    def next(self) -> tuple[Task, Emit] | None:
        """The next item, begun, with its Emit; None when there is none to run."""
        assert self._current is None, "an item begun and not ended"
        if not self._todo:
            return None
        item = self._todo.popleft()
        emit = self._begin(item)
        if emit is None:  # the worker is shutting down: these run again elsewhere
            self._todo.clear()
            return None
        self._current = item
        return item, emit

    def ended(self, result: AttemptResult) -> None:
        self._current = None
        self._end(result)

    def end_rest(self, error: str, *, retryable: bool = True, engine_down: bool = False) -> None:
        """End the item in hand and every one after it, failed with ``error``, unrun."""
        if self._current is not None:
            self.ended(self._failed(self._current, error, retryable, engine_down))
        while (began := self.next()) is not None:
            self.ended(self._failed(began[0], error, retryable, engine_down))

    @staticmethod
    def _failed(task: Task, error: str, retryable: bool, engine_down: bool) -> AttemptResult:
        return AttemptResult.of(
            task, ok=False, error=error, retryable=retryable, engine_down=engine_down
        )


def _launcher(kit: LaunchKit) -> Launcher:
    """The launcher ``executor.launch`` asks for; plain, saying why, when gated cannot work."""
    if kit.settings.launch == "plain":
        return PlainLauncher(kit)
    busybox = static_busybox()
    if kit.mount_root is not None and busybox is not None:
        return GatedLauncher(kit, busybox)
    if kit.mount_root is None:
        reason = "the Docker engine is not on this machine (executor.transfer: archive)"
        fix = "set executor.launch: plain for this worker to silence this"
    else:
        reason = "no statically linked busybox at /bin/busybox or /usr/bin/busybox"
        fix = "install Debian's busybox-static (make setup does), or set executor.launch: plain"
    log.warning("launch_plain", asked="gated", reason=reason, fix=fix)
    return PlainLauncher(kit)


__all__ = ["DockerExecutor", "connect_docker", "engine_is_local"]
