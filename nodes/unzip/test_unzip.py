"""pipewell/unzip through the service: the catalog's NodeDef and image together.

Hostile archives are made here with zipfile (which writes any entry name it is
given) and, for the lying header, patched byte by byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct

import pytest

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
