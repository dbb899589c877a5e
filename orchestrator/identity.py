"""The worker's identity: made once per data directory and kept in a file there.

Every container a worker creates is labelled with its identity, and a worker
only ever removes containers of its own identity. ``worker.name`` (the host
name by default) is a display name that several services on one host share;
the identity is not, so starting a second service cannot remove the first
one's containers, while a service restarted on the same data directory finds
its identity again and removes what it left behind.

The file stays locked while the worker runs: two services on one data
directory would share the identity (and the state), so the second is refused.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

from orchestrator.errors import ConfigError

IDENTITY_FILE = "worker-id"


class WorkerIdentity:
    """This process's claim on a data directory's worker identity; ``close`` gives it up."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / IDENTITY_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            raise ConfigError(
                f"another Pipewell service is running on the data directory {data_dir} "
                f"({self.path} is locked); give each service its own --data-dir"
            ) from exc
        with os.fdopen(os.dup(self._fd), "r+") as handle:
            self.id = handle.read().strip()
            if not self.id:
                self.id = uuid.uuid4().hex
                handle.write(self.id + "\n")

    def close(self) -> None:
        """Release the lock (the identity stays in the file for the next start)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


__all__ = ["IDENTITY_FILE", "WorkerIdentity"]
