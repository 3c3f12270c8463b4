"""Small JPEG thumbnails for the gallery, named after the result they belong to.

A result ``outbox/swirls/photo.jpg`` has its three thumbnails at
``outbox/.thumbs/swirls/photo.jpg.{original,style,result}.jpg``: the gallery finds
them from the result's path alone, so neither the sidecar nor an index has to
keep track of them. They are made when the job finishes (the gallery plugin),
because by the time the gallery is rebuilt the original may have moved away
(the daemon moves it to ``processed/``) and the style image may have been edited.

Thumbnail names are fitted to the filesystem like every derived name
(:func:`~pipeline.files.fileops.fit_name`); results photostyle writes leave room, so
only a long name put into the outbox by hand gets a shortened one.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from pipeline.files.fileops import fit_name, name_max, write_bytes_atomic
from pipeline.job.imageio import load_photo

THUMBS_DIR = ".thumbs"  # hidden, so sync clients and the daemon's folder scans leave it alone
LONG_EDGE = 256
KINDS = ("original", "style", "result")
QUALITY = 85


def _resolved_folder(path: Path) -> Path:
    """``path`` with its folder resolved but not its last part: a symlink stays the link, not its target."""
    path = Path(path)
    return path.parent.resolve() / path.name


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` itself lies under ``folder`` (folders resolved, so symlinked outboxes compare equal).

    A symlink at ``path`` is judged by where it is, not where it points: callers
    that read it must refuse links themselves.
    """
    return _resolved_folder(path).is_relative_to(Path(folder).resolve())


def relative_to_outbox(outbox: Path, output: Path) -> Path:
    """``output``'s path under ``outbox`` (folders resolved, the file itself not); ValueError if it is not under it."""
    return _resolved_folder(output).relative_to(Path(outbox).resolve())


def thumbnail_paths(outbox: Path, output: Path) -> dict[str, Path]:
    """Where the thumbnails of ``output`` (a file under ``outbox``) live, by kind; ValueError if it is not under it."""
    return thumbnails_of(outbox, relative_to_outbox(outbox, output))


def thumbnails_of(outbox: Path, relative: Path | str) -> dict[str, Path]:
    """The thumbnails of the result at ``relative`` (a path under ``outbox``, see :func:`relative_to_outbox`)."""
    names = thumbnail_relatives(Path(relative).as_posix(), name_max(Path(outbox)))
    return {kind: Path(outbox) / name for kind, name in names.items()}


def thumbnail_relatives(relative: str, limit: int) -> dict[str, str]:
    """``tiny/a.jpg`` -> ``{"original": ".thumbs/tiny/a.jpg.original.jpg", …}``: plain strings, for pages of many cards."""
    folder, _, name = relative.rpartition("/")
    base = f"{THUMBS_DIR}/{folder}/" if folder else f"{THUMBS_DIR}/"
    return {kind: base + fit_name(name, f".{kind}.jpg", limit=limit) for kind in KINDS}


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
