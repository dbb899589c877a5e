"""Archives expanded into items: names, bytes, and every limit, on archives built here."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile

import pytest

from orchestrator.collections.archives import (
    ArchiveLimits,
    ArchiveRefused,
    expand,
    item_name,
    kind_of,
)


def zipped(files: dict[str, bytes], level: int = 6) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    out.seek(0)
    return out


def read_all(source: io.BytesIO, kind: str = "zip", **limits: int) -> dict[str, bytes]:
    items = {}
    for entry in expand(source, kind, ArchiveLimits(**limits)):  # type: ignore[arg-type]
        with entry.open() as reader:
            chunks = []
            while chunk := reader.read():
                chunks.append(chunk)
        items[entry.name] = b"".join(chunks)
    return items


def refused(source: io.BytesIO, kind: str = "zip", **limits: int) -> ArchiveRefused:
    with pytest.raises(ArchiveRefused) as caught:
        read_all(source, kind, **limits)
    return caught.value


def test_a_zip_of_folders_gives_its_files_with_their_paths_and_bytes():
    files = {"photos/2024/a.jpg": b"A" * 70_000, "photos/b.jpg": b"B", "notes.txt": b"hi"}
    source = zipped(files)
    assert kind_of(source.getvalue()[:512]) == "zip"
    assert read_all(source) == files


def test_a_tar_gz_gives_the_same():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in {"d/x.csv": b"a,b\n1,2\n", "y.csv": b"c\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out.seek(0)
    assert kind_of(out.getvalue()[:512]) == "tar"
    assert read_all(out, "tar") == {"d/x.csv": b"a,b\n1,2\n", "y.csv": b"c\n"}


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("../evil.txt", "evil.txt"),
        ("/etc/passwd", "etc/passwd"),
        ("a/../../b", "a/b"),
        ("C:\\Users\\x.png", "C_/Users/x.png"),
        ("we\x00ird\nname.txt", "we_ird_name.txt"),
        (".hidden/.env", "hidden/env"),
        ("été photo.jpg", "ete_photo.jpg"),
        ("写真/猫.jpg", "_5199_771f/_732b.jpg"),
        ("folder/", None),
        ("__MACOSX/._a.jpg", None),
        ("photos/._a.jpg", None),
        ("photos/.DS_Store", None),
        ("..", None),
    ],
)
def test_entry_names_never_leave_their_place(path: str, name: str | None):
    assert item_name(path) == name


def test_climbing_entries_are_items_inside_not_files_outside():
    source = zipped({"../../x.txt": b"x", "ok/y.txt": b"y"})
    assert read_all(source) == {"x.txt": b"x", "ok/y.txt": b"y"}


def test_two_entries_that_become_one_name_are_refused_naming_both():
    error = refused(zipped({"a b.jpg": b"1", "a_b.jpg": b"2"}))
    assert error.code == "ARCHIVE_NAME_CLASH"
    assert "'a b.jpg' and 'a_b.jpg' would both be item 'a_b.jpg'" in str(error)


def test_a_zip_bomb_is_refused_having_read_a_few_mib():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("zeros.bin", "w", force_zip64=True) as entry:
            for _ in range(200):
                entry.write(bytes(1 << 20))
    out.seek(0)
    assert len(out.getvalue()) < 400_000
    began = time.monotonic()
    error = refused(out)
    assert error.code == "ARCHIVE_RATIO"
    assert "'zeros.bin' expands over 100 times" in str(error)
    assert time.monotonic() - began < 1.0  # its declared sizes gave it away at once


def test_actual_bytes_count_not_only_declared_ones():
    # A tar declares no compressed size: the running total is what stops it.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for index in range(3):
            info = tarfile.TarInfo(f"f{index}")
            info.size = 300_000
            archive.addfile(info, io.BytesIO(bytes(300_000)))
    out.seek(0)
    error = refused(out, "tar", max_total_bytes=700_000)
    assert error.code == "ARCHIVE_TOO_LARGE"


def test_an_entry_over_its_limit_is_refused():
    error = refused(zipped({"big.bin": bytes(2 << 20)}), max_entry_bytes=1 << 20, max_ratio=10**6)
    assert error.code == "ARCHIVE_ENTRY_TOO_LARGE" and "'big.bin'" in str(error)


def test_too_many_entries_are_refused_before_any_is_read():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for index in range(100_001):
            archive.writestr(f"e{index}", b"")
    out.seek(0)
    began = time.monotonic()
    error = refused(out, max_entries=100_000)
    assert error.code == "ARCHIVE_TOO_MANY_ENTRIES"
    assert "100001 entries, over 100000" in str(error)
    assert time.monotonic() - began < 2.0


def test_a_cut_archive_is_unreadable():
    whole = zipped({"a.txt": b"a" * 1000}).getvalue()
    error = refused(io.BytesIO(whole[: len(whole) // 2]))
    assert error.code == "ARCHIVE_UNREADABLE"


def test_tar_links_and_devices_are_skipped_never_followed():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, kind in (("link", tarfile.SYMTYPE), ("hard", tarfile.LNKTYPE),
                           ("dev", tarfile.CHRTYPE), ("dir", tarfile.DIRTYPE)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd"
            archive.addfile(info)
        info = tarfile.TarInfo("real.txt")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"real"))
    out.seek(0)
    assert read_all(out, "tar") == {"real.txt": b"real"}


def test_something_else_is_no_archive():
    assert kind_of(b"%PDF-1.7 ...") is None


def test_a_file_where_another_entry_has_a_folder_is_a_clash():
    for names in (["a", "a/b.txt"], ["a/b.txt", "a"]):
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as z:
            for name in names:
                z.writestr(name, b"x")
        archive.seek(0)
        with pytest.raises(ArchiveRefused) as refused:
            list(expand(archive, "zip"))
        assert refused.value.code == "ARCHIVE_NAME_CLASH"
        assert "'a'" in str(refused.value)
