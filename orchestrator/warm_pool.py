"""Containers started ahead of demand and held at a gate, so an attempt skips Docker's
create and start (about 150 ms on a small machine: most of a short node's time).

A gated container runs our static busybox as its entrypoint, blocked reading a FIFO
in a read-only directory bind-mounted from the host. An attempt that claims it
writes its inputs into the container's mounted input directory, then its command
(the node's environment and argv, quoted for sh) beside the FIFO, and opens the
gate: busybox reads the command and execs the node's program, which becomes PID 1
as it would have been. Every attempt on a local engine runs gated; a *spare* is a
gated container made before any attempt asked for it.

Spares are kept per :class:`Shape` (image, tier, user): what Docker fixes at
create. One background thread makes them, one at a time so that they never crowd
the starts of attempts that are waiting. Each claim asks for a replacement, and a
claim that found none asks for two, so a pool grows to what recent demand needs,
up to ``executor.warm_containers``; spares unused for ``executor.warm_idle`` seconds
are removed.
"""

from __future__ import annotations

import errno
import os
import shlex
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

#: Where the host's static busybox and the gate directory appear in a gated container.
GATE_ROOT = "/.pipewell"
BUSYBOX = f"{GATE_ROOT}/busybox"
GATE_DIR = f"{GATE_ROOT}/gate"
#: Static busybox builds, where Debian's busybox-static puts its binary.
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

#: The entrypoint's script: wait for the gate, then run what the attempt wrote.
#: ``$1``: seconds an unclaimed container waits before it exits (0: no limit), so
#: that one its service never removed (killed with SIGKILL) does not run forever.
#: A claim says "claimed" (the wait is then unlimited: its inputs may take long to
#: land); "go" opens the gate. The FIFO is opened read-write so that opening it
#: never blocks, and closed before the node's program runs.
GATE_SCRIPT = f"""\
exec 3<> {GATE_DIR}/go || exit 125
if [ "$1" -gt 0 ]; then read -t "$1" -r word <&3 || exit 125; else read -r word <&3 || exit 125; fi
[ "$word" = go ] || read -r word <&3 || exit 125
exec 3<&-
. {GATE_DIR}/command
"""

# Debian's static busybox prefers its own applets over the image's programs
# (``exec sort`` would run busybox's sort): the program is found in the image's
# PATH here and executed by its absolute path, never by name (argv[0] stays the
# name, as Docker leaves it).
_EXEC_BY_PATH = """\
case $1 in */*) exec "$@" ;; esac
program=$1
shift
IFS=:
for dir in ${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}; do
  if [ -n "$dir" ] && [ -f "$dir/$program" ] && [ -x "$dir/$program" ]; then
    unset IFS
    exec -a "$program" "$dir/$program" "$@"
  fi
done
echo "pipewell: $program: executable file not found in \\$PATH" >&2
exit 127
"""

#: Seconds an attempt waits for a gated container to be reading its gate.
GATE_WAIT = 10.0
#: Seconds the replenisher pauses after it failed to make a spare.
FAILURE_PAUSE = 2.0
#: Seconds without a claim before spares are made for a shape that still has one
#: ready: making one costs the engine what starting one does, which would slow
#: the attempts of a burst that the ready spares serve.
QUIET = 0.3


def static_busybox() -> Path | None:
    """A statically linked busybox on this host (it must run in any image), or None."""
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        try:
            if path.is_file() and _is_static_elf(path.read_bytes()[:4096], path):
                return path.resolve()
        except OSError:
            continue
    return None


def _is_static_elf(head: bytes, path: Path) -> bool:
    """Whether an ELF64 little-endian executable asks for no program interpreter."""
    if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    with path.open("rb") as handle:
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
    for index in range(phnum):
        (kind,) = struct.unpack_from("<I", table, index * phentsize)
        if kind == 3:  # PT_INTERP: dynamically linked
            return False
    return True


def gate_command(environment: Mapping[str, str], argv: Sequence[str]) -> str:
    """The script an attempt writes beside the gate: its environment, then its program.

    Every value is single-quoted (``shlex.quote``): whatever a flag holds stays one
    word and is never interpreted. Names are ``[A-Z0-9_]`` (``command.env_name``).
    """
    lines = [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]
    lines.append("set -- " + " ".join(shlex.quote(arg) for arg in argv))
    return "\n".join(lines) + "\n" + _EXEC_BY_PATH


def prepare_gate(directory: Path) -> None:
    """The gate directory of one gated container: the FIFO its entrypoint waits on."""
    directory.mkdir()
    os.mkfifo(directory / "go")
    # The container's user (often nobody) opens the FIFO read-write and reads the
    # command; only this container's processes can reach either.
    (directory / "go").chmod(0o666)
    directory.chmod(0o755)


def open_gate(directory: Path, script: str, alive: Callable[[], bool]) -> None:
    """Write ``script`` and let the container waiting on ``directory``'s FIFO run it."""
    command = directory / "command"
    command.write_text(script, encoding="utf-8")
    command.chmod(0o644)
    _say(directory, b"go\n", alive)


def hold_gate(directory: Path, alive: Callable[[], bool]) -> None:
    """Tell a warm container it is claimed: it waits for its gate without a limit now."""
    _say(directory, b"claimed\n", alive)


def _say(directory: Path, word: bytes, alive: Callable[[], bool]) -> None:
    """Write ``word`` to the gate's FIFO once the container holds it open.

    Opened without blocking: no reader yet (a container just started) is waited
    for, briefly; a container that died meanwhile raises via ``alive`` instead of
    hanging the attempt.
    """
    deadline = time.monotonic() + GATE_WAIT
    next_check = time.monotonic() + 0.5
    while True:
        try:
            fd = os.open(directory / "go", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(
                    f"the container was not waiting at its gate after {GATE_WAIT:g} s"
                ) from exc
            if now > next_check:
                if not alive():
                    raise ProcessLookupError("the container exited before its gate opened") from exc
                next_check = now + 0.5
            time.sleep(0.002)
            continue
        try:
            os.write(fd, word)
        finally:
            os.close(fd)
        return


@dataclass(frozen=True)
class Shape:
    """What Docker fixes when it creates a container, and so what a spare must match."""

    image: str
    image_id: str
    tier: str
    user: str | None


@dataclass
class Spare:
    """A gated container: started, waiting at its gate, its directory on the host."""

    shape: Shape
    container: Any  # docker.models.containers.Container
    attempt_id: str
    directory: Path
    #: The task it was created for (labelled and named as its); None for a warm one.
    made_for: Any = None
    #: The image's Config (Entrypoint, Cmd), set by the attempt that claims it.
    config: dict[str, Any] = field(default_factory=dict)
    ready_at: float = field(default_factory=time.monotonic)


class WarmPool:
    """Spares per shape, made by one background thread and claimed by attempts.

    ``make`` creates and starts one spare (blocking, may raise); ``discard``
    removes one. Both are the executor's.
    """

    def __init__(
        self,
        make: Callable[[Shape], Spare],
        discard: Callable[[Spare], None],
        size: int,
        idle: float,
    ) -> None:
        self._make = make
        self._discard = discard
        self.size = size
        self.idle = idle
        self._ready: dict[Shape, deque[Spare]] = {}
        self._wanted: deque[Shape] = deque()
        self._making = 0
        self._last_claim = 0.0
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._replenish, name="pipewell-warm", daemon=True)
        self._thread.start()

    def claim(self, shape: Shape) -> Spare | None:
        """A ready spare of ``shape`` (now the caller's), or None; asks for replacements."""
        with self._changed:
            self._last_claim = time.monotonic()
            ready = self._ready.get(shape)
            spare = ready.popleft() if ready else None
            if ready is not None and not ready:
                del self._ready[shape]
            wanted = 0 if self._closed else 1 if spare is not None else 2
            room = self.size - self._count()
            self._wanted.extend([shape] * max(0, min(wanted, room)))
            self._changed.notify()
        return spare

    def counts(self) -> dict[str, int]:
        """Spares ready, asked for and being made now."""
        with self._changed:
            ready = sum(len(q) for q in self._ready.values())
            return {"ready": ready, "wanted": len(self._wanted), "making": self._making}

    def close(self) -> list[Spare]:
        """Stop making spares; the ready ones, for the caller to remove."""
        with self._changed:
            self._closed = True
            self._wanted.clear()
            spares = [s for q in self._ready.values() for s in q]
            self._ready.clear()
            self._changed.notify()
        return spares

    def drop_all(self) -> list[Spare]:
        """Forget every ready spare (their containers are gone or going); returns them."""
        with self._changed:
            spares = [s for q in self._ready.values() for s in q]
            self._ready.clear()
        return spares

    def _next_wanted(self) -> Shape | None:
        """The first shape asked for that has no spare ready, else (once quiet) the first."""
        quiet = time.monotonic() - self._last_claim >= QUIET
        for shape in self._wanted:
            if quiet or not self._ready.get(shape):
                self._wanted.remove(shape)
                return shape
        return None

    def _count(self) -> int:
        return sum(len(q) for q in self._ready.values()) + len(self._wanted) + self._making

    def _expired(self) -> list[Spare]:
        now = time.monotonic()
        gone: list[Spare] = []
        for shape in list(self._ready):
            kept = deque(s for s in self._ready[shape] if now - s.ready_at <= self.idle)
            gone += [s for s in self._ready[shape] if now - s.ready_at > self.idle]
            if kept:
                self._ready[shape] = kept
            else:
                del self._ready[shape]
        return gone

    def _replenish(self) -> None:
        while True:
            with self._changed:
                while not self._wanted and not self._closed:
                    expired = self._expired()
                    if expired:
                        break
                    self._changed.wait(timeout=min(self.idle, 5.0))
                else:
                    expired = []
                if self._closed:
                    return
                shape = self._next_wanted() if not expired else None
                if shape is None and not expired:
                    self._changed.wait(timeout=QUIET)
                    continue
                if shape is not None:
                    self._making += 1
            for spare in expired:
                self._discard(spare)
            if shape is None:
                continue
            try:
                spare = self._make(shape)
            except Exception as exc:  # the pool is an optimisation: attempts go cold
                log.warning("warm_container_failed", image=shape.image, error=str(exc)[:300])
                with self._changed:
                    self._making -= 1
                    # Asking again at once would fail the same way.
                    self._wanted = deque(s for s in self._wanted if s != shape)
                time.sleep(FAILURE_PAUSE)
                continue
            with self._changed:
                self._making -= 1
                closed = self._closed
                if not closed:
                    self._ready.setdefault(shape, deque()).append(spare)
            if closed:
                self._discard(spare)


__all__ = [
    "BUSYBOX",
    "GATE_DIR",
    "GATE_SCRIPT",
    "Shape",
    "Spare",
    "WarmPool",
    "gate_command",
    "hold_gate",
    "open_gate",
    "prepare_gate",
    "static_busybox",
]
