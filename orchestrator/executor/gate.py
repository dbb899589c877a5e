"""The gate protocol: a container started before its attempt, held until the attempt opens it.

A gated container runs our static busybox as its entrypoint, blocked reading a FIFO
in a read-only directory bind-mounted from the host. The attempt that claims it
writes its inputs into the container's mounted input directory, then its command
(the node's environment and argv, quoted for sh) beside the FIFO, and opens the
gate: busybox reads the command and execs the node's program, which becomes PID 1
as it would have been. Starting a container ahead of its attempt is what lets
spares (orchestrator.executor.warm_pool) skip Docker's create and start, about
150 ms on a small machine: most of a short node's time.
"""

from __future__ import annotations

import errno
import os
import shlex
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

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

#: A batch's command, sourced by the gate in place of one attempt's (so a spare serves a
#: batch as it serves an attempt): each item runs as a child, never as PID 1, and the
#: container waits for the next. The host holds the write end of the FIFO ``next``
#: (the container's user can only read it) and says ``run <token>`` once the item's
#: files and its script (``item``) are in place, or anything else to end the batch.
#: Once the item's program has exited, whatever it left running is killed (PID 1 is
#: spared by ``kill -1``), then its exit status follows its token on both streams:
#: after it, nothing more of the item can come on either. The token is per item and
#: never in a file or the environment, so the item cannot say it for itself. It ends
#: the line it is on: one the program left unfinished is the program's, before it.
BATCH_LOOP = f"""\
exec 3< {GATE_DIR}/next || exit 125
while read -r word token <&3; do
  [ "$word" = run ] || exit 0
  ( exec 3<&-; . {GATE_DIR}/item )
  status=$?
  kill -9 -1 2>/dev/null
  printf '%s %s\\n' "$token" "$status"
  printf '%s %s\\n' "$token" "$status" >&2
done
exit 125
"""


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


class BatchGate:
    """The host's end of a batch's gate: the loop opened once, then one word per item.

    Made before the gate opens, so the loop finds its FIFO; the host's descriptor is
    opened read-write, which never blocks, and held until the batch ends (the loop's
    read-only open then never waits, and a worker that dies ends the loop with it).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        fifo = directory / "next"
        os.mkfifo(fifo)
        fifo.chmod(0o644)
        self._fd: int | None = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)

    def open(self, alive: Callable[[], bool]) -> None:
        """Let the container waiting at its gate run the batch's loop."""
        open_gate(self.directory, BATCH_LOOP, alive)

    def run(self, script: str, token: str) -> None:
        """Run the next item: ``script`` (:func:`gate_command`), ended by ``token``."""
        # Read by the loop only once told to run it, after the item before has ended.
        fd = os.open(self.directory / "item", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = script.encode()
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        self._say(f"run {token}\n".encode())

    def end(self) -> None:
        """The last word: the loop exits 0, and the container with it."""
        if self._fd is not None:
            try:
                self._say(b"end\n")
            except OSError:
                pass  # its reader is gone: the container ended already
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def _say(self, word: bytes) -> None:
        assert self._fd is not None, "the batch's gate is closed"
        os.write(self._fd, word)


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


__all__ = [
    "BATCH_LOOP",
    "BUSYBOX",
    "BatchGate",
    "GATE_DIR",
    "GATE_ROOT",
    "GATE_SCRIPT",
    "gate_command",
    "hold_gate",
    "open_gate",
    "prepare_gate",
    "static_busybox",
]
