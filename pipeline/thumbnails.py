"""Small JPEG thumbnails for the gallery, named after the result they belong to.

A result ``outbox/swirls/photo.jpg`` has its three thumbnails at
``outbox/.thumbs/swirls/photo.jpg.{original,style,result}.jpg``: the gallery finds
them from the result's path alone, so neither the sidecar nor an index has to
keep track of them. They are made when the job finishes (the gallery plugin),
because by the time the gallery is rebuilt the original may have moved away
(the daemon moves it to ``processed/``) and the style image may have been edited.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from pipeline.fileops import write_bytes_atomic
from pipeline.imageio import load_photo

THUMBS_DIR = ".thumbs"  # hidden, so sync clients and the daemon's folder scans leave it alone
LONG_EDGE = 256
KINDS = ("original", "style", "result")
QUALITY = 85


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies under ``folder`` (both resolved, so symlinked outboxes compare equal)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def thumbnail_paths(outbox: Path, output: Path) -> dict[str, Path]:
    """Where the thumbnails of ``output`` (a file under ``outbox``) live, by kind."""
    relative = Path(output).resolve().relative_to(Path(outbox).resolve())
    base = Path(outbox) / THUMBS_DIR / relative
    return {kind: base.with_name(f"{base.name}.{kind}.jpg") for kind in KINDS}


def shrink(image: Image.Image, long_edge: int = LONG_EDGE) -> Image.Image:
    """The image with its long edge at most ``long_edge`` (never enlarged); RGB."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    scale = long_edge / max(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def write_thumbnail(image: Image.Image, target: Path) -> Path:
    """Save a JPEG thumbnail of ``image`` at ``target``, replacing any older one atomically."""
    buffer = io.BytesIO()
    shrink(image).save(buffer, format="JPEG", quality=QUALITY, optimize=True)
    write_bytes_atomic(target, buffer.getvalue())
    return target


def thumbnail_from_file(source: Path, target: Path, max_pixels: int) -> Path:
    """Decode ``source`` defensively (as photos are) and write its thumbnail."""
    return write_thumbnail(load_photo(source, max_pixels).image, target)
