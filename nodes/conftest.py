"""Fixtures of the built-in nodes' tests: the real service that tests/ starts, and samples.

``run_contract`` runs a catalog node's image straight on Docker, the way the worker
runs an attempt with its files mounted: for collection inputs and outputs, which the
service does not run end to end yet.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import pytest

from orchestrator import command
from orchestrator.catalog import load_catalog
from tests.conftest import start_service
from tests.samples import video

#: What a test gives an input: one file's bytes, or a collection's items by item name.
Given = bytes | dict[str, bytes]


@pytest.fixture(scope="session")
def clip() -> bytes:
    """Two seconds of ffmpeg's test pattern, 160x120 at 10 fps, with a 440 Hz tone (MP4)."""
    return video(seconds=2, size="160x120", rate=10, audio=True)


@dataclass
class ContractRun:
    """How one container ended: exit code, logs, and what it left in each output."""

    code: int
    stdout: str
    stderr: str
    #: A file output's bytes; a collection output's regular files by path (its items).
    outputs: dict[str, Given] = field(default_factory=dict)


RunContract = Callable[..., ContractRun]


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker daemon reachable ({exc}); run make setup")
    yield client
    client.close()


@pytest.fixture
def run_contract(engine: docker.DockerClient, tmp_path: Path) -> RunContract:
    """Run a catalog node (its NodeDef's image, Exec and flag defaults) under the node
    contract: inputs in ``/pipewell/in`` (read-only; a collection input a directory of
    its items), outputs in ``/pipewell/out`` (a collection output an empty directory),
    ``INPUT_*``/``OUTPUT_*``/``FLAG_*`` set, as nobody, no network, no capabilities."""

    def run(
        uses: str,
        inputs: dict[str, Given],
        outputs: list[str],
        flags: dict[str, str] | None = None,
        command_name: str | None = None,
    ) -> ContractRun:
        node_def = load_catalog()[uses]
        declared = {edge.name: edge for edge in node_def.inputs}
        made = {edge.name: edge for edge in node_def.outputs}
        root = tmp_path / uuid.uuid4().hex[:8]
        (root / "in").mkdir(parents=True, mode=0o755)
        (root / "out").mkdir(mode=0o777)
        (root / "out").chmod(0o777)  # whatever the umask: the node's user writes here
        input_paths, output_paths = {}, {}
        for name, given in inputs.items():
            assert declared[name].collection == isinstance(given, dict), name
            input_paths[name] = command.input_path(name, "")
            if isinstance(given, dict):
                (root / "in" / name).mkdir()  # there even when the collection is empty
                for item, data in given.items():
                    _write(root / "in" / name / item, data)
            else:
                _write(root / "in" / name, given)
        for name in outputs:
            output_paths[name] = command.output_path(name, "")
            if made[name].collection:
                (root / "out" / name).mkdir(mode=0o777)
                (root / "out" / name).chmod(0o777)
        values = {f.name: f.default for f in node_def.flags if f.default is not None}
        values.update(flags or {})
        for directory, _dirs, _files in os.walk(root / "in"):
            Path(directory).chmod(0o755)  # whatever the umask: the node's user reads here
        commands = {c.name: c for c in node_def.all_commands()}
        chosen = commands[command_name] if command_name else next(iter(commands.values()), None)
        argv = None
        if chosen is not None:
            argv = command.expand_argv(
                command.split_exec(chosen.exec),
                command.placeholder_values(input_paths, output_paths, values),
            )
        container = engine.containers.create(
            node_def.image,
            command=argv,
            name=f"pipewell-nodetest-{uuid.uuid4().hex[:12]}",
            environment=command.node_environment(input_paths, output_paths, values),
            user="65534:65534",
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            volumes={
                str(root / "in"): {"bind": command.INPUT_DIR, "mode": "ro"},
                str(root / "out"): {"bind": command.OUTPUT_DIR, "mode": "rw"},
            },
        )
        try:
            container.start()
            code = container.wait(timeout=120)["StatusCode"]
            stdout = container.logs(stdout=True, stderr=False).decode()
            stderr = container.logs(stdout=False, stderr=True).decode()
        finally:
            container.remove(force=True)
        result = ContractRun(code, stdout, stderr)
        for name in outputs:
            path = root / "out" / name
            if made[name].collection:
                result.outputs[name] = _tree(path)
            elif path.is_file():
                result.outputs[name] = path.read_bytes()
        return result

    return run


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.write_bytes(data)
    path.chmod(0o644)


def _tree(directory: Path) -> dict[str, bytes]:
    """Each regular file under ``directory`` by its path there (what the worker sends)."""
    found = {}
    for parent, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(parent) / name
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(directory).as_posix()] = path.read_bytes()
    return dict(sorted(found.items()))


__all__ = ["ContractRun", "RunContract", "clip", "engine", "run_contract", "start_service"]
