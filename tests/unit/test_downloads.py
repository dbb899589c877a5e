"""Which stored bytes a browser may show in place, and how their filename is quoted."""

import pytest

from orchestrator.api.downloads import download_headers, shows_inline


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
    headers = download_headers(content_type, "out")
    assert headers["Content-Disposition"] == 'attachment; filename="out"'
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
    headers = download_headers("image/png", name)
    assert headers["Content-Disposition"] == f'inline; filename="{quoted}"'
