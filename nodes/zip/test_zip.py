"""pipewell/zip through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio
import io
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
