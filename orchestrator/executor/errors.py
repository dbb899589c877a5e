"""How an attempt fails, and the one place Docker's and the stores' errors become ours.

    AttemptFailed          the attempt failed: its message is what a user reads in
    │                      NodeState.Error; ``retryable`` says whether to try again
    ├── CommandFailed      the node's program exited non-zero (its code; out of memory?)
    ├── EngineUnreachable  a Docker call got no answer (connection failed, timed out)
    └── EngineNotFound     the engine has no such thing (an image, a container, a path)

docker-py talks HTTP through requests too, so a step says whether its requests
errors come from the Docker engine or from a store. Nothing here raises past the
executor: its ``run`` turns an AttemptFailed into a failed AttemptResult.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterator

import docker.errors
import requests
import structlog

log = structlog.get_logger(__name__)


class AttemptFailed(Exception):
    """A failed attempt, with the message a user reads in NodeState.Error."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class CommandFailed(AttemptFailed):
    """The node's own program ended with a non-zero exit code (``oom``: killed for memory)."""

    def __init__(self, message: str, *, exit_code: int, oom: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.oom = oom


class EngineUnreachable(AttemptFailed):
    """A Docker call got no answer: the connection to the engine failed or timed out."""


class EngineNotFound(AttemptFailed):
    """The engine answered that what the step named is not there."""


def engine_problem(exc: BaseException) -> str:
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
def step(what: str, *, engine: bool = False) -> Iterator[None]:
    """Translate the Docker, HTTP, archive and file errors of one step into an AttemptFailed.

    ``engine``: the step's requests errors come from the Docker engine, not a store.
    """
    try:
        yield
    except AttemptFailed:
        raise
    except docker.errors.NotFound as exc:
        raise EngineNotFound(f"{what}: Docker said: {exc.explanation or exc}") from exc
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
    except docker.errors.DockerException as exc:
        raise AttemptFailed(f"{what}: {exc}") from exc
    except OSError as exc:
        raise AttemptFailed(f"{what}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def tolerated(what: str, why: str) -> Iterator[None]:
    """Run a Docker call whose failure changes nothing; a failure is logged, not raised.

    ``why`` says why it may fail harmlessly (the container is gone already, the
    engine is down and a later clean-up removes it); it goes to the debug log.
    """
    try:
        yield
    except (docker.errors.DockerException, requests.RequestException) as exc:
        log.debug("docker_call_tolerated", call=what, why=why, docker=engine_problem(exc))


__all__ = [
    "AttemptFailed",
    "CommandFailed",
    "EngineNotFound",
    "EngineUnreachable",
    "engine_problem",
    "step",
    "tolerated",
]
