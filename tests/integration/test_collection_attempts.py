"""Collections on the worker's side, on the real Docker engine: a gather's items in a
directory, a collection output sent as a tar, item attempts labelled and reported.

The executor runs each attempt for real (containers, their files, their uploads)
against a small store of its own over HTTP, so each test sees exactly what was
downloaded and what was PUT. The scheduler does not plan such tasks yet: they
are made here as a scheduler would send them.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.config import ExecutorSettings, WorkerSettings
from orchestrator.executor import DockerExecutor
from orchestrator.executor.spec import LABEL_ITEM
from orchestrator.messages import (
    AttemptCleanedUp,
    AttemptResult,
    ItemURL,
    OutputInfo,
    Task,
    TaskInput,
    TaskOutput,
)
from orchestrator.models import LogRecord
from orchestrator.worker import Worker
from tests.fakes import ObservedQueue
from tests.helpers import BUSYBOX, labelled_containers

pytestmark = pytest.mark.docker

#: Executor settings of each way an attempt's files reach its container.
MODES: dict[str, dict[str, Any]] = {
    "plain": {"launch": "plain", "transfer": "mount"},
    # Copied in and out through the Engine API (an engine on another machine).
    "plain-archive": {"launch": "plain", "transfer": "archive"},
    "gated": {"launch": "gated", "warm_containers": 0},
    # The attempt claims a spare started before it.
    "gated-spare": {"launch": "gated", "warm_containers": 2},
}
#: The modes whose containers are made for their attempt (a spare's labels are fixed
#: before any attempt claims it: its run label is empty too).
OWN_CONTAINER_MODES = ["plain", "plain-archive", "gated"]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@dataclass
class Put:
    body: bytes
    content_type: str | None


@dataclass
class Store:
    """Objects served over HTTP as a store's presigned URLs would serve them."""

    base: str
    objects: dict[str, bytes] = field(default_factory=dict)
    puts: dict[str, Put] = field(default_factory=dict)
    gets: list[str] = field(default_factory=list)

    def get_url(self, key: str) -> str:
        return f"{self.base}/{key}"

    def put_url(self, key: str) -> str:
        return f"{self.base}/{key}"


@pytest.fixture
def store() -> Iterator[Store]:
    held = Store("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            key = self.path.lstrip("/")
            held.gets.append(key)
            body = held.objects.get(key)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            held.puts[self.path.lstrip("/")] = Put(body, self.headers.get("Content-Type"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    held.base = f"http://127.0.0.1:{server.server_address[1]}"
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    yield held
    server.shutdown()
    server.server_close()


class Attempts:
    """A DockerExecutor of its own identity; every container it made is gone at the end."""

    def __init__(self, mode: str, work: Path, **settings: Any) -> None:
        self.mode = mode
        self.engine = docker.from_env()
        self.worker_id = uuid.uuid4().hex
        self.executor = DockerExecutor(
            self.engine,
            ExecutorSettings(**{**MODES[mode], **settings}),
            "test-collections",
            self.worker_id,
            work,
        )
        self.executor.open()

    def run(self, task: Task) -> tuple[AttemptResult, list[LogRecord], dict[str, str]]:
        """The attempt's result, its log lines and its container's labels (then removed)."""
        lines: list[LogRecord] = []
        result, cleanup = self.executor.run(task, lines.append)
        try:
            found = labelled_containers(task.run_id)
            labels = found[0].attrs["Labels"] if found else {}
        finally:
            cleanup()
        return result, lines, labels

    def run_batch(self, items: list[Task], batch: Batch | None = None) -> Batch:
        """A batch of ``items`` (one run's one node) through ``run_batch``: each item's
        result and lines, and how many containers it had (counted before clean-up)."""
        batch = batch or Batch()
        first = items[0].model_copy(update={"batch": items})

        def begin(item: Task):  # type: ignore[no-untyped-def]
            assert item.item is not None
            batch.order.append(item.item)
            lines = batch.lines.setdefault(item.item, [])
            for hook in batch.on_begin:
                hook(item)
            return lines.append

        def end(result: AttemptResult) -> None:
            assert result.item is not None and result.item == batch.order[-1]
            batch.results[result.item] = result

        cleanup = self.executor.run_batch(first, begin, end)
        try:
            batch.containers = len(labelled_containers(first.run_id))
        finally:
            cleanup()
        return batch

    def warm_up(self) -> None:
        """In gated-spare mode: a spare of the busybox shape is ready before the attempt."""
        if self.mode != "gated-spare":
            return
        result, _lines, _labels = self.run(task(argv=["true"]))
        assert result.ok, result.error
        for _ in range(200):
            if any(s.image == BUSYBOX and s.ready for s in self.executor.spares()):
                return
            threading.Event().wait(0.05)
        raise AssertionError("no spare was made")

    def close(self) -> None:
        try:
            self.executor.close()
            self.executor.remove_leftovers()
            left = self.engine.containers.list(
                all=True, filters={"label": f"pipewell.worker_id={self.worker_id}"}
            )
            assert left == [], [c.name for c in left]
        finally:
            self.engine.close()


@dataclass
class Batch:
    """What a batch reported: per item, its result and lines; in order, its items begun."""

    results: dict[str, AttemptResult] = field(default_factory=dict)
    lines: dict[str, list[LogRecord]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    containers: int = 0
    #: Called as each item begins (on the executor's thread).
    on_begin: list[Any] = field(default_factory=list)

    def said(self, item: str, stream: str = "stdout") -> list[str]:
        return [r.message for r in self.lines[item] if r.stream == stream]


@pytest.fixture(params=list(MODES))
def attempts(request, tmp_path: Path) -> Iterator[Attempts]:  # type: ignore[no-untyped-def]
    made = Attempts(request.param, tmp_path / "work")
    try:
        made.warm_up()
        yield made
    finally:
        made.close()


@pytest.fixture
def make_attempts(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Attempts of a given mode and settings (closed at the end)."""
    made: list[Attempts] = []

    def make(mode: str, **settings: Any) -> Attempts:
        made.append(Attempts(mode, tmp_path / f"work-{len(made)}", **settings))
        made[-1].warm_up()
        return made[-1]

    yield make
    for each in made:
        each.close()


def task(**fields: Any) -> Task:
    base: dict[str, Any] = {
        "run_id": uuid.uuid4().hex,
        "node_id": "n",
        "attempt": 1,
        "image": BUSYBOX,
        "tier": "c-nano",
        "timeout": 30,
    }
    return Task(**{**base, **fields})


def gather(store: Store, name: str, items: dict[str, bytes], types: list[str] | None = None):  # type: ignore[no-untyped-def]
    """A collection input of ``items``, each put in the store first."""
    for item, body in items.items():
        store.objects[f"in/{item}"] = body
    urls = [ItemURL(name=item, url=store.get_url(f"in/{item}")) for item in items]
    return TaskInput(name=name, types=types, items=urls)


def stored(store: Store, key: str, info: OutputInfo, content_type: str) -> bytes:
    """What was PUT under ``key``, checked against what the attempt reported of it."""
    put = store.puts[key]
    assert put.content_type == content_type
    assert info == OutputInfo(
        size=len(put.body),
        content_type=content_type,
        sha256=hashlib.sha256(put.body).hexdigest(),
    )
    return put.body


# ------------------------------------------------------------------ gather: a collection input

LIST_ITEMS = (
    'echo "$1|$INPUT_DOCS"; cd "$1" || exit 9; '
    'for f in $(find . -type f | sort); do echo "== $f"; cat "$f"; done > "$2"'
)


def test_a_gather_puts_every_item_in_the_inputs_directory(attempts: Attempts, store: Store):
    items = {
        "a.txt": b"first\n",
        "photos/b.txt": b"second\n",
        "photos/2024/c.txt": b"third\n",
    }
    sent = task(
        argv=["sh", "-c", LIST_ITEMS, "list", "${docs}", "${listing}"],
        inputs=[gather(store, "docs", items, types=["text/plain"])],
        outputs=[TaskOutput(name="listing", url=store.put_url("out/listing"), suffix=".txt")],
    )
    result, lines, _labels = attempts.run(sent)
    assert result.ok, result.error
    assert [r.message for r in lines if r.stream == "stdout"] == [
        "/pipewell/in/docs|/pipewell/in/docs"
    ]
    listing = stored(store, "out/listing", result.outputs["listing"], "text/plain")
    assert listing == (
        b"== ./a.txt\nfirst\n== ./photos/2024/c.txt\nthird\n== ./photos/b.txt\nsecond\n"
    )
    assert sorted(store.gets) == sorted(f"in/{item}" for item in items)


def test_an_empty_gather_is_an_empty_directory(attempts: Attempts, store: Store):
    sent = task(
        argv=["sh", "-c", 'test -d "$1" && ls -A "$1" | wc -l > "$2"', "count", "${docs}", "${n}"],
        inputs=[gather(store, "docs", {})],
        outputs=[TaskOutput(name="n", url=store.put_url("out/n"))],
    )
    result, _lines, _labels = attempts.run(sent)
    assert result.ok, result.error
    assert stored(store, "out/n", result.outputs["n"], "text/plain").strip() == b"0"


def test_an_item_of_the_wrong_type_fails_the_attempt_naming_it(attempts: Attempts, store: Store):
    items = {"a.png": PNG, "photos/b.txt": b"not an image\n", "z.png": PNG}
    sent = task(
        argv=["sh", "-c", "echo ran"],
        inputs=[gather(store, "pics", items, types=["image/png"])],
    )
    result, lines, _labels = attempts.run(sent)
    assert (result.ok, result.retryable) == (False, False)
    assert result.error == (
        "input 'pics' item 'photos/b.txt' is text/plain, but this node accepts image/png"
    )
    assert "ran" not in [r.message for r in lines]
    assert "in/z.png" not in store.gets  # nothing past the refused item


@pytest.mark.parametrize(
    ("names", "refused"),
    [
        (["../escape"], "'../escape' is not valid"),
        (["/etc/passwd"], "'/etc/passwd' is not valid"),
        (["a//b"], "'a//b' is not valid"),
        (["a/./b"], "'a/./b' is not valid"),
        (["a/../../b"], "'a/../../b' is not valid"),
        (["dir/"], "'dir/' is not valid"),
        ([""], "'' is not valid"),
        (["a b"], "'a b' is not valid"),
        (["a\\b"], "'a\\\\b' is not valid"),
        (["ok.txt", "x" * 256], "is not valid"),
        (["a", "a"], "'a' is listed twice"),
        (["a", "a/b"], "'a' is a file, and other items are in a directory of that name"),
    ],
)
def test_a_bad_item_name_is_refused_before_any_download(
    make_attempts, store: Store, names, refused
):
    attempts = make_attempts("plain")
    items = [ItemURL(name=name, url=store.get_url("in/anything")) for name in names]
    store.objects["in/anything"] = b"x"
    sent = task(argv=["true"], inputs=[TaskInput(name="docs", items=items)])
    result, _lines, labels = attempts.run(sent)
    assert (result.ok, result.retryable) == (False, False)
    assert result.error.startswith("input 'docs': item ") and refused in result.error
    assert store.gets == []
    assert labels == {}  # refused before any container was made


# ------------------------------------------------------------------ a collection output

WRITE_FRAMES = """
cd "$1" || exit 9
[ "$1" = "$OUTPUT_FRAMES" ] || exit 8
[ -z "$(ls -A)" ] || exit 7
mkdir -p sub/deeper empty
printf one > a.txt
printf 'two\\n' > sub/b.bin
yes x | head -c 3000 > sub/deeper/big.txt
printf hidden > .hidden
ln a.txt hard.txt
ln -s /etc/passwd link
ln -s sub dirlink
ln -s /pipewell/out/frames loop
mkfifo fifo
"""


def test_a_collection_output_is_a_tar_of_its_regular_files(attempts: Attempts, store: Store):
    sent = task(
        argv=["sh", "-c", WRITE_FRAMES, "frames", "${frames}"],
        outputs=[TaskOutput(name="frames", url=store.put_url("out/frames"), collection=True)],
    )
    result, _lines, _labels = attempts.run(sent)
    assert result.ok, result.error
    body = stored(store, "out/frames", result.outputs["frames"], "application/x-tar")
    # POSIX: the ustar magic and version of pax, not GNU's.
    assert body[257:265] == b"ustar\x0000"
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as archive:
        members = archive.getmembers()
        assert all(m.isreg() for m in members), [(m.name, m.type) for m in members]
        files = {m.name: archive.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    # Symbolic links (to a file, a directory, the directory itself), the FIFO and the
    # empty directory are not items; the hard link is a file of its own.
    assert files == {
        ".hidden": b"hidden",
        "a.txt": b"one",
        "hard.txt": b"one",
        "sub/b.bin": b"two\n",
        "sub/deeper/big.txt": b"x\n" * 1500,
    }


def test_an_empty_collection_output_is_an_empty_tar(attempts: Attempts, store: Store):
    sent = task(
        argv=["true"],
        outputs=[TaskOutput(name="frames", url=store.put_url("out/frames"), collection=True)],
    )
    result, _lines, _labels = attempts.run(sent)
    assert result.ok, result.error
    body = stored(store, "out/frames", result.outputs["frames"], "application/x-tar")
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as archive:
        assert archive.getmembers() == []


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('rmdir "$1"', "output 'frames' missing: the command exited 0 but did not write "),
        ('rmdir "$1" && ln -s /etc "$1"', "output 'frames': "),
        ('rmdir "$1" && echo file > "$1"', "output 'frames': "),
    ],
    ids=["removed", "a-link-in-its-place", "a-file-in-its-place"],
)
def test_a_collection_output_that_is_no_directory_fails_the_attempt(
    make_attempts, store: Store, script: str, error: str
):
    for mode in ("plain", "plain-archive"):
        attempts = make_attempts(mode)
        sent = task(
            argv=["sh", "-c", script, "frames", "${frames}"],
            outputs=[TaskOutput(name="frames", url=store.put_url("out/frames"), collection=True)],
        )
        result, _lines, _labels = attempts.run(sent)
        assert not result.ok
        assert result.error.startswith(error), (mode, result.error)
        if "missing" not in error:
            assert result.error.endswith("/pipewell/out/frames is not a directory"), result.error
        assert store.puts == {}


def test_a_collection_output_over_the_limit_is_not_stored(make_attempts, store: Store):
    for mode in ("plain", "plain-archive"):
        attempts = make_attempts(mode)
        sent = task(
            argv=["sh", "-c", 'yes x | head -c 9000 > "$1/big.txt"', "frames", "${frames}"],
            outputs=[TaskOutput(name="frames", url=store.put_url("out/frames"), collection=True)],
            max_output_bytes=8192,
        )
        result, _lines, _labels = attempts.run(sent)
        assert (result.ok, result.retryable) == (False, False), mode
        assert "over this node's limit of 8.0 KiB" in result.error
        assert store.puts == {}


def test_every_output_reports_the_sha256_of_the_bytes_it_put(attempts: Attempts, store: Store):
    sent = task(
        argv=["sh", "-c", 'printf "%s" "$1" > "$2"; printf x > "$3/one"', "w", "é" * 5000,
              "${text}", "${frames}"],
        outputs=[
            TaskOutput(name="text", url=store.put_url("out/text")),
            TaskOutput(name="frames", url=store.put_url("out/frames"), collection=True),
        ],
    )  # fmt: skip
    result, _lines, _labels = attempts.run(sent)
    assert result.ok, result.error
    text = stored(store, "out/text", result.outputs["text"], "text/plain")
    assert text == ("é" * 5000).encode()
    assert result.outputs["text"].sha256 == hashlib.sha256(text).hexdigest()
    tar = stored(store, "out/frames", result.outputs["frames"], "application/x-tar")
    assert result.outputs["frames"].sha256 == hashlib.sha256(tar).hexdigest()


# ------------------------------------------------------------------ item attempts


@pytest.mark.parametrize("mode", OWN_CONTAINER_MODES)
def test_an_item_attempts_container_is_labelled_with_its_item(make_attempts, store, mode):
    attempts = make_attempts(mode)
    store.objects["in/a.jpg"] = b"x"
    sent = task(
        argv=["true"],
        item="photos/a.jpg",
        inputs=[TaskInput(name="in", url=store.get_url("in/a.jpg"))],
    )
    result, _lines, labels = attempts.run(sent)
    assert result.ok, result.error
    assert result.item == "photos/a.jpg"
    assert labels[LABEL_ITEM] == "photos/a.jpg"
    assert labels["pipewell.run_id"] == sent.run_id
    # A node's own attempt has no item, and no item label.
    result, _lines, labels = attempts.run(task(argv=["true"]))
    assert (result.ok, result.item) == (True, None)
    assert LABEL_ITEM not in labels and labels["pipewell.node_id"] == "n"


@pytest.mark.parametrize("outcome", ["ok", "failed"])
async def test_every_message_of_an_item_attempt_carries_its_item(attempts, outcome):
    """The real worker on the real engine: started, its lines, its result, its removal."""
    queue = ObservedQueue()
    worker = Worker(
        WorkerSettings(name="test-items", tiers=["c-nano"], memory="2g"), queue, attempts.executor
    )
    await worker.start()
    try:
        exit_code = 0 if outcome == "ok" else 3
        sent = task(
            item="frames/0001.png", argv=["sh", "-c", f"echo one; echo two; exit {exit_code}"]
        )
        await queue.put_task(sent)
        messages = await queue.read(
            lambda taken: any(isinstance(m, AttemptCleanedUp) for m in taken), seconds=30
        )
    finally:
        await worker.close()
    assert [m.kind for m in messages] == ["started", "log", "log", "result", "cleaned"]
    assert all(m.item == "frames/0001.png" for m in messages), messages
    assert [m.record.message for m in messages if m.kind == "log"] == ["one", "two"]  # type: ignore[union-attr]
    result = messages[3]
    assert isinstance(result, AttemptResult) and result.ok is (outcome == "ok")
    assert queue.done == [f"{sent.run_id}/n[frames/0001.png]/1"]


# ------------------------------------------------------------------ batches of items

#: An item's program (its name in $ITEM, from its flag): says who it is and where it
#: runs, lists the files it can see (its input directory, its output directory) into its
#: output after its input's bytes, leaves a stray file in the output directory and a
#: process running, and ends its last line without a newline.
ITEM_SCRIPT = """
ITEM=$FLAG_ITEM
echo "item $ITEM"
echo "host $(hostname)"
echo "err $ITEM" >&2
{ cat "$1"; echo "in: $(ls -A /pipewell/in)"; echo "out: $(ls -A /pipewell/out)"; } > "$2"
touch /pipewell/out/stray-$ITEM
sleep 60 &
case $ITEM in
  fails) echo "$ITEM broke" >&2; exit 1 ;;
  slow) sleep 60 ;;
  hog) x=a; while :; do x="$x$x"; done ;;
esac
printf "last %s" "$ITEM"
"""


def batch_items(store: Store, names: list[str], **fields: Any) -> list[Task]:
    """One task per item of one run's one node, each its own input and output."""
    run_id = uuid.uuid4().hex
    items = []
    for name in names:
        store.objects[f"in/{name}"] = f"body of {name}\n".encode()
        items.append(
            task(
                run_id=run_id,
                item=name,
                argv=["sh", "-c", ITEM_SCRIPT, "item", "${in}", "${out}"],
                flags={"item": name},  # FLAG_ITEM, and so $ITEM, is the item's own
                inputs=[TaskInput(name="in", url=store.get_url(f"in/{name}"))],
                outputs=[TaskOutput(name="out", url=store.put_url(f"out/{name}"), suffix=".txt")],
                **fields,
            )
        )
    return items


def hosts(batch: Batch) -> dict[str, str]:
    return {
        item: next(m[5:] for m in batch.said(item) if m.startswith("host ")) for item in batch.order
    }


def own_output(store: Store, batch: Batch, name: str) -> None:
    """The item's output is its own: its input's bytes, and only its files in sight."""
    assert batch.results[name].ok, batch.results[name].error
    assert stored(store, f"out/{name}", batch.results[name].outputs["out"], "text/plain") == (
        f"body of {name}\nin: in.txt\nout: out.txt\n".encode()
    )


@pytest.mark.parametrize("mode", ["gated", "gated-spare"])
def test_a_batch_runs_its_items_one_after_another_in_one_container(make_attempts, store, mode):
    attempts = make_attempts(mode)
    names = ["a", "b", "c", "d"]
    batch = attempts.run_batch(batch_items(store, names))
    assert batch.order == names
    for name in names:
        own_output(store, batch, name)
        # Its own lines, all of them, the last one unfinished; nothing of another item.
        host = hosts(batch)[name]
        assert batch.said(name) == [f"item {name}", f"host {host}", f"last {name}"]
        assert batch.said(name, "stderr") == [f"err {name}"]
    assert batch.containers == 1
    assert len(set(hosts(batch).values())) == 1  # one container ran the four
    assert sorted(store.gets) == [f"in/{name}" for name in names]
    timings = [batch.results[name].timings for name in names]
    # The container's create and start are the first item's; each item ran on its own.
    assert "start" in timings[0] and all("start" not in t for t in timings[1:])
    assert all(t["run"] < 5 for t in timings)


def test_in_a_batch_an_item_that_fails_or_times_out_leaves_the_others_theirs(make_attempts, store):
    attempts = make_attempts("gated")
    names = ["a", "fails", "slow", "d"]
    items = batch_items(store, names)
    items[2] = items[2].model_copy(update={"timeout": 1.5})
    batch = attempts.run_batch(items)
    assert batch.order == names
    own_output(store, batch, "a")
    own_output(store, batch, "d")
    failed = batch.results["fails"]
    assert (failed.ok, failed.error) == (False, "command exited with code 1: fails broke")
    slow = batch.results["slow"]
    assert (slow.ok, slow.retryable) == (False, True)
    assert slow.error == "timed out after 1.5 s (the NodeDef's Timeout); container killed"
    # The item that timed out took its container with it: the next had a fresh one.
    seen = hosts(batch)
    assert seen["a"] == seen["fails"] == seen["slow"] != seen["d"]
    assert batch.containers == 2
    assert batch.said("slow") == ["item slow", f"host {seen['slow']}"]
    assert batch.said("fails", "stderr") == ["err fails", "fails broke"]
    assert set(store.puts) == {"out/a", "out/d"}  # failed items put nothing


def test_an_item_out_of_memory_in_a_batch_says_so_and_the_next_runs(make_attempts, store):
    attempts = make_attempts("gated")
    batch = attempts.run_batch(batch_items(store, ["a", "hog", "c"]))
    hog = batch.results["hog"]
    assert hog.ok is False
    assert hog.error == "out of memory (limit 512 MiB, tier c-nano); exit code 137"
    own_output(store, batch, "a")
    own_output(store, batch, "c")
    seen = hosts(batch)
    assert seen["a"] == seen["hog"] != seen["c"]


@pytest.mark.parametrize("mode", ["gated", "plain"])
def test_a_batch_whose_run_is_cancelled_midway_runs_none_of_the_rest(make_attempts, store, mode):
    attempts = make_attempts(mode)
    names = ["a", "slow", "c", "d"]
    items = batch_items(store, names)
    run_id = items[0].run_id

    def cancel_once_slow_runs(item: Task) -> None:
        if item.item == "slow":
            threading.Timer(1.0, attempts.executor.kill_run, [run_id]).start()

    batch = Batch()
    batch.on_begin.append(cancel_once_slow_runs)
    found = attempts.run_batch(items, batch)
    own_output(store, found, "a")
    killed = found.results["slow"]
    assert killed.ok is False
    # As a lone attempt killed by its run's end reads (with its last line of stderr).
    assert killed.error == "command exited with code 137 (killed by SIGKILL): err slow"
    for name in ("c", "d"):
        refused = found.results[name]
        assert (refused.ok, refused.retryable) == (False, False)
        assert refused.error == "cancelled: the run ended before this node started"
    assert found.order == names  # each reported, as a refused lone attempt is
    assert "in/c" not in store.gets and "in/d" not in store.gets  # nothing of them ran
    assert labelled_containers(run_id) == []


@pytest.mark.parametrize("mode", ["plain", "plain-archive"])
def test_a_plain_batch_runs_each_item_in_a_container_of_its_own(make_attempts, store, mode):
    attempts = make_attempts(mode)
    names = ["a", "fails", "c"]
    batch = attempts.run_batch(batch_items(store, names))
    assert batch.order == names
    own_output(store, batch, "a")
    own_output(store, batch, "c")
    assert batch.results["fails"].error == "command exited with code 1: fails broke"
    assert batch.containers == 3
    assert len(set(hosts(batch).values())) == 3
    for name in names:
        assert batch.said(name)[0] == f"item {name}"


async def test_every_message_of_a_batchs_items_carries_its_item_and_the_batch_is_done_once(
    make_attempts, store
):
    """The real worker on the real engine: one slot, each item's messages as a lone one's."""
    attempts = make_attempts("gated")
    queue = ObservedQueue()
    worker = Worker(
        WorkerSettings(name="test-batches", tiers=["c-nano"], memory="2g"),
        queue,
        attempts.executor,
    )
    await worker.start()
    names = ["a", "fails", "c"]
    items = batch_items(store, names)
    sent = items[0].model_copy(update={"batch": items})
    try:
        await queue.put_task(sent)
        messages = await queue.read(
            lambda taken: sum(isinstance(m, AttemptCleanedUp) for m in taken) == 3, seconds=60
        )
    finally:
        await worker.close()
    for name in names:
        kinds = [m.kind for m in messages if m.item == name]
        assert kinds[0] == "started" and kinds[-2:] == ["result", "cleaned"], kinds
        assert set(kinds[1:-2]) == {"log"}
    results = {m.item: m for m in messages if isinstance(m, AttemptResult)}
    assert [results[n].ok for n in names] == [True, False, True]
    # Each item's result before the next item starts; the batch done once, after them.
    kinds = [(m.kind, m.item) for m in messages if m.kind in ("started", "result")]
    assert kinds == [(k, n) for n in names for k in ("started", "result")]
    assert queue.done == [sent.key]
    assert queue.history.index(f"done {sent.key}") > queue.history.index(f"result {items[-1].key}")
