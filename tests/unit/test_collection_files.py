"""Collections in the executor without Docker: which item names a gather takes, the
tar a collection output's directory becomes, and the hash of what an upload sends.

The same paths run on real containers in tests/integration/test_collection_attempts.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from orchestrator.executor import AttemptFailed
from orchestrator.executor.spec import LABEL_ITEM, check_item_names, check_names, labels
from orchestrator.executor.tars import (
    MAX_DEPTH,
    directory_members,
    directory_tar,
    open_directory,
    tar_size,
)
from orchestrator.executor.transfers import HashedBody
from orchestrator.messages import ItemURL, Task, TaskInput


def task(**fields: object) -> Task:
    base: dict[str, object] = {
        "run_id": "r1",
        "node_id": "n",
        "attempt": 2,
        "image": "i",
        "tier": "c-nano",
        "timeout": 10,
    }
    return Task.model_validate({**base, **fields})


# ------------------------------------------------------------------ item names


@pytest.mark.parametrize(
    "names",
    [
        [],
        ["a.jpg"],
        ["photos/a.jpg", "photos/2024/b.jpg", "c"],
        [".hidden", "x/...", "A-b_c.d/e"],
        ["x" * 255],
    ],
)
def test_relative_paths_of_plain_parts_are_item_names(names):
    check_item_names("in", names)


@pytest.mark.parametrize(
    "name",
    ["", "/abs", "a//b", "a/", "./a", "a/.", "..", "a/../b", "a b", "a\\b", "é", "a\0b", "x" * 256],
)
def test_anything_else_is_refused_for_good(name):
    with pytest.raises(AttemptFailed) as refused:
        check_names(task(inputs=[TaskInput(name="in", items=[ItemURL(name=name, url="")])]))
    assert refused.value.retryable is False
    assert refused.value.message.startswith("input 'in': item name ")


@pytest.mark.parametrize(
    ("names", "says"),
    [
        (["a", "b", "a"], "item 'a' is listed twice"),
        (["x/y/z", "x/y"], "item 'x/y' is a file, and other items are in a directory"),
    ],
)
def test_items_that_want_one_place_are_refused(names, says):
    with pytest.raises(AttemptFailed) as refused:
        check_item_names("in", names)
    assert says in refused.value.message and refused.value.retryable is False


def test_an_item_attempts_container_is_labelled_with_its_item():
    found = labels("w", "0" * 32, "a" * 32, task(item="photos/a.jpg"))
    assert found[LABEL_ITEM] == "photos/a.jpg"
    assert (found["pipewell.run_id"], found["pipewell.attempt"]) == ("r1", "2")
    assert LABEL_ITEM not in labels("w", "0" * 32, "a" * 32, task())
    assert LABEL_ITEM not in labels("w", "0" * 32, "a" * 32, None)  # a spare


# ------------------------------------------------------------------ a directory as a tar


def tar_of(directory: Path) -> tuple[bytes, int]:
    """The tar the upload would send, and the size announced before it."""
    fd = open_directory(directory, "frames", "/pipewell/out/frames")
    try:
        members = list(directory_members(fd, "frames"))
        body = b"".join(directory_tar(fd, "frames", members))
    finally:
        os.close(fd)
    return body, tar_size(members)


def test_a_directory_is_a_tar_of_its_regular_files_and_nothing_is_followed(tmp_path: Path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"the host's own file")
    frames = tmp_path / "frames"
    (frames / "sub" / "deeper").mkdir(parents=True)
    (frames / "empty").mkdir()
    (frames / "a.txt").write_bytes(b"one")
    (frames / "sub" / "b.bin").write_bytes(bytes(range(256)) * 9)
    long_name = "n" * 120 + ".txt"  # over ustar's 100 characters: a pax header says it
    (frames / "sub" / "deeper" / long_name).write_bytes(b"")
    (frames / "link").symlink_to(outside)
    (frames / "dirlink").symlink_to(tmp_path)
    (frames / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(frames / "fifo")

    body, announced = tar_of(frames)
    assert len(body) == announced
    assert body[257:265] == b"ustar\x0000"
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as archive:
        members = archive.getmembers()
        files = {m.name: archive.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    assert all(m.isreg() and m.mode == 0o644 for m in members)
    assert [m.name for m in members] == ["a.txt", "sub/b.bin", f"sub/deeper/{long_name}"]
    assert files["sub/b.bin"] == bytes(range(256)) * 9
    assert b"the host's own file" not in body


def test_an_empty_directory_is_an_empty_tar(tmp_path: Path):
    (tmp_path / "frames").mkdir()
    body, announced = tar_of(tmp_path / "frames")
    assert body == bytes(1024) and announced == 1024


@pytest.mark.parametrize("kind", ["missing", "link", "file"])
def test_no_directory_in_its_place_is_a_failed_output(tmp_path: Path, kind: str):
    frames = tmp_path / "frames"
    if kind == "link":
        frames.symlink_to(tmp_path)
    elif kind == "file":
        frames.write_bytes(b"x")
    with pytest.raises(AttemptFailed) as failed:
        open_directory(frames, "frames", "/pipewell/out/frames")
    if kind == "missing":
        assert failed.value.message == (
            "output 'frames' missing: the command exited 0 but did not write /pipewell/out/frames"
        )
    else:
        assert failed.value.message == "output 'frames': /pipewell/out/frames is not a directory"


def test_a_file_that_changed_after_it_was_listed_fails_the_upload(tmp_path: Path):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a.txt").write_bytes(b"one")
    fd = open_directory(frames, "frames", "/pipewell/out/frames")
    try:
        members = list(directory_members(fd, "frames"))
        (frames / "a.txt").write_bytes(b"longer now")
        with pytest.raises(AttemptFailed, match="a.txt changed while it was sent"):
            b"".join(directory_tar(fd, "frames", members))
    finally:
        os.close(fd)


def test_directories_nested_too_deep_are_refused(tmp_path: Path):
    deep = tmp_path / "frames"
    for level in range(MAX_DEPTH + 2):
        deep = deep / str(level % 10)
    deep.mkdir(parents=True)
    with pytest.raises(AttemptFailed, match="nested over") as refused:
        tar_of(tmp_path / "frames")
    assert refused.value.retryable is False


# ------------------------------------------------------------------ what an upload sends


def sent_by(body: HashedBody) -> bytes:
    parts = []
    while chunk := body.read(8192):
        parts.append(chunk)
    return b"".join(parts)


def test_an_upload_body_hashes_what_it_sends():
    chunks = [b"", b"abc", b"", b"defg"]
    body = HashedBody(iter(chunks), 7, "output 'x': upload")
    assert len(body) == 7
    assert sent_by(body) == b"abcdefg"
    assert body.sent == 7
    assert body.sha256() == hashlib.sha256(b"abcdefg").hexdigest()


def test_an_upload_body_fails_when_its_source_is_short_or_long():
    with pytest.raises(AttemptFailed, match="only 3 of the 7 bytes announced"):
        sent_by(HashedBody(iter([b"abc"]), 7, "output 'x': upload"))
    with pytest.raises(AttemptFailed, match="more than the 2 bytes announced"):
        sent_by(HashedBody(iter([b"abc"]), 2, "output 'x': upload"))
    with pytest.raises(AttemptFailed, match="more than the 3 bytes announced"):
        sent_by(HashedBody(iter([b"abc", b"d"]), 3, "output 'x': upload"))
