"""Small inputs for the built-in nodes' tests, made here rather than downloaded.

Images are drawn with Pillow (the dev extra); PDFs are written by hand, byte
for byte, so that the text layer is exactly the text given; zips and CSVs with
the standard library. Video is made inside pipewell/media (ffmpeg's
testsrc), see :func:`video`.
"""

from __future__ import annotations

import io
import subprocess
import zipfile

from PIL import Image, ImageDraw, ImageFont

MEDIA = "pipewell/media:latest"


def picture(size: tuple[int, int], fmt: str = "PNG", **save: object) -> bytes:
    """A white picture with a red disc and a blue square in its top-left quarter."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), fill="red")
    draw.rectangle((0, 0, size[0] // 4, size[1] // 4), fill="blue")
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def text_image(lines: list[str], size: int = 64) -> bytes:
    """Black text on white, large enough for tesseract (Pillow's scalable default font)."""
    font = ImageFont.load_default(size=size)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    box = probe.multiline_textbbox((0, 0), "\n".join(lines), font=font, spacing=size // 2)
    image = Image.new("L", (box[2] + 2 * size, box[3] + 2 * size), 255)
    ImageDraw.Draw(image).multiline_text(
        (size, size), "\n".join(lines), font=font, fill=0, spacing=size // 2
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def pdf(pages: list[str | None]) -> bytes:
    """A PDF with one page per item: its lines in Helvetica 24 pt, or (None) a drawn square."""
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "",  # the page tree, once the pages are known
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for text in pages:
        if text is None:
            content = "0 0 1 rg 100 400 200 200 re f"
        else:
            shown = [f"({_pdf_string(line)}) Tj T*" for line in text.split("\n")]
            content = "\n".join(["BT", "/F1 24 Tf", "28 TL", "72 720 Td", *shown, "ET"])
        objects.append(f"<< /Length {len(content)} >>\nstream\n{content}\nendstream")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objects)} 0 R"
            " /Resources << /Font << /F1 3 0 R >> >> >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _pdf_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def video(seconds: int = 2, size: str = "160x120", rate: int = 10, audio: bool = True) -> bytes:
    """An MP4 (H.264, and AAC unless ``audio`` is false) of ffmpeg's test pattern, made in
    pipewell/media (ffmpeg) with no network."""
    sources = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        sources += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=22050:duration={seconds}"]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    codecs += ["-c:a", "aac"] if audio else []
    made = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", MEDIA, "sh", "-c",
         'ffmpeg -v error "$@" -f mp4 -movflags frag_keyframe+empty_moov pipe:1', "ffmpeg",
         *sources, *codecs],
        capture_output=True,
        timeout=60,
        check=True,
    )  # fmt: skip
    return made.stdout
