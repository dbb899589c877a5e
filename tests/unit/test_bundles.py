"""A collection's archive expanded into its items' objects, and items named for the
type a node made them as."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from orchestrator.collections.archives import ArchiveLimits, ArchiveRefused
from orchestrator.collections.bundles import bundle_key, expand_bundle, typed_item_name
from storage.local import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore("default", tmp_path / "objects", "http://127.0.0.1:1", b"k" * 32)


def put(store: LocalStore, key: str, data: bytes) -> None:
    store.write(bundle_key(key), io.BytesIO(data))


def zipped(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return data.getvalue()


def tarred(files: dict[str, bytes], mode: str = "w") -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode=mode) as archive:
        for name, content in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            archive.addfile(member, io.BytesIO(content))
    return data.getvalue()


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40


@pytest.mark.parametrize("pack", [zipped, tarred, lambda f: tarred(f, "w:gz")])
def test_an_archive_becomes_one_object_per_item_typed_and_hashed(store, pack):
    put(store, "runs/r/photos", pack({"a/cat.png": PNG, "notes.txt": b"hello"}))
    items = expand_bundle(store, "runs/r/photos", ArchiveLimits())
    assert [(i.name, i.object_name, i.size, i.content_type) for i in items] == [
        ("a/cat.png", "runs/r/photos/a/cat.png", len(PNG), "image/png"),
        ("notes.txt", "runs/r/photos/notes.txt", 5, "text/plain"),
    ]
    assert items[1].sha256 == hashlib.sha256(b"hello").hexdigest()
    with store.open_read("runs/r/photos/a/cat.png") as reader:
        assert reader.read() == PNG


def test_a_tar_of_no_files_is_an_empty_collection(store):
    put(store, "runs/r/out", tarred({}))
    assert expand_bundle(store, "runs/r/out", ArchiveLimits()) == []


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"", "ARCHIVE_EMPTY"), (b"just some text", "ARCHIVE_UNKNOWN")],
)
def test_what_is_no_archive_is_refused_with_its_code(store, data, code):
    put(store, "runs/r/in", data)
    with pytest.raises(ArchiveRefused) as refused:
        expand_bundle(store, "runs/r/in", ArchiveLimits())
    assert refused.value.code == code


def test_an_archive_refused_half_way_leaves_no_item_behind(store):
    files = {f"f{i}.txt": b"x" * 10 for i in range(5)}
    put(store, "runs/r/in", tarred(files))  # a tar is read as a stream: counted as it goes
    with pytest.raises(ArchiveRefused) as refused:
        expand_bundle(store, "runs/r/in", ArchiveLimits(max_entries=3))
    assert refused.value.code == "ARCHIVE_TOO_MANY_ENTRIES"
    assert store.list("runs/r/in", 10) == []


@pytest.mark.parametrize(
    ("name", "content_type", "named"),
    [
        ("lyon.csv", "application/json", "lyon.json"),
        ("mugs/cat.png", "image/jpeg", "mugs/cat.jpg"),
        ("a.jpeg", "image/jpeg", "a.jpeg"),
        ("report", "application/json", "report.json"),
        ("sales.csv", "text/plain", "sales.csv"),  # sniffing cannot tell CSV from text
        ("blob.bin", "application/octet-stream", "blob.bin"),
        ("d.json", "application/json; charset=utf-8", "d.json"),
    ],
)
def test_an_item_is_named_for_the_type_its_node_made(name, content_type, named):
    assert typed_item_name(name, content_type) == named
