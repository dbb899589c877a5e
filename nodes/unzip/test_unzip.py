"""pipewell/unzip through the service: the catalog's NodeDef and image together.

Hostile archives are made here with zipfile (which writes any entry name it is
given) and, for the lying header, patched byte by byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from orchestrator.collections.archives import item_name
from tests.catalog import run_node
from tests.samples import zip_of

pytestmark = pytest.mark.docker

FILES = {"docs/report.csv": b"city,visits\nLyon,3\n", "notes.txt": b"remember the milk\n"}


def lying_zip() -> bytes:
    """3 MiB of zeros whose local and central headers both claim 1000 bytes."""
    data = bytearray(zip_of({"liar.bin": bytes(3 << 20)}))
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 1000)  # uncompressed size
    struct.pack_into("<I", data, 0 + 22, 1000)  # the local header at offset 0
    return bytes(data)


async def test_an_entry_is_extracted_and_the_list_is_verified(start_service):
    client = await start_service()
    archive = zip_of({**FILES, "docs/": b""})
    named, only, listed = await asyncio.gather(
        run_node(client, "pipewell/unzip", {"archive": archive}, ["file"], command="extract",
                 flags={"entry": "docs/report.csv"}),
        run_node(client, "pipewell/unzip", {"archive": zip_of({"one.bin": b"\x00\x01"})},
                 ["file"], command="extract"),
        run_node(client, "pipewell/unzip", {"archive": archive}, ["listing"], command="list"),
    )  # fmt: skip
    for done in (named, only, listed):
        assert done.status == "COMPLETE", done.error
    assert named.outputs["file"] == FILES["docs/report.csv"]
    assert only.outputs["file"] == b"\x00\x01"
    listing = listed.json("listing")
    assert (listing["count"], listing["total_size"]) == (2, sum(map(len, FILES.values())))
    assert [(e["name"], e["size"], e["sha256"]) for e in listing["entries"]] == [
        (name, len(data), hashlib.sha256(data).hexdigest()) for name, data in FILES.items()
    ]


async def test_zip_slip_zip_bombs_and_broken_archives_are_refused(start_service):
    client = await start_service()
    cases = {
        "slip": zip_of({"ok.txt": b"fine", "../../etc/cron.d/evil": b"* * * * * root sh"}),
        "absolute": zip_of({"/etc/passwd": b"root::0:0::/:/bin/sh"}),
        "backslash": zip_of({"..\\..\\evil.bat": b"del *"}),
        # 5 MiB of zeros in a few KiB: the declared ratio gives it away.
        "ratio": zip_of({"zeros.bin": bytes(5 << 20)}),
        # Incompressible, so no ratio to see: the declared total is over max_total_mb=1.
        "total": zip_of({"a.bin": os.urandom(700_000), "b.bin": os.urandom(700_000)}),
        # Honest-looking headers, then more bytes than declared: caught while unpacking.
        "liar": lying_zip(),
        "not a zip": b"PK\x03\x04" + bytes(200),
    }
    runs = await asyncio.gather(
        *(
            run_node(client, "pipewell/unzip", {"archive": data}, ["listing"], command="list",
                     flags={"max_total_mb": "1"} if name == "total" else None)
            for name, data in cases.items()
        )
    )  # fmt: skip
    errors = {name: run.error for name, run in zip(cases, runs, strict=True)}
    assert all(run.status == "ERROR" for run in runs), errors
    prefix = "command exited with code 1: unzip: "
    assert errors["slip"].startswith(
        prefix + "refused: entry '../../etc/cron.d/evil' climbs out of the archive with '..'"
        " (zip-slip)"
    )
    assert errors["absolute"].startswith(prefix + "refused: entry '/etc/passwd' is absolute")
    assert errors["backslash"].startswith(prefix + "refused: entry '..\\\\..\\\\evil.bat' holds")
    assert errors["ratio"].startswith(
        prefix + "refused: entry 'zeros.bin' declares 5242880 bytes from"
    )
    assert "over max_ratio 100:1 (a zip bomb?)" in errors["ratio"]
    assert errors["total"].startswith(
        prefix + "refused: the entries declare 1400000 bytes in all, over max_total_mb 1"
    )
    assert errors["liar"].startswith(
        prefix + "entry 'liar.bin' cannot be unpacked: Bad CRC-32 for file 'liar.bin'"
    )
    assert errors["not a zip"].startswith(
        prefix + "the input is not a readable zip archive: File is not a zip file"
    )


async def test_which_entry_must_be_said_when_there_are_several(start_service):
    client = await start_service()
    archive = zip_of(FILES)
    unnamed, absent = await asyncio.gather(
        run_node(client, "pipewell/unzip", {"archive": archive}, ["file"], command="extract"),
        run_node(client, "pipewell/unzip", {"archive": archive}, ["file"], command="extract",
                 flags={"entry": "docs/other.csv"}),
    )  # fmt: skip
    assert unnamed.error.startswith(
        "command exited with code 2: unzip: the archive holds 2 files (docs/report.csv,"
        " notes.txt): set the entry flag to the one to extract"
    )
    assert absent.error.startswith(
        "command exited with code 2: unzip: the archive has no file 'docs/other.csv'"
    )


# --------------------------------------------------------------- all: a collection
# Run on Docker under the node contract (nodes/conftest.py run_contract): the service
# does not run collection outputs end to end yet.

UNZIP = "pipewell/unzip"
PHOTO = os.urandom(3000)  # incompressible: stored as it is
WEIRD = {
    # entry in the archive: the item it becomes (orchestrator/collections/archives.py)
    "été/a b.txt": "ete/a_b.txt",
    "写真/猫.png": "_5199_771f/_732b.png",
    ".env": "env",
    "notes/.draft (1)#.md": "notes/draft__1__.md",
    "./dot/./slash//x.csv": "dot/slash/x.csv",
}
JUNK = ["__MACOSX/._notes.txt", "__MACOSX/photos/x.bin", "photos/.DS_Store", "Thumbs.db",
        "docs/._report.csv", "desktop.ini"]  # fmt: skip


def load_script():  # type: ignore[no-untyped-def]
    """The node's script as a module (it imports nothing of Pipewell's)."""
    spec = importlib.util.spec_from_file_location(
        "unzip_node", Path(__file__).with_name("unzip.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_flag_bits(data: bytes, bits: int) -> bytes:
    """The zip with ``bits`` set in every local and central header's flags."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = out.find(signature)
        while start != -1:
            (flags,) = struct.unpack_from("<H", out, start + offset)
            struct.pack_into("<H", out, start + offset, flags | bits)
            start = out.find(signature, start + 4)
    return bytes(out)


def symlink_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("ok.txt", b"fine")
        link = zipfile.ZipInfo("passwd")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return out.getvalue()


def test_item_names_are_made_safe_by_the_services_rule():
    """The node copies orchestrator/collections/archives.py's item_name: the same names."""
    node = load_script()
    names = [
        *FILES, *WEIRD, *JUNK, "photos/2024/cat.jpg", "a\\b.txt", "../x", "dir/", "...",
        "a/...b", "Ünïcödé(1).JPG", "ﬁle.txt", "x/._y", "__MACOSX", "a/__MACOSX/b",
    ]  # fmt: skip
    assert [node.item_name(n) for n in names] == [item_name(n) for n in names]
    for name in [*FILES, "photos/2024/cat.jpg", "a-b_c.d/e"]:  # already safe: kept
        assert node.item_name(name) == name
    with pytest.raises(node.ArchiveError, match="has a path over 200 characters"):
        node.item_name("x" * 201)


def test_all_unpacks_every_file_into_the_collection_under_safe_item_names(run_contract):
    archive = zip_of({
        **FILES, "docs/": b"", "photos/2024/cat.jpg": PHOTO, "empty.txt": b"",
        **{entry: entry.encode() for entry in WEIRD}, **{junk: b"junk" for junk in JUNK},
    })  # fmt: skip
    done = run_contract(UNZIP, {"archive": archive}, ["files"], command_name="all")
    assert done.code == 0, done.stderr
    assert done.outputs["files"] == dict(sorted({
        **FILES, "photos/2024/cat.jpg": PHOTO, "empty.txt": b"",
        **{item: entry.encode() for entry, item in WEIRD.items()},
    }.items()))  # fmt: skip
    assert "unzip: entry 'été/a b.txt' is item 'ete/a_b.txt'" in done.stdout
    assert f"unzip: left out {len(JUNK)} junk file(s): __MACOSX/._notes.txt" in done.stdout
    assert done.stdout.rstrip().endswith(
        f"unzip: extracted 9 file(s), {sum(map(len, done.outputs['files'].values()))} bytes,"
        " into the collection (5 renamed to safe item names)"
    )


def test_all_refuses_clashes_hostile_archives_and_zip_bombs(run_contract):
    cases = {
        "clash": zip_of({"a b.txt": b"one", "a_b.txt": b"two"}),
        "accent clash": zip_of({"photos/été.jpg": b"1", "photos/ete.jpg": b"2"}),
        "folder clash": zip_of({"a/b.txt": b"1", "A/x": b"2", "a": b"3"}),
        "inside a file": zip_of({"a": b"1", "a/b.txt": b"2"}),
        "slip": zip_of({"ok.txt": b"fine", "../../etc/cron.d/evil": b"* * * * * root sh"}),
        "link": symlink_zip(),
        "encrypted": with_flag_bits(zip_of({"secret.txt": b"hush"}), 0x1),
        "entries": zip_of({"1": b"1", "2": b"2", "3": b"3"}),
        "ratio": zip_of({"zeros.bin": bytes(5 << 20)}),
        "total": zip_of({"a.bin": os.urandom(700_000), "b.bin": os.urandom(700_000)}),
        "liar": lying_zip(),
    }
    flags = {"entries": {"max_entries": "2"}, "total": {"max_total_mb": "1"}}
    runs = {
        name: run_contract(UNZIP, {"archive": data}, ["files"], flags.get(name), "all")
        for name, data in cases.items()
    }
    errors = {name: run.stderr.strip() for name, run in runs.items()}
    assert {name: run.code for name, run in runs.items()} == dict.fromkeys(cases, 1), errors
    prefix = "unzip: refused: "
    assert errors["clash"] == (
        prefix + "entries 'a b.txt' and 'a_b.txt' would both be item 'a_b.txt'; rename one"
    )
    assert errors["accent clash"] == (
        prefix + "entries 'photos/été.jpg' and 'photos/ete.jpg' would both be item"
        " 'photos/ete.jpg'; rename one"
    )
    assert errors["folder clash"] == (
        prefix + "entry 'a' is a file where entry 'a/b.txt' has a folder; rename one"
    )
    assert errors["inside a file"] == (
        prefix + "entry 'a/b.txt' is inside 'a', which entry 'a' has as a file; rename one"
    )
    assert errors["slip"].startswith(
        prefix + "entry '../../etc/cron.d/evil' climbs out of the archive with '..'"
    )
    assert errors["link"] == prefix + "entry 'passwd' is a symbolic link"
    assert errors["encrypted"] == prefix + "entry 'secret.txt' is encrypted"
    assert errors["entries"] == "unzip: the archive has 3 entries, over max_entries 2"
    assert errors["ratio"].startswith(prefix + "entry 'zeros.bin' declares 5242880 bytes from")
    assert errors["ratio"].endswith("over max_ratio 100:1 (a zip bomb?)")
    assert errors["total"].startswith(
        prefix + "the entries declare 1400000 bytes in all, over max_total_mb 1"
    )
    assert errors["liar"].startswith("unzip: entry 'liar.bin' cannot be unpacked: Bad CRC-32")
    # Everything but the liar is refused before a byte is written.
    assert {name: run.outputs["files"] for name, run in runs.items() if name != "liar"} == (
        dict.fromkeys(set(cases) - {"liar"}, {})
    )


def test_all_needs_its_collection_output_bound(run_contract):
    done = run_contract(UNZIP, {"archive": zip_of(FILES)}, ["file"], command_name="all")
    assert done.code == 2
    assert done.stderr.strip() == (
        "unzip: the all command writes the collection output 'files': bind it in the flow"
    )
