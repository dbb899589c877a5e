"""What stored bytes are served as: their type, whether a browser may show them in
place, and the file name they are saved under."""

import pytest

from orchestrator.api.downloads import download_headers, download_name, shows_inline
from orchestrator.executor.transfers import output_type


@pytest.mark.parametrize(
    "content_type",
    [
        "image/png",
        "IMAGE/JPEG",
        "text/plain; charset=utf-8",
        "application/json",
        "video/mp4",
        "audio/ogg; codecs=opus",
    ],
)
def test_passive_types_show_inline(content_type):
    assert shows_inline(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/octet-stream",
        "text/html",
        "Text/HTML; charset=utf-8",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/rss+xml",
        "text/javascript",
        "application/javascript",
        "application/ecmascript",
        "application/pdf",
        "multipart/x-mixed-replace; boundary=x",
        "application/x-shockwave-flash",
        # A browser takes the last of a list; we would have looked at the first.
        "text/plain, text/html",
        "text/plain; charset=utf-8, text/html",
        "image/png\ttext/html",
        "text/plain/html",
    ],
)
def test_everything_else_is_an_attachment(content_type):
    assert not shows_inline(content_type)
    headers = download_headers(content_type, "out.bin")
    assert headers["Content-Disposition"] == 'attachment; filename="out.bin"'
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox"
    assert headers["Content-Type"] == (content_type or "application/octet-stream")


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("output-image", "output-image"),
        ("a.b_c", "a.b_c"),
        ('x"; filename="evil.html', "x___filename__evil.html"),
        ("line\r\nSet-Cookie: a=b", "line__Set-Cookie__a_b"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "download"),
        ("héllo wörld", "h_llo_w_rld"),
        ("", "download"),
    ],
)
def test_filenames_cannot_break_out_of_their_quotes(name, quoted):
    headers = download_headers(None, name)
    assert headers["Content-Disposition"] == f'attachment; filename="{quoted}"'


@pytest.mark.parametrize(
    ("name", "content_type", "saved_as"),
    [
        ("csv", "text/csv", "csv.csv"),
        ("rows", "text/csv; charset=utf-8", "rows.csv"),
        ("loud", "text/plain", "loud.txt"),
        ("thumb", "image/jpeg", "thumb.jpg"),
        ("doc", "application/json", "doc.json"),
        ("page", "text/html", "page.html"),
        # A name with an extension of its own was chosen: it is kept.
        ("photo.jpeg", "image/jpeg", "photo.jpeg"),
        ("page.x", "text/html", "page.x"),
        # Bytes of no known type, or a type a browser could read otherwise: no guess.
        ("blob", "application/octet-stream", "blob"),
        ("blob", None, "blob"),
        ("odd", "text/plain, text/html", "odd"),
        ("odd", "application/x-unheard-of", "odd"),
        ('x"; y="', "text/csv", "x___y__.csv"),
        ("..", "image/png", "download.png"),
    ],
)
def test_a_download_is_named_with_the_extension_of_its_type(name, content_type, saved_as):
    assert download_name(name, content_type) == saved_as
    disposition = download_headers(content_type, name)["Content-Disposition"]
    assert disposition.endswith(f'; filename="{saved_as}"')


@pytest.mark.parametrize(
    ("sniffed", "declared", "stored"),
    [
        # Sniffing cannot tell these from plain text: the node's word is taken.
        ("text/plain", "text/csv", "text/csv"),
        ("text/plain", "text/markdown", "text/markdown"),
        ("image/png", "image/png", "image/png"),
        # A binary no magic number names is what a node says it is...
        ("application/octet-stream", "application/x-parquet", "application/x-parquet"),
        # ...unless the sniffer would have known that type.
        ("application/octet-stream", "image/png", "application/octet-stream"),
        # Bytes that contradict the declared type keep what they are.
        ("image/png", "text/csv", "image/png"),
        ("text/plain", "application/json", "text/plain"),
        ("application/json", "text/csv", "application/json"),
        # Nothing declared, or more than one type (the scheduler passes None then).
        ("text/plain", None, "text/plain"),
    ],
)
def test_an_output_is_stored_as_its_declared_type_unless_its_bytes_say_otherwise(
    sniffed, declared, stored
):
    assert output_type(sniffed, declared) == stored
