"""The data directory's SQLite database: how every connection opens it, what a failed write means.

Run state, the URL-signing secret, API keys and saved flows share one file.
The service holds one connection to it (``Database``), used from one thread;
``pipewell keys`` opens its own from another process. Both open it through
``connect``:

- A rollback journal (``journal_mode=TRUNCATE``), not WAL. WAL keeps its index
  in a ``-shm`` file that every connection mmaps and stores into, reads
  included; once that file cannot take a write (``chattr +i`` on ext4) the next
  store is a SIGBUS that kills the process with nothing logged. A rollback
  journal writes with write(2), so the same faults come back as errors that are
  logged, answered and retried. ``locking_mode=EXCLUSIVE`` would also keep the
  WAL index in memory, but would lock out every other connection. The cost, a
  few more fsyncs per transaction, is small: run state is written in batches.
- TRUNCATE rather than DELETE: the journal file stays, so a write needs no new
  entry in the directory.
- ``synchronous=FULL``: what a rollback journal needs to survive a power cut.
- ``mmap_size=0``: the database file is not mapped either, whatever the build.
- ``auto_vacuum=INCREMENTAL``: what retention deletes is given back to the
  filesystem a bounded number of pages at a time, not only reused.
- Owner-only, as it holds the signing secret and the key hashes: the directory
  0700, the file 0600; SQLite gives its journal the database file's mode.
- One schema for the whole file, brought up to date by ``connect`` through
  numbered steps (``MIGRATIONS``): ``PRAGMA user_version`` says how many a
  database has had, each step runs once, in one transaction with its number,
  whoever opens the file first (the service, or ``pipewell keys``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from orchestrator.errors import ConfigError, DataDirError, DataDirFull, DataDirUnwritable

P = ParamSpec("P")
T = TypeVar("T")


def _add_admin_column(conn: sqlite3.Connection) -> None:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
    if "admin" not in columns:  # keys made before admin keys
        conn.execute("ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0")


#: The schema, step by step. A step is SQL statements, or a function for what SQL
#: cannot say conditionally. Never edit a step that shipped: add one.
MIGRATIONS: tuple[tuple[str, ...] | Callable[[sqlite3.Connection], None], ...] = (
    # 1: runs and secrets (state), saved flows, config profiles, Scade tasks (registry),
    # API keys (api_key_store). IF NOT EXISTS: databases from before the numbering
    # have some of these already.
    (
        """CREATE TABLE IF NOT EXISTS runs (
            id          TEXT PRIMARY KEY,
            status      TEXT NOT NULL,
            finished    INTEGER NOT NULL,
            snapshot    TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )""",
        "CREATE INDEX IF NOT EXISTS runs_unfinished ON runs (finished) WHERE finished = 0",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
        """CREATE TABLE IF NOT EXISTS flows (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,
            graph_id    TEXT NOT NULL UNIQUE,
            tenant      TEXT NOT NULL,
            name        TEXT NOT NULL,
            version     INTEGER NOT NULL,
            digest      TEXT NOT NULL,
            submission  TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            deleted_at  TEXT,
            UNIQUE (tenant, name, version)
        )""",
        """CREATE TABLE IF NOT EXISTS flow_configs (
            graph_id    TEXT NOT NULL,
            config_id   TEXT NOT NULL,
            flags       TEXT NOT NULL,
            updated_at  TEXT NOT NULL,
            PRIMARY KEY (graph_id, config_id)
        )""",
        """CREATE TABLE IF NOT EXISTS tasks (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant        TEXT NOT NULL,
            execution_id  TEXT NOT NULL UNIQUE,
            flow_seq      INTEGER NOT NULL,
            request       TEXT NOT NULL,
            created_at    TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS api_keys (
            name        TEXT PRIMARY KEY,
            tenant      TEXT NOT NULL,
            sha256      TEXT NOT NULL UNIQUE,
            masked      TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            last_used   TEXT,
            revoked_at  TEXT
        )""",
    ),
    # 2: admin keys.
    _add_admin_column,
    # 3: a run's tenant, flow name and times as columns, for listing recent runs
    # (GET /api/v1/flow/runs) without reading every snapshot; filled from them.
    (
        "ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'",
        "ALTER TABLE runs ADD COLUMN flow TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN started_at TEXT",
        "ALTER TABLE runs ADD COLUMN finished_at TEXT",
        """UPDATE runs SET
            tenant = coalesce(json_extract(snapshot, '$.plan.tenant'), 'default'),
            flow = coalesce(json_extract(snapshot, '$.plan.submission.Flow.Name'), ''),
            started_at = json_extract(snapshot, '$.run.StartedAt'),
            finished_at = json_extract(snapshot, '$.run.FinishedAt')""",
        "CREATE INDEX runs_by_tenant ON runs (tenant, created_at)",
    ),
    # 4: a run written by what changed. ``runs.plan`` is written once; ``snapshot`` then
    # holds the FlowRun without its nodes and artifacts, which have rows of their own,
    # written when they change. Runs written before keep all of it in ``snapshot``.
    (
        "ALTER TABLE runs ADD COLUMN plan TEXT",
        """CREATE TABLE run_nodes (
            run_id   TEXT NOT NULL,
            node_id  TEXT NOT NULL,
            state    TEXT NOT NULL,
            PRIMARY KEY (run_id, node_id)
        ) WITHOUT ROWID""",
        # A rowid table: rowid keeps the order artifacts arrived in.
        """CREATE TABLE run_artifacts (
            run_id    TEXT NOT NULL,
            edge      TEXT NOT NULL,
            artifact  TEXT NOT NULL,
            UNIQUE (run_id, edge)
        )""",
    ),
    # 5: collections. A collection's items (one object each) and a mapped node's items
    # (one state each), rows of their own written when they change; rowid keeps the
    # order they came in, the order items are paged in.
    (
        """CREATE TABLE run_members (
            run_id  TEXT NOT NULL,
            edge    TEXT NOT NULL,
            item    TEXT NOT NULL,
            info    TEXT NOT NULL,
            UNIQUE (run_id, edge, item)
        )""",
        """CREATE TABLE run_items (
            run_id   TEXT NOT NULL,
            node_id  TEXT NOT NULL,
            item     TEXT NOT NULL,
            state    TEXT NOT NULL,
            UNIQUE (run_id, node_id, item)
        )""",
    ),
    # 6: the result cache (orchestrator.cache): a node's outputs by the key of the work
    # that made them and the image that ran it, per tenant, until expires_at (epoch s).
    (
        """CREATE TABLE cache_entries (
            tenant      TEXT NOT NULL,
            key         TEXT NOT NULL,
            image_id    TEXT NOT NULL,
            run_id      TEXT NOT NULL,
            node_id     TEXT NOT NULL,
            outputs     TEXT NOT NULL,
            created_at  REAL NOT NULL,
            expires_at  REAL NOT NULL,
            PRIMARY KEY (tenant, key, image_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX cache_entries_expiry ON cache_entries (expires_at)",
    ),
    # 7: retention (service.retention). ``runs.expires_at`` (epoch s): when something of
    # an ended run is next due for deletion; unset for runs that ended before, until the
    # sweeper sets it from their tenant's lifetime. ``kept_objects``: objects kept on
    # their own, beyond their run (an edge with a longer Lifetime) or without one (a
    # Langflow upload); ``prefix`` for a collection (everything under ``key``/),
    # ``digest`` for a key later runs may write too (deleted only while it is the same).
    (
        "ALTER TABLE runs ADD COLUMN expires_at REAL",
        "CREATE INDEX runs_expiry ON runs (expires_at) WHERE expires_at IS NOT NULL",
        "CREATE INDEX runs_expiry_unset ON runs (id) WHERE finished = 1 AND expires_at IS NULL",
        "CREATE INDEX cache_entries_by_run ON cache_entries (run_id)",
        """CREATE TABLE kept_objects (
            store       TEXT NOT NULL,
            key         TEXT NOT NULL,
            tenant      TEXT NOT NULL,
            prefix      INTEGER NOT NULL DEFAULT 0,
            digest      TEXT,
            expires_at  REAL NOT NULL,
            PRIMARY KEY (store, key)
        ) WITHOUT ROWID""",
        "CREATE INDEX kept_objects_expiry ON kept_objects (expires_at)",
    ),
)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version it had. Raises ConfigError for a
    database of a newer Pipewell than this one."""
    conn.execute("BEGIN IMMEDIATE")  # one opener at a time runs the steps
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > len(MIGRATIONS):
            raise ConfigError(
                f"the data directory's database has schema version {found}, made by a newer "
                f"Pipewell (this one knows up to {len(MIGRATIONS)}): run that version, or "
                "start this one on another --data-dir"
            )
        for number in range(found + 1, len(MIGRATIONS) + 1):
            step = MIGRATIONS[number - 1]
            if callable(step):
                step(conn)
            else:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


#: The service's database under the data directory: runs, secrets, API keys, saved flows.
STATE_DB = "pipewell.sqlite3"
DIR_MODE = 0o700
FILE_MODE = 0o600
#: PRAGMA auto_vacuum's value for incremental.
INCREMENTAL = 2
#: How long a connection waits for another one's lock before its statement fails.
BUSY_TIMEOUT = 10.0


def connect(database: Path) -> sqlite3.Connection:
    """A connection to ``database``; the file and its directory are made owner-only if new.

    Raises DataDirError when the database cannot be opened for writing.
    """
    with writing(database):
        database.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        conn = sqlite3.connect(
            database, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT
        )
        try:
            # Leaving WAL (a database made by an earlier version) is a write.
            conn.execute("PRAGMA journal_mode=TRUNCATE")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA mmap_size=0")
            # Pages retention frees go back to the filesystem (PRAGMA incremental_vacuum
            # after a sweep). Set before the first table; an older file needs one VACUUM.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            migrate(conn)
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
                with contextlib.suppress(sqlite3.OperationalError):  # no room: next time
                    conn.execute("VACUUM")
        except BaseException:
            conn.close()
            raise
    return conn


def write_failure(exc: sqlite3.OperationalError, database: Path) -> DataDirError:
    """What a failed write means for the operator: a full disk, or one that refuses writes."""
    if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL:
        return DataDirFull(database)
    return DataDirUnwritable(database, str(exc))


@contextlib.contextmanager
def writing(database: Path) -> Iterator[None]:
    """Translate SQLite's operational errors (full, I/O, read-only, locked) into ours."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise write_failure(exc, database) from exc
    except OSError as exc:  # making the directory or the file
        if exc.errno == errno.ENOSPC:
            raise DataDirFull(database) from exc
        raise DataDirUnwritable(database, f"{exc.strerror}: {exc.filename}") from exc


def tighten(database: Path) -> list[str]:
    """Take group and other access off the data directory and the database's files.

    For a data directory made by an earlier version, or by hand. Returns what
    was changed, or could not be, to be logged.
    """
    changes = []
    paths = [(database.parent, DIR_MODE)]
    paths += [(path, FILE_MODE) for path in sorted(database.parent.glob(database.name + "*"))]
    for path, wanted in paths:
        with contextlib.suppress(FileNotFoundError):  # a journal can come and go
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & ~wanted == 0:
                continue
            try:
                os.chmod(path, mode & wanted)
            except OSError as exc:
                changes.append(f"{path} is {mode:o} and cannot be changed: {exc.strerror}")
            else:
                changes.append(f"{path}: {mode:o} → {mode & wanted:o}")
    return changes


class Database:
    """The service's one connection to the database, and the one thread that uses it.

    Run state, saved flows and API keys all go through ``run``: sqlite3 blocks, so
    never on the event loop; one connection, so no owner waits on another's lock
    and one owner's transaction is never split by another's statements.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="pipewell-sqlite")
        self._conn: sqlite3.Connection | None = None

    @property
    def connection(self) -> sqlite3.Connection:
        """For the functions given to ``run`` alone (they run on the database's thread)."""
        if self._conn is None:
            raise RuntimeError("the database is not open")
        return self._conn

    async def open(self) -> list[str]:
        """Connect (the schema brought up to date) and make the files owner-only.

        Returns what had to be tightened (see ``tighten``), to be logged.
        Raises DataDirError or ConfigError, as ``connect`` does.
        """

        def open_and_tighten() -> list[str]:
            self._conn = connect(self.path)
            return tighten(self.path)

        return await self.run(open_and_tighten)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the database's thread, after what was asked before it."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def close(self) -> None:
        if self._conn is not None:
            await self.run(self._conn.close)
            self._conn = None
        self._thread.shutdown(wait=True)


__all__ = [
    "STATE_DB",
    "BUSY_TIMEOUT",
    "Database",
    "DIR_MODE",
    "FILE_MODE",
    "MIGRATIONS",
    "connect",
    "migrate",
    "tighten",
    "write_failure",
    "writing",
]
