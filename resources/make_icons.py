"""Render the tray icons from their SVG sources into committed PNG sets and an .ico.

Why PNGs at all: tray hosts ask for one small pixmap and scale whatever they get;
an SVG scaled by the host at 16 px blurs its 1 px strokes, and some hosts (the
Windows shell, older XEmbed trays) never see the SVG at all. So each state gets
one PNG per size a tray commonly asks for (16, 20, 24, 32, 40, 48: 100 %, 125 %,
150 %, 200 %, 250 % and 300 % of 16 px), rendered with QtSvg. Plus the
application icon for packaging/: a multi-size ``postbridge.ico`` (PNG-compressed
entries, Vista+) for Windows, a ``postbridge.icns`` (PNG entries, 16 px to
1024 px) for the macOS bundle, and a 256 px ``postbridge-256.png`` for the Linux
``.desktop`` file.

Qt reads ICNS but cannot be relied on to write it (its ICNS plugin writes only some
sizes), so :func:`write_icns` writes the container itself: a big-endian ``icns``
header and one ``(type, length, PNG)`` entry per size.

Run after editing a file in ``resources/icons/src/``::

    QT_QPA_PLATFORM=offscreen uv run python resources/make_icons.py

and commit the PNGs. The app never renders SVG at run time.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

STATES = ("idle", "polling", "paused", "error")
SIZES = (16, 20, 24, 32, 40, 48)
ICO_SIZES = (16, 20, 24, 32, 40, 48, 64, 256)
# ICNS element types holding PNG data (macOS 10.7+), with their pixel sizes; the @2x types
# (ic11-ic14, ic10) are what Retina displays pick.
ICNS_TYPES = (
    (b"icp4", 16),
    (b"icp5", 32),
    (b"ic11", 32),  # 16@2x
    (b"icp6", 64),
    (b"ic12", 64),  # 32@2x
    (b"ic07", 128),
    (b"ic08", 256),
    (b"ic13", 256),  # 128@2x
    (b"ic09", 512),
    (b"ic14", 512),  # 256@2x
    (b"ic10", 1024),  # 512@2x
)
APP_PNG_SIZE = 256

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "icons" / "src"
OUT = HERE / "icons"


def render(svg: Path, size: int) -> QImage:
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def png_bytes(image: QImage) -> bytes:
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return bytes(data.data())


def write_ico(path: Path, images: list[QImage]) -> None:
    """An ICO file whose entries are PNG streams (the format Windows has read since Vista)."""
    blobs = [png_bytes(image) for image in images]
    header = struct.pack("<HHH", 0, 1, len(blobs))
    offset = len(header) + 16 * len(blobs)
    entries = b""
    for image, blob in zip(images, blobs, strict=True):
        side = image.width() if image.width() < 256 else 0  # 0 means 256 in ICO
        entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(blob), offset)
        offset += len(blob)
    path.write_bytes(header + entries + b"".join(blobs))


def write_icns(path: Path, svg: Path) -> None:
    """An ICNS file whose elements are PNG streams, one per entry of ICNS_TYPES."""
    rendered: dict[int, bytes] = {}
    body = b""
    for kind, size in ICNS_TYPES:
        if size not in rendered:
            rendered[size] = png_bytes(render(svg, size))
        body += kind + struct.pack(">I", 8 + len(rendered[size])) + rendered[size]
    path.write_bytes(b"icns" + struct.pack(">I", 8 + len(body)) + body)


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    written = 0
    for state in STATES:
        svg = SOURCES / f"{state}.svg"
        for size in SIZES:
            target = OUT / f"{state}-{size}.png"
            if not render(svg, size).save(str(target), "PNG"):
                raise SystemExit(f"could not write {target}")
            written += 1
    app_svg = SOURCES / "idle.svg"  # the application icon is the idle envelope
    write_ico(OUT / "postbridge.ico", [render(app_svg, s) for s in ICO_SIZES])
    write_icns(OUT / "postbridge.icns", app_svg)
    app_png = OUT / f"postbridge-{APP_PNG_SIZE}.png"
    if not render(app_svg, APP_PNG_SIZE).save(str(app_png), "PNG"):
        raise SystemExit(f"could not write {app_png}")
    print(f"wrote {written + 1} PNGs, postbridge.ico and postbridge.icns to {OUT}")
    del app
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
