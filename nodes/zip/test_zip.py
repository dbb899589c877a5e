"""pipewell/zip through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio
import io
import os
import zipfile

import pytest

from tests.catalog import run_node
from tests.samples import picture

pytestmark = pytest.mark.docker


def entries(data: bytes) -> dict[str, tuple[bytes, tuple[int, ...], int]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {
            i.filename: (archive.read(i), i.date_time, i.compress_type) for i in archive.infolist()
        }


async def test_inputs_become_entries_named_as_asked_and_the_bytes_are_reproducible(start_service):
    client = await start_service()
    image, notes, data = picture((64, 64)), b"a short note\n" * 20, b'{"a": 1}'
    inputs = {"file1": image, "file2": notes, "file3": data}
    named, again, default = await asyncio.gather(
        run_node(client, "pipewell/zip", inputs, ["archive"],
                 flags={"names": "img/pic.png, notes.txt,data/a.json"}),
        run_node(client, "pipewell/zip", inputs, ["archive"],
                 flags={"names": "img/pic.png, notes.txt,data/a.json"}),
        run_node(client, "pipewell/zip", {"file1": image, "file2": notes}, ["archive"],
                 flags={"compression": "store"}),
    )  # fmt: skip
    for done in (named, again, default):
        assert done.status == "COMPLETE", done.error

    found = entries(named.outputs["archive"])
    assert list(found) == ["img/pic.png", "notes.txt", "data/a.json"]
    assert [content for content, _, _ in found.values()] == [image, notes, data]
    assert {stamp for _, stamp, _ in found.values()} == {(1980, 1, 1, 0, 0, 0)}
    assert found["notes.txt"][2] == zipfile.ZIP_DEFLATED
    assert again.outputs["archive"] == named.outputs["archive"]  # same inputs, same bytes

    # Without names: each input's file name in the container, its type's extension.
    stored = entries(default.outputs["archive"])
    assert list(stored) == ["file1.png", "file2.txt"]
    assert {kind for _, _, kind in stored.values()} == {zipfile.ZIP_STORED}


async def test_unsafe_or_miscounted_names_are_refused(start_service):
    client = await start_service()
    inputs = {"file1": b"one", "file2": b"two"}
    climbing, absolute, short, twice = await asyncio.gather(
        *(
            run_node(client, "pipewell/zip", inputs, ["archive"], flags={"names": names})
            for names in ("ok.txt,../../evil.txt", "ok.txt,/etc/evil", "only-one.txt", "a,./a")
        )
    )
    prefix = "command exited with code 2: zip: "
    assert climbing.error.startswith(
        prefix + "entry name '../../evil.txt' climbs out of the archive with '..'"
    )
    assert absolute.error.startswith(prefix + "entry name '/etc/evil' is absolute")
    assert short.error.startswith(prefix + "names lists 1 name(s) for 2 bound input(s)")
    assert twice.error.startswith(prefix + "names gives 'a' more than once")


# ------------------------------------------------------------- files: a collection
# Run on Docker under the node contract (nodes/conftest.py run_contract): the service
# does not gather collections into a node end to end yet.

ZIP = "pipewell/zip"
ITEMS = {
    "photos/cat.jpg": os.urandom(2000),
    "b.txt": b"bee\n" * 50,
    "A.txt": b"capital\n",
    "a/z.json": b'{"z": 26}',
    "photos/2024/dog.png": picture((32, 32)),
    "empty.bin": b"",
}


def test_a_collections_items_become_entries_by_item_name_in_name_order(run_contract):
    first, again, stored, empty = (
        run_contract(ZIP, {"files": ITEMS}, ["archive"]),
        run_contract(ZIP, {"files": ITEMS}, ["archive"]),
        run_contract(ZIP, {"files": ITEMS}, ["archive"], {"compression": "store"}),
        run_contract(ZIP, {"files": {}}, ["archive"]),
    )
    for done in (first, again, stored, empty):
        assert done.code == 0, done.stderr
    archive = first.outputs["archive"]
    found = entries(archive)
    assert list(found) == sorted(ITEMS)  # A.txt, a/z.json, b.txt, empty.bin, photos/...
    assert {name: content for name, (content, _, _) in found.items()} == ITEMS
    assert {stamp for _, stamp, _ in found.values()} == {(1980, 1, 1, 0, 0, 0)}
    assert {kind for _, _, kind in found.values()} == {zipfile.ZIP_DEFLATED}
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert {info.external_attr >> 16 for info in opened.infolist()} == {0o100644}
    assert again.outputs["archive"] == archive  # the same items, the same bytes
    assert first.stdout.strip() == (
        f"zip: 6 file(s), {sum(map(len, ITEMS.values()))} bytes -> {len(archive)} bytes (deflate)"
    )
    assert {kind for _, _, kind in entries(stored.outputs["archive"]).values()} == {
        zipfile.ZIP_STORED
    }
    assert entries(empty.outputs["archive"]) == {}  # an empty collection, an empty zip


def test_a_collection_and_files_are_bound_one_way_or_the_other(run_contract):
    both = run_contract(ZIP, {"files": ITEMS, "file1": b"one"}, ["archive"])
    neither = run_contract(ZIP, {}, ["archive"])
    named = run_contract(ZIP, {"files": ITEMS}, ["archive"], {"names": "x.txt"})
    assert (both.code, neither.code, named.code) == (2, 2, 2)
    assert both.stderr.strip() == (
        "zip: bind either the collection input files or file1 to file8, not both"
        " (bound: files, file1)"
    )
    assert neither.stderr.strip() == (
        "zip: nothing to archive: bind the collection input files, or file1 to file8"
    )
    assert named.stderr.strip() == (
        "zip: the names flag names file1 to file8's entries; a collection's entries are its"
        " item names: leave names unset"
    )
    assert "archive" not in both.outputs | neither.outputs | named.outputs
