"""Runs one attempt of one node as a Docker container (the node contract).

create → copy inputs in → attach → start → stream logs → wait (killed at the
timeout) → copy outputs out → remove, whatever happened.

Everything here blocks (the ``docker`` and ``requests`` clients do): the
worker calls :meth:`DockerExecutor.run` from a bounded thread pool, never on
the event loop. Docker and HTTP errors are translated into failed attempts in
one place (:func:`_step`), naming the component that failed (the Docker engine
or the store); nothing here raises past ``run``. An attempt whose Docker engine
stopped answering comes back with ``engine_down`` set: the worker then waits
for the engine, and the attempt is not counted against the node.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tarfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from orchestrator import command
from orchestrator.config import ExecutorSettings
from orchestrator.errors import ConfigError
from orchestrator.messages import AttemptResult, OutputInfo, Task, TaskInput
from orchestrator.mime import extension_for, matches, sniff
from orchestrator.models import NAME_RULE, LogRecord, is_name
from orchestrator.node_images import ImageBuildFailed, MissingImageBuilder
from orchestrator.tiers import TIERS, Tier
from orchestrator.warm_pool import (
    BUSYBOX,
    GATE_DIR,
    GATE_SCRIPT,
    Shape,
    Spare,
    WarmPool,
    gate_command,
    hold_gate,
    open_gate,
    prepare_gate,
    static_busybox,
)

log = structlog.get_logger(__name__)

CHUNK = 1024 * 1024
SNIFF_BYTES = 8192
#: Ended runs remembered, so attempts still setting up for them do not start.
ENDED_RUNS_KEPT = 1000
MAX_LINE = 8192
LABEL_RUN = "pipewell.run_id"
LABEL_NODE = "pipewell.node_id"
LABEL_ATTEMPT = "pipewell.attempt"
#: The worker's display name (worker.name), shared by the services of one host.
LABEL_WORKER = "pipewell.worker"
#: The worker's identity (orchestrator.identity): what leftover clean-up matches.
LABEL_WORKER_ID = "pipewell.worker_id"
#: One per attempt: tells an attempt in flight from one that left its container behind.
LABEL_ATTEMPT_ID = "pipewell.attempt_id"
#: Who a node runs as when its image names no user or names root: nobody:nogroup.
UNPRIVILEGED_USER = "65534:65534"
#: Pipewell streams and keeps a node's logs itself: Docker's own copy (json-file) is capped.
DOCKER_LOG_CAPS = {"max-size": "10m", "max-file": "1"}

# Families the sniffer recognises: an unrecognised binary cannot be one of them.
_SNIFFABLE_PREFIXES = ("image/", "video/", "audio/", "font/", "text/")

Emit = Callable[[LogRecord], None]


class AttemptFailed(Exception):
    """A failed attempt, with the message a user reads in NodeState.Error."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class EngineUnreachable(AttemptFailed):
    """A Docker call got no answer: the connection to the engine failed or timed out."""


def engine_problem(exc: Exception) -> str:
    """What went wrong talking to the Docker engine, in a few words (no store URL can be in it)."""
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer within the time allowed (executor.docker_timeout): {type(exc).__name__}"
    reason: BaseException = exc
    # requests wraps urllib3's error, which wraps the socket's: the innermost says most.
    while reason.args and isinstance(reason.args[-1], BaseException):
        reason = reason.args[-1]
    if reason is exc:
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} ({reason})"


@contextlib.contextmanager
def _step(what: str, *, engine: bool = False) -> Iterator[None]:
    """Translate Docker and HTTP errors of one step into an AttemptFailed.

    docker-py talks HTTP through requests too: ``engine`` says the step's
    requests errors come from the Docker engine, not from a store.
    """
    try:
        yield
    except AttemptFailed:
        raise
    except docker.errors.APIError as exc:
        raise AttemptFailed(f"{what}: Docker said: {exc.explanation or exc}") from exc
    except requests.RequestException as exc:
        if engine:
            raise EngineUnreachable(
                f"{what}: the Docker engine did not answer: {engine_problem(exc)}"
            ) from exc
        # The exception text may hold the presigned URL: keep only its kind.
        raise AttemptFailed(f"{what}: {type(exc).__name__} talking to the store") from exc
    except tarfile.TarError as exc:
        raise AttemptFailed(f"{what}: unreadable archive from Docker: {exc}") from exc
    except OSError as exc:
        raise AttemptFailed(f"{what}: {exc.strerror or exc}") from exc


def _check_names(task: Task) -> None:
    """Refuse a task whose input, output or flag names are not identifiers.

    Validation refuses such flows; a task also comes from a queue, so the worker
    checks again before any name becomes a path or an environment variable.
    """
    for kind, names in (
        ("input", [i.name for i in task.inputs]),
        ("output", [o.name for o in task.outputs]),
        ("flag", list(task.flags)),
    ):
        for name in names:
            if not is_name(name):
                raise AttemptFailed(
                    f"{kind} name {name[:80]!r} is not a valid name: {NAME_RULE}",
                    retryable=False,
                )


def inside(directory: Path, file_name: str) -> Path:
    """``directory / file_name``, refused unless it is a plain file name in that directory."""
    if not file_name or file_name in (".", "..") or "/" in file_name or "\0" in file_name:
        raise AttemptFailed(
            f"refusing the file name {file_name[:80]!r}: it would leave {directory}",
            retryable=False,
        )
    return directory / file_name


def registry_of(image: str) -> str:
    """The registry Docker pulls ``image`` from: its first component when that names a host."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


def container_user(image_user: str, *, run_as_root: bool) -> str | None:
    """The user a node's container runs as; None keeps the image's own.

    The container is the sandbox: an image that names no user, or names root,
    runs as nobody unless its NodeDef asks for root (RunAsRoot).
    """
    if run_as_root:
        return "0"
    if image_user.split(":", 1)[0] in ("", "root", "0"):
        return UNPRIVILEGED_USER
    return None


def container_name(task: Task, attempt_id: str) -> str:
    """Whose attempt a container runs, for ``docker ps`` (unique: the attempt id ends it)."""
    return f"pipewell-{task.run_id}-{task.node_id}-{task.attempt}-{attempt_id[:8]}"


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


def _engine_is_local(client: docker.DockerClient) -> bool:
    """Whether the engine shares our filesystem (a unix socket), so bind mounts see our files."""
    return str(client.api.base_url).startswith("http+docker://")


def input_type_ok(actual: str, accepted: list[str] | None) -> bool:
    """Whether a sniffed type satisfies an input's ``Type`` list.

    Sniffing cannot tell CSV from plain text, nor name every binary format, so
    plain text satisfies any ``text/*`` type and an unrecognised binary is only
    refused when every accepted type is one the sniffer would have recognised.
    """
    if matches(actual, accepted):
        return True
    assert accepted is not None
    if actual == "text/plain" and any(t.lower().startswith("text/") for t in accepted):
        return True
    if actual == "application/octet-stream":
        return not all(
            t.lower().startswith(_SNIFFABLE_PREFIXES) or t.lower() == "application/json"
            for t in accepted
        )
    return False


@dataclass
class _OpenInput:
    spec: TaskInput
    response: requests.Response
    size: int
    head: bytes
    content_type: str
    suffix: str

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        yield from self.response.iter_content(CHUNK)


class _IterReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (Docker's archive stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[no-untyped-def]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
            except requests.RequestException as exc:
                # Read while the store's upload sends it: would pass for the store's error.
                raise EngineUnreachable(
                    f"copy out: the Docker engine did not answer: {engine_problem(exc)}"
                ) from exc
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


class _SizedBody:
    """Head bytes then the rest of a stream, with a length so requests sends Content-Length."""

    def __init__(self, head: bytes, rest: io.BufferedIOBase, size: int) -> None:
        self._head = head
        self._rest = rest
        self._size = size

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._rest.read(CHUNK if n is None or n < 0 else max(n, CHUNK))


def _tar_entries(entries: list[tuple[str, int, Iterator[bytes] | None]]) -> Iterator[bytes]:
    """A tar stream of (path, size, chunks) entries; chunks None makes a directory."""
    now = time.time()
    for path, size, chunks in entries:
        info = tarfile.TarInfo(path)
        info.mtime = int(now)
        if chunks is None:
            info.type = tarfile.DIRTYPE
            info.mode = 0o777
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            continue
        info.size = size
        info.mode = 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        sent = 0
        try:
            for chunk in chunks:
                sent += len(chunk)
                if sent > size:
                    raise AttemptFailed(f"{path}: the store sent more bytes than announced")
                yield chunk
        except requests.RequestException as exc:
            # Raised inside Docker's request, it would pass for the engine's error.
            raise AttemptFailed(f"{path}: {type(exc).__name__} reading it from the store") from exc
        if sent != size:
            raise AttemptFailed(f"{path}: the store sent {sent} of {size} bytes")
        if size % 512:
            yield b"\0" * (512 - size % 512)
    yield b"\0" * 1024


class _LogPump:
    """Reads the attach stream in its own thread, cutting it into log lines."""

    def __init__(
        self, stream: Iterator[tuple[bytes | None, bytes | None]], emit: Emit, attempt: int
    ) -> None:
        self._stream = stream
        self._emit = emit
        self._attempt = attempt
        self._partial = {"stdout": b"", "stderr": b""}
        self.stderr_tail: deque[str] = deque(maxlen=5)
        self._thread = threading.Thread(target=self._pump, name="pipewell-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _pump(self) -> None:
        try:
            for stdout, stderr in self._stream:
                if stdout:
                    self._feed("stdout", stdout)
                if stderr:
                    self._feed("stderr", stderr)
        except (docker.errors.APIError, requests.RequestException, OSError, ValueError):
            pass  # the container went away; what was read is already emitted
        for stream_name, rest in self._partial.items():
            if rest:
                self._line(stream_name, rest)

    def _feed(self, stream_name: str, data: bytes) -> None:
        buffer = self._partial[stream_name] + data
        *lines, self._partial[stream_name] = buffer.split(b"\n")
        for line in lines:
            self._line(stream_name, line)
        if len(self._partial[stream_name]) > MAX_LINE:
            self._line(stream_name, self._partial[stream_name])
            self._partial[stream_name] = b""

    def _line(self, stream_name: str, raw: bytes) -> None:
        text = raw.rstrip(b"\r").decode("utf-8", errors="replace")[:MAX_LINE]
        if stream_name == "stderr" and text.strip():
            self.stderr_tail.append(text.strip())
        self._emit(LogRecord(message=text, stream=stream_name, attempt=self._attempt))


class _Stopwatch:
    """Seconds spent per phase of an attempt, summed when a phase recurs."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - began
            self.totals[phase] = round(self.totals.get(phase, 0.0) + elapsed, 4)


class DockerExecutor:
    """Executes tasks on one Docker engine."""

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
        self.images = MissingImageBuilder(client)
        # mount: each attempt's files live in a host directory bind-mounted into the
        # container; archive: they are copied in and out through the Engine API.
        transfer = settings.transfer
        if transfer == "auto":
            transfer = "mount" if _engine_is_local(client) else "archive"
        self.mount_root: Path | None = None
        if transfer == "mount":
            self.mount_root = work_dir.resolve() / "attempts"
            self.mount_root.mkdir(parents=True, exist_ok=True)
        self._http = threading.local()
        self._aborting = threading.Event()
        # Attempts in flight (their attempt ids): clean-up while they run leaves them alone.
        self._live: set[str] = set()
        self._live_lock = threading.Lock()
        # Runs that ended while attempts of theirs were still being set up: an
        # attempt checks this around its start, since a kill cannot reach a
        # container that is created but not started, nor one not created yet.
        self._ended_runs: OrderedDict[str, None] = OrderedDict()
        # Gated containers (orchestrator.warm_pool) need the attempt's directory
        # mounted, and a busybox that runs in any image.
        self.busybox = static_busybox() if self.mount_root is not None else None
        # Container id -> run id of the attempts running gated: a warm container
        # was labelled before it had a run, so kill_run finds it here.
        self._claimed: dict[str, str] = {}
        self.pool: WarmPool | None = None
        if self.mount_root is not None and self.busybox is None and settings.warm_containers:
            log.warning(
                "warm_containers_off",
                reason="no statically linked busybox at /bin/busybox or /usr/bin/busybox",
                fix="install Debian's busybox-static (make setup does), or set "
                "executor.warm_containers: 0 to silence this",
            )
        if self.busybox is not None and settings.warm_containers > 0:
            self.pool = WarmPool(
                self._make_spare, self._discard_spare, settings.warm_containers, settings.warm_idle
            )

    # ------------------------------------------------------------ public

    def run(self, task: Task, emit: Emit) -> tuple[AttemptResult, Callable[[], float]]:
        """Run one attempt to its end; never raises, the result says what happened.

        Returns the result and a cleanup that removes the container and says how
        long that took: the caller reports the result first, then cleans up, so
        removal is not on the flow's critical path.
        """
        tier = TIERS[task.tier]
        container = None
        opened: list[_OpenInput] = []
        timings = _Stopwatch()
        result = AttemptResult(
            run_id=task.run_id, node_id=task.node_id, attempt=task.attempt, ok=False
        )
        attempt_id = uuid.uuid4().hex
        with self._live_lock:
            self._live.add(attempt_id)
        attempt_dir = None
        try:
            _check_names(task)
            with timings("input_transfer"):
                opened = [self._open_input(spec) for spec in task.inputs]
            in_paths = {i.spec.name: command.input_path(i.spec.name, i.suffix) for i in opened}
            out_paths = {o.name: command.output_path(o.name, o.suffix) for o in task.outputs}
            if self.busybox is not None:
                with self._live_lock:
                    self._live.discard(attempt_id)  # the gated container brings its own
                spare = self._claim_or_make(task, tier, timings, emit)
                container, attempt_dir = spare.container, spare.directory
                attempt_id = spare.attempt_id
                pump = self._start_gated(spare, task, opened, in_paths, out_paths, timings, emit)
            else:
                attempt_dir = self._attempt_dir(attempt_id) if self.mount_root is not None else None
                # Created before the input bodies land: Docker syncs the filesystem when
                # it creates a container, and gigabytes of fresh dirty pages make that slow.
                with timings("create"):
                    container = self._create(
                        task, tier, in_paths, out_paths, attempt_dir, attempt_id, emit
                    )
                with timings("input_transfer"):
                    if attempt_dir is None:
                        self._copy_in(container, opened)
                    for item in opened if attempt_dir is not None else []:
                        target = inside(attempt_dir / "in", f"{item.spec.name}{item.suffix}")
                        self._download(item, target)
                self._check_run_live(task)
                with timings("start"):
                    pump = self._attach(container, emit, task.attempt)
                    self._start(container)
            if task.run_id in self._ended_runs:
                with contextlib.suppress(docker.errors.APIError, requests.RequestException):
                    container.kill()
            with timings("run"):
                exit_code = self._wait(container, task, pump)
            if self._aborting.is_set():
                raise AttemptFailed("the worker is shutting down; the node will run again")
            if exit_code != 0:
                raise AttemptFailed(self._exit_message(container, exit_code, tier, pump))
            with timings("output_transfer"):
                for spec in task.outputs:
                    path = out_paths[spec.name]
                    if attempt_dir is None:
                        info = self._copy_out(container, path, spec.name, spec.url)
                    else:
                        host_path = inside(attempt_dir / "out", path.rsplit("/", 1)[1])
                        info = self._upload_file(host_path, path, spec.name, spec.url)
                    result.outputs[spec.name] = info
            result.ok = True
        except AttemptFailed as failure:
            result.error, result.retryable = failure.message, failure.retryable
            # A Docker call got no answer. If the engine is down that is not the
            # node's failure (and the node runs again once it is back); if it
            # answers again, the failure counts like any other.
            result.engine_down = isinstance(failure, EngineUnreachable) and self.ping() is not None
        except Exception as exc:  # a bug of ours must still end the attempt, not the worker
            log.exception("executor_crashed", run_id=task.run_id, node_id=task.node_id)
            result.error = f"internal error in the worker: {type(exc).__name__}: {exc}"
        finally:
            for item in opened:
                item.response.close()
        result.timings = timings.totals

        def cleanup() -> float:
            began = time.perf_counter()
            self._dispose(container, attempt_dir, attempt_id)
            return time.perf_counter() - began

        return result, cleanup

    def abort_all(self) -> int:
        """Shutting down: kill this worker's containers so their attempts end now.

        The aborted attempts report nothing; the scheduler dispatches their
        nodes again when it resumes.
        """
        self._aborting.set()
        if self.pool is not None:
            for spare in self.pool.close():
                self._discard_spare(spare)
        return self._kill_own()

    def kill_run(self, run_id: str) -> int:
        """Kill this worker's containers of a run that has ended; their attempts then end."""
        self._ended_runs[run_id] = None
        while len(self._ended_runs) > ENDED_RUNS_KEPT:
            self._ended_runs.popitem(last=False)
        with self._live_lock:
            gated = [cid for cid, run in self._claimed.items() if run == run_id]
        killed = 0
        for container_id in gated:
            with contextlib.suppress(docker.errors.APIError, requests.RequestException):
                self.client.api.kill(container_id)
                killed += 1
        # Labelled with the run: those created for an attempt (gated or not).
        return killed + self._kill_own(run_id)

    def close(self) -> int:
        """Stop making warm containers and remove the unclaimed ones; how many."""
        if self.pool is None:
            return 0
        spares = self.pool.close()
        for spare in spares:
            self._discard_spare(spare)
        return len(spares)

    def _kill_own(self, run_id: str | None = None) -> int:
        try:
            containers = self._own_containers(run_id)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # Their attempts end anyway: the engine's failure ends them.
            log.warning("kill_skipped", run_id=run_id, docker=engine_problem(exc))
            return 0
        killed = 0
        for container in containers:
            with contextlib.suppress(docker.errors.APIError, requests.RequestException):
                container.kill()
                killed += 1
        return killed

    def _check_run_live(self, task: Task) -> None:
        if task.run_id in self._ended_runs:
            raise AttemptFailed(
                "cancelled: the run ended before this node started", retryable=False
            )

    def _own_containers(self, run_id: str | None = None) -> list:  # type: ignore[type-arg]
        """Containers of this worker's identity (of one run).

        Never matched by worker name: the services of one host share it
        (orchestrator.identity).
        """
        run_label = f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN
        # sparse: without it docker-py inspects each listed container, and one
        # removed meanwhile (an attempt cleaning up) fails the whole listing.
        return self.client.containers.list(
            all=True,
            sparse=True,
            filters={"label": [run_label, f"{LABEL_WORKER_ID}={self.worker_id}"]},
        )

    def ping(self) -> str | None:
        """None when the Docker engine answers, else what is wrong."""
        try:
            self.client.ping()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            return engine_problem(exc)
        return None

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
        """Remove what attempts of this worker left behind: containers, attempt directories.

        At start-up (after a crash, a SIGKILL) that is every container of this
        worker's identity; once the engine answers again after an outage, those
        of the attempts it cut short, while the attempts in flight keep theirs.
        """
        with self._live_lock:
            live = set(self._live)
        if self.mount_root is not None:
            for stale in self.mount_root.iterdir():
                if stale.name not in live:
                    shutil.rmtree(stale, ignore_errors=True)
        removed = 0
        for container in self._own_containers():
            if container.attrs.get("Labels", {}).get(LABEL_ATTEMPT_ID) not in live:
                self._remove(container)
                removed += 1
        return removed

    def remove_containers_of(self, worker_ids: set[str]) -> int:
        """Remove the containers of other workers known to be dead (same engine, other identity).

        Their attempts run elsewhere again; nothing else would ever remove them.
        """
        removed = 0
        for container in self.client.containers.list(
            all=True, sparse=True, filters={"label": [LABEL_RUN, LABEL_WORKER_ID]}
        ):
            owner = container.attrs.get("Labels", {}).get(LABEL_WORKER_ID)
            if owner in worker_ids and owner != self.worker_id:
                self._remove(container)
                removed += 1
        return removed

    # ------------------------------------------------------------ steps

    def _session(self) -> requests.Session:
        session = getattr(self._http, "session", None)
        if session is None:
            session = self._http.session = requests.Session()
            # Retry only failed connects (nothing sent yet): the service may still be
            # starting up. About 3 s in all: a service shutting down must not hold
            # its last attempts for long.
            retry = Retry(
                total=None,
                connect=5,
                read=0,
                status=0,
                other=0,
                backoff_factor=0.1,
                allowed_methods=None,
            )
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
        return session

    def _pull(self, image: str) -> dict:  # type: ignore[type-arg]
        """Pull a missing image; returns its inspect answer (Id, Config)."""
        registry = registry_of(image)
        if registry not in self.settings.pull_registries:
            # The engine would connect to whatever host the flow's image names.
            allowed = ", ".join(self.settings.pull_registries) or "none"
            raise AttemptFailed(
                f"image {image} not found locally, and pulling from {registry} is not allowed "
                f"here (executor.pull_registries: {allowed}); load the image on the worker, "
                "or ask the operator to allow its registry",
                retryable=False,
            )
        repository, _, tag = (
            image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        )
        deadline = time.monotonic() + self.settings.pull_timeout
        try:
            # Streamed so the pull can be abandoned at pull_timeout between progress lines.
            for progress in self.client.api.pull(
                repository, tag=tag or "latest", stream=True, decode=True
            ):
                if "error" in progress:
                    raise AttemptFailed(
                        f"image {image} not found locally and could not be pulled: "
                        f"{progress['error']}"
                    )
                if time.monotonic() > deadline:
                    raise AttemptFailed(
                        f"image {image} not found locally and its pull took over "
                        f"{self.settings.pull_timeout:g} s (executor.pull_timeout)"
                    )
            return self.client.images.get(image).attrs
        except docker.errors.APIError as exc:
            raise AttemptFailed(
                f"image {image} not found locally and could not be pulled: {exc.explanation or exc}"
            ) from exc
        except requests.RequestException as exc:
            raise EngineUnreachable(
                f"pull image {image}: the Docker engine did not answer: {engine_problem(exc)}"
            ) from exc

    def _open_input(self, spec: TaskInput) -> _OpenInput:
        with _step(f"input '{spec.name}': download"):
            response = self._session().get(
                spec.url, stream=True, timeout=(10, self.settings.transfer_timeout)
            )
            if response.status_code != 200:
                response.close()
                raise AttemptFailed(
                    f"input '{spec.name}': the store answered HTTP {response.status_code}"
                )
            length = response.headers.get("Content-Length")
            if length is None:
                response.close()
                raise AttemptFailed(f"input '{spec.name}': the store sent no Content-Length")
            size = int(length)
            head = response.raw.read(min(size, SNIFF_BYTES), decode_content=True)
        content_type = sniff(head)
        if not input_type_ok(content_type, spec.types):
            response.close()
            raise AttemptFailed(
                f"input '{spec.name}' is {content_type}, but this node accepts "
                f"{', '.join(spec.types or [])}",
                retryable=False,
            )
        return _OpenInput(spec, response, size, head, content_type, extension_for(content_type))

    def _attempt_dir(self, attempt_id: str) -> Path:
        assert self.mount_root is not None
        path = self.mount_root / attempt_id
        for sub in ("in", "out"):
            (path / sub).mkdir(parents=True)
        # Whatever user the image runs as must be able to write its outputs.
        (path / "out").chmod(0o777)
        (path / "in").chmod(0o755)
        return path

    def _download(self, item: _OpenInput, target: Path) -> None:
        with _step(f"input '{item.spec.name}': download"), target.open("wb") as handle:
            received = 0
            for chunk in item.chunks():
                received += len(chunk)
                handle.write(chunk)
            if received != item.size:
                raise AttemptFailed(
                    f"input '{item.spec.name}': the store sent {received} of {item.size} bytes"
                )
        target.chmod(0o644)

    def _upload_file(self, host_path: Path, path: str, name: str, url: str) -> OutputInfo:
        """PUT an output the container wrote into the mounted directory.

        The container controls that directory: a symlink, a FIFO or a directory
        in the output's place must not make us read anything else, or block.
        """
        try:
            fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError as exc:
            raise AttemptFailed(
                f"output '{name}' missing: the command exited 0 but did not write {path}"
            ) from exc
        except OSError as exc:
            raise AttemptFailed(f"output '{name}': {path} is not a regular file") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise AttemptFailed(f"output '{name}': {path} is not a regular file")
        with os.fdopen(fd, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
            return self._put(name, url, head, handle, info.st_size)

    def _put(self, name: str, url: str, head: bytes, rest, size: int) -> OutputInfo:  # type: ignore[no-untyped-def]
        content_type = sniff(head)
        with _step(f"output '{name}': upload"):
            response = self._session().put(
                url,
                data=_SizedBody(head, rest, size),
                headers={"Content-Type": content_type},
                timeout=(10, self.settings.transfer_timeout),
            )
            if response.status_code not in (200, 201, 204):
                raise AttemptFailed(
                    f"output '{name}': the store refused the upload (HTTP {response.status_code})"
                )
        return OutputInfo(size=size, content_type=content_type)

    def _create(
        self,
        task: Task,
        tier: Tier,
        in_paths: dict[str, str],
        out_paths: dict[str, str],
        attempt_dir: Path | None,
        attempt_id: str,
        emit: Emit,
    ):  # -> Container
        """A container of the attempt, ungated: archive transfers, or no static busybox."""
        image = self._image(task, emit)
        user = container_user(image["Config"].get("User") or "", run_as_root=task.run_as_root)
        argv = None
        if task.argv is not None:
            argv = command.expand_argv(
                task.argv, command.placeholder_values(in_paths, out_paths, task.flags)
            )
        options = self._sandbox(tier, user)
        options.update(
            command=argv,
            environment=self._environment(task, in_paths, out_paths),
            labels=self._labels(attempt_id, task),
            name=container_name(task, attempt_id),
        )
        if attempt_dir is not None:
            options["volumes"] = {
                str(attempt_dir / "in"): {"bind": command.INPUT_DIR, "mode": "ro"},
                str(attempt_dir / "out"): {"bind": command.OUTPUT_DIR, "mode": "rw"},
            }
        with _step("create container", engine=True):
            return self.client.containers.create(task.image, **options)

    def _sandbox(self, tier: Tier, user: str | None) -> dict:  # type: ignore[type-arg]
        """What every node container gets: its tier's limits, no network, no privileges."""
        return dict(
            user=user,
            nano_cpus=tier.cpus * 1_000_000_000,
            mem_limit=tier.memory,
            # Equal to mem_limit: no swap, so the limit is the limit.
            memswap_limit=tier.memory,
            pids_limit=tier.pids,
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            privileged=False,
            log_config=docker.types.LogConfig(type="json-file", config=dict(DOCKER_LOG_CAPS)),
            detach=True,
        )

    def _labels(self, attempt_id: str, task: Task | None) -> dict[str, str]:
        """A warm container's run is not known yet: its run label is empty."""
        labels = {
            LABEL_RUN: task.run_id if task else "",
            LABEL_WORKER: self.worker,
            LABEL_WORKER_ID: self.worker_id,
            LABEL_ATTEMPT_ID: attempt_id,
        }
        if task is not None:
            labels.update({LABEL_NODE: task.node_id, LABEL_ATTEMPT: str(task.attempt)})
        return labels

    @staticmethod
    def _environment(
        task: Task, in_paths: dict[str, str], out_paths: dict[str, str]
    ) -> dict[str, str]:
        env = command.node_environment(in_paths, out_paths, task.flags)
        env.update(
            PIPEWELL_RUN_ID=task.run_id,
            PIPEWELL_NODE_ID=task.node_id,
            PIPEWELL_ATTEMPT=str(task.attempt),
        )
        return env

    def _image(self, task: Task, emit: Emit) -> dict:  # type: ignore[type-arg]
        """The image's inspect answer (Id, Config); gets the image if it is missing."""
        try:
            with _step(f"inspect image {task.image}", engine=True):
                attrs = self.client.images.get(task.image).attrs
        except AttemptFailed as failure:
            if not isinstance(failure.__cause__, docker.errors.ImageNotFound):
                raise
            attrs = self._build_or_pull(task, emit)
        attrs.setdefault("Config", {})
        attrs["Config"] = attrs["Config"] or {}
        return attrs

    # ------------------------------------------------------------ gated containers

    def _claim_or_make(self, task: Task, tier: Tier, timings: _Stopwatch, emit: Emit) -> Spare:
        """A warm container of the task's shape, running and now this attempt's; else a new one."""
        with timings("create"):
            image = self._image(task, emit)
            user = container_user(image["Config"].get("User") or "", run_as_root=task.run_as_root)
            shape = Shape(task.image, image["Id"], tier.name, user)
            while self.pool is not None and (spare := self.pool.claim(shape)) is not None:
                if self._is_running(spare.container) and self._hold(spare):
                    spare.config = image["Config"]
                    self._own(spare, task)
                    return spare
                # Killed while it waited (an engine restart, an operator): next one.
                self._discard_spare(spare)
        spare = self._make_spare(shape, task, timings)
        spare.config = image["Config"]
        self._own(spare, task)
        return spare

    def _hold(self, spare: Spare) -> bool:
        """Whether the warm container took its claim (it then waits for its gate)."""
        try:
            hold_gate(spare.directory / "gate", lambda: self._is_running(spare.container))
        except OSError:
            return False
        return True

    def _own(self, spare: Spare, task: Task) -> None:
        with self._live_lock:
            self._claimed[spare.container.id] = task.run_id

    def _start_gated(
        self,
        spare: Spare,
        task: Task,
        opened: list[_OpenInput],
        in_paths: dict[str, str],
        out_paths: dict[str, str],
        timings: _Stopwatch,
        emit: Emit,
    ) -> _LogPump:
        """Put the inputs in place, then open the gate: the node's program starts."""
        with timings("input_transfer"):
            for item in opened:
                target = inside(spare.directory / "in", f"{item.spec.name}{item.suffix}")
                self._download(item, target)
        self._check_run_live(task)
        argv = self._program(task, spare.config, in_paths, out_paths)
        script = gate_command(self._environment(task, in_paths, out_paths), argv)
        with timings("start"):
            pump = self._attach(spare.container, emit, task.attempt)
            with _step("open the container's gate"):
                open_gate(
                    spare.directory / "gate", script, lambda: self._is_running(spare.container)
                )
        if spare.made_for is None:
            # Labels cannot change: the name says whose attempt a warm container runs.
            with contextlib.suppress(docker.errors.APIError, requests.RequestException):
                spare.container.rename(container_name(task, spare.attempt_id))
        return pump

    @staticmethod
    def _program(
        task: Task,
        config: dict,  # type: ignore[type-arg]
        in_paths: dict[str, str],
        out_paths: dict[str, str],
    ) -> list[str]:
        """What Docker would run: the image's Entrypoint, then the command or its Cmd."""
        if task.argv is not None:
            args = command.expand_argv(
                task.argv, command.placeholder_values(in_paths, out_paths, task.flags)
            )
        else:
            args = list(config.get("Cmd") or [])
        argv = list(config.get("Entrypoint") or []) + args
        if not argv:
            raise AttemptFailed(
                f"image {task.image} names no command and the NodeDef's Exec is empty",
                retryable=False,
            )
        return argv

    def _make_spare(
        self, shape: Shape, task: Task | None = None, timings: _Stopwatch | None = None
    ) -> Spare:
        """Create and start a container held at its gate; for ``task``, or a warm one."""
        timings = timings or _Stopwatch()
        assert self.busybox is not None
        attempt_id = uuid.uuid4().hex
        with self._live_lock:
            self._live.add(attempt_id)
        directory: Path | None = None
        container = None
        try:
            directory = self._attempt_dir(attempt_id)
            prepare_gate(directory / "gate")
            options = self._sandbox(TIERS[shape.tier], shape.user)
            options.update(
                entrypoint=[BUSYBOX, "sh", "-c", GATE_SCRIPT],
                # $0, then how long an unclaimed container waits: past warm_idle,
                # by when the pool removes it; a container made for a task waits on.
                command=["pipewell-gate", "0" if task else str(int(self.settings.warm_idle) + 60)],
                labels=self._labels(attempt_id, task),
                name=container_name(task, attempt_id)
                if task
                else f"pipewell-warm-{attempt_id[:12]}",
                volumes={
                    str(directory / "in"): {"bind": command.INPUT_DIR, "mode": "ro"},
                    str(directory / "out"): {"bind": command.OUTPUT_DIR, "mode": "rw"},
                    str(directory / "gate"): {"bind": GATE_DIR, "mode": "ro"},
                    str(self.busybox): {"bind": BUSYBOX, "mode": "ro"},
                },
            )
            with timings("create"), _step("create container", engine=True):
                container = self.client.containers.create(shape.image, **options)
            with timings("start"):
                self._start(container)
            return Spare(shape, container, attempt_id, directory, made_for=task)
        except BaseException:
            self._dispose(container, directory, attempt_id)
            raise

    def _discard_spare(self, spare: Spare) -> None:
        self._dispose(spare.container, spare.directory, spare.attempt_id)

    def _dispose(self, container, directory: Path | None, attempt_id: str) -> None:  # type: ignore[no-untyped-def]
        """Remove an attempt's (or a spare's) container and directory; forget its id.

        A container the engine could not remove now is a leftover: removed once
        the engine answers again (remove_leftovers).
        """
        if container is not None:
            self._remove(container)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        with self._live_lock:
            self._live.discard(attempt_id)
            if container is not None:
                self._claimed.pop(container.id, None)

    def _is_running(self, container) -> bool:  # type: ignore[no-untyped-def]
        try:
            container.reload()
        except (docker.errors.APIError, requests.RequestException):
            return False
        return container.status == "running"

    def _build_or_pull(self, task: Task, emit: Emit) -> dict:  # type: ignore[type-arg]
        """A built-in node's image is built from its source here, when that is here."""
        source = self.images.source_for(task.image)
        if source is None:
            return self._pull(task.image)

        def say(line: str) -> None:
            emit(LogRecord(message=line, stream="pipewell", attempt=task.attempt))

        say(f"image {task.image} is missing on this worker: building it from its source")
        try:
            self.images.ensure(source, say)
        except ImageBuildFailed as exc:
            raise AttemptFailed(f"image {task.image} not found locally, and {exc}") from exc
        with _step(f"inspect image {task.image}", engine=True):
            return self.client.images.get(task.image).attrs

    def _copy_in(self, container, opened: list[_OpenInput]) -> None:  # type: ignore[no-untyped-def]
        root = command.CONTAINER_ROOT.lstrip("/")
        dirs: list[tuple[str, int, Iterator[bytes] | None]] = [
            (root, 0, None),
            (command.INPUT_DIR.lstrip("/"), 0, None),
            (command.OUTPUT_DIR.lstrip("/"), 0, None),
        ]
        entries = dirs + [
            (command.input_path(i.spec.name, i.suffix).lstrip("/"), i.size, i.chunks())
            for i in opened
        ]
        # One archive, one API call, for the directories and every input.
        names = ", ".join(f"'{i.spec.name}'" for i in opened) or "none"
        with _step(f"copy inputs ({names}) into the container", engine=True):
            container.put_archive("/", _tar_entries(entries))

    def _attach(self, container, emit: Emit, attempt: int) -> _LogPump:  # type: ignore[no-untyped-def]
        with _step("attach to the container", engine=True):
            stream = self.client.api.attach(
                container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
            )
        pump = _LogPump(stream, emit, attempt)
        pump.start()
        return pump

    def _start(self, container) -> None:  # type: ignore[no-untyped-def]
        with _step("start container", engine=True):
            container.start()

    def _wait(self, container, task: Task, pump: _LogPump) -> int:  # type: ignore[no-untyped-def]
        began = time.monotonic()
        try:
            status = container.wait(timeout=task.timeout)
        except requests.RequestException as exc:
            if time.monotonic() - began < task.timeout:
                # Too early for our timeout: the connection to the engine broke.
                raise EngineUnreachable(
                    f"waiting for the container: the Docker engine did not answer: "
                    f"{engine_problem(exc)}"
                ) from exc
            with contextlib.suppress(docker.errors.APIError, requests.RequestException):
                container.kill()
            pump.join(5)
            raise AttemptFailed(
                f"timed out after {task.timeout:g} s (the NodeDef's Timeout); container killed"
            ) from exc
        except docker.errors.APIError as exc:
            raise AttemptFailed(f"waiting for the container: {exc.explanation}") from exc
        pump.join(10)
        return int(status.get("StatusCode", -1))

    def _exit_message(self, container, exit_code: int, tier: Tier, pump: _LogPump) -> str:  # type: ignore[no-untyped-def]
        oom = False
        # An engine going down kills its containers: their exit is not the node's
        # failure, and an unanswered inspect says so (EngineUnreachable).
        with (
            _step("inspect the exited container", engine=True),
            contextlib.suppress(docker.errors.APIError),
        ):
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        if oom:
            return (
                f"out of memory (limit {tier.memory_mib} MiB, tier {tier.name}); "
                f"exit code {exit_code}"
            )
        message = f"command exited with code {exit_code}"
        if exit_code == 137:
            message += " (killed by SIGKILL)"
        if pump.stderr_tail:
            message += f": {pump.stderr_tail[-1][:500]}"
        return message

    def _copy_out(self, container, path: str, name: str, url: str) -> OutputInfo:  # type: ignore[no-untyped-def]
        try:
            with _step(f"output '{name}': copy out", engine=True):
                chunks, _stat = container.get_archive(path, chunk_size=CHUNK)
        except AttemptFailed as failure:
            if isinstance(failure.__cause__, docker.errors.NotFound):
                raise AttemptFailed(
                    f"output '{name}' missing: the command exited 0 but did not write {path}"
                ) from failure.__cause__
            raise
        with (
            _step(f"output '{name}': copy out", engine=True),
            tarfile.open(
                fileobj=io.BufferedReader(_IterReader(iter(chunks)), CHUNK), mode="r|"
            ) as archive,
        ):
            member = archive.next()
            if member is None or not member.isfile():
                raise AttemptFailed(f"output '{name}': {path} is not a regular file")
            body = archive.extractfile(member)
            assert body is not None
            return self._put(name, url, body.read(SNIFF_BYTES), body, member.size)

    def _remove(self, container) -> None:  # type: ignore[no-untyped-def]
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("container_remove_failed", container=container.id[:12], error=str(exc))
        except requests.RequestException as exc:
            # Left for remove_leftovers, once the engine answers again.
            log.warning(
                "container_remove_failed", container=container.id[:12], docker=engine_problem(exc)
            )


__all__ = [
    "AttemptFailed",
    "DockerExecutor",
    "connect_docker",
    "input_type_ok",
    "inside",
    "registry_of",
]
