#!/usr/bin/env bash
# Make the example flows' inputs, offline, with the built-in images (make setup
# builds them): nothing is downloaded.
#   examples/make-inputs.sh [DIR]     (default examples/inputs)
# photo.jpg  a 1200x800 drawn landscape (pipewell/watermark's Pillow)
# scan.png   a page of printed text in DejaVu Sans, for OCR
# report.pdf two pages with a text layer, written by hand
# visits.csv cities and visits
# clip.mp4   4 s of ffmpeg's test pattern with a tone (pipewell/media's ffmpeg)
# photos.zip six product photos in folders (a batch for batch-thumbnails.json)
# exports/   a day of CSV exports, one per shop (a batch for csv-batch.yaml)
set -euo pipefail
out=${1:-$(dirname "$0")/inputs}
mkdir -p "$out"
out=$(cd "$out" && pwd)
run() { docker run --rm --network none --user "$(id -u):$(id -g)" -v "$out:/out" "$@"; }

run -i pipewell/watermark:latest python3 - <<'PY'
from PIL import Image, ImageDraw, ImageFont

photo = Image.new("RGB", (1200, 800))
draw = ImageDraw.Draw(photo)
for y in range(800):  # a sky going pale towards the horizon
    draw.line((0, y, 1200, y), fill=(70 + y // 8, 130 + y // 10, 230))
draw.ellipse((850, 120, 1010, 280), fill=(255, 214, 90))
draw.polygon([(0, 800), (0, 520), (300, 420), (650, 560), (1200, 450), (1200, 800)],
             fill=(60, 140, 70))
draw.polygon([(0, 800), (0, 650), (500, 600), (1200, 700), (1200, 800)], fill=(40, 100, 50))
photo.save("/out/photo.jpg", quality=90)

font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 40)
scan = Image.new("L", (1240, 560), 250)
lines = ["PIPEWELL EXAMPLE INVOICE", "Invoice number 4711", "Total due: 120.50 EUR",
         "Thank you for your order."]
for n, line in enumerate(lines):
    ImageDraw.Draw(scan).text((80, 80 + 110 * n), line, font=font, fill=20)
scan.save("/out/scan.png", dpi=(300, 300))

pages = [["Pipewell example report", "Visits grew by 12 percent this quarter."],
         ["Page two", "Lyon and Porto led the list."]]
objects = ["<< /Type /Catalog /Pages 2 0 R >>", "",
           "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
kids = []
for page in pages:
    shown = " ".join(f"({line}) Tj T*" for line in page)
    content = f"BT /F1 20 Tf 26 TL 72 720 Td {shown} ET"
    objects.append(f"<< /Length {len(content)} >>\nstream\n{content}\nendstream")
    objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                   f"/Contents {len(objects)} 0 R /Resources << /Font << /F1 3 0 R >> >> >>")
    kids.append(f"{len(objects)} 0 R")
objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
pdf, offsets = b"%PDF-1.4\n", []
for number, body in enumerate(objects, 1):
    offsets.append(len(pdf))
    pdf += f"{number} 0 obj\n{body}\nendobj\n".encode()
xref = len(pdf)
pdf += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
pdf += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
pdf += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
open("/out/report.pdf", "wb").write(pdf)

open("/out/visits.csv", "w").write(
    "city,country,visits\nLyon,FR,340\nPorto,PT,512\nGhent,BE,95\nTurku,FI,101\nBrno,CZ,7\n"
)

# A shop's product photos, zipped as a camera app would: folders, and the junk a
# Mac adds (left out when the zip is expanded).
import io, os, zipfile
with zipfile.ZipFile("/out/photos.zip", "w") as shop:
    for n, (name, colour) in enumerate([("mugs/blue-mug.jpg", (40, 90, 200)),
                                        ("mugs/red-mug.jpg", (200, 50, 40)),
                                        ("lamps/brass-lamp.jpg", (190, 150, 60)),
                                        ("lamps/green-lamp.jpg", (50, 160, 80)),
                                        ("rugs/grey-rug.jpg", (120, 120, 125)),
                                        ("rugs/sand-rug.jpg", (220, 200, 150))]):
        product = Image.new("RGB", (900 + 60 * n, 600), (245, 245, 240))
        ImageDraw.Draw(product).rounded_rectangle((150, 100, 750 + 60 * n, 500), 40,
                                                  fill=colour)
        data = io.BytesIO()
        product.save(data, format="JPEG", quality=88)
        shop.writestr(name, data.getvalue())
    shop.writestr("__MACOSX/mugs/._blue-mug.jpg", b"\0\5\26\7")

# A day of CSV exports, one file per shop, as a folder.
os.makedirs("/out/exports", exist_ok=True)
for shop, rows in {"lyon": [("mug", 12, 9.5), ("lamp", 3, 42.0), ("rug", 1, 120.0)],
                   "porto": [("mug", 30, 9.5), ("rug", 4, 120.0)],
                   "turku": [("lamp", 7, 42.0)]}.items():
    lines = ["product,sold,price"] + [f"{p},{s},{c}" for p, s, c in rows]
    open(f"/out/exports/{shop}.csv", "w").write("\n".join(lines) + "\n")
PY

run pipewell/media:latest ffmpeg -nostdin -v error -y \
    -f lavfi -i testsrc2=size=320x240:rate=25:duration=4 \
    -f lavfi -i sine=frequency=440:sample_rate=44100:duration=4 \
    -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -movflags +faststart /out/clip.mp4

ls -l "$out"
