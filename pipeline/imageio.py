"""Reading photos defensively and writing results without ever clobbering a file.

Reading: the format is sniffed from the content (Pillow's ``open``), the pixel
count is checked from the header before anything is decoded, and every mode a
camera, phone or editor produces becomes upright 8-bit RGB plus an optional
alpha mask: EXIF orientation applied, palette and greyscale expanded, CMYK
converted through its ICC profile, 16-bit scaled (Pillow's own ``convert`` clips
it to white), HEIC/HEIF through pillow-heif, animations by their first frame.

Writing: into a temp file in the target folder, fsynced, then hard-linked to the
first free name (``stem.ext``, ``stem-1.ext``, …). ``link`` fails if the name
exists, so an existing file is never overwritten, and a sync client never sees a
half-written output under the final name.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from pipeline.errors import ImageLoadError

try:  # phone photos: HEIC/HEIF/AVIF
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - a declared dependency; degrade to "not an image"
    pillow_heif = None

EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}
PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
ORIENTATION_TAG = 0x0112
HIGH_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


@dataclass
class Photo:
    """A decoded photo: upright RGB pixels plus what a faithful output needs to carry."""

    image: Image.Image  # mode "RGB", EXIF orientation applied; transparent areas flattened on white
    alpha: Image.Image | None  # mode "L" mask when the source had (non-opaque) transparency
    exif: Image.Exif | None  # orientation reset to 1, since the pixels are upright
    icc_profile: bytes | None  # an RGB profile describing ``image``'s pixels
    format: str  # sniffed from the content, e.g. "JPEG", "PNG", "HEIF"
    frames: int  # > 1 for animations; only the first frame is used


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _profile_space(icc: bytes) -> str | None:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except (OSError, ImageCms.PyCMSError, AttributeError):
        return None


def _scale_high_bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale to 8-bit by scaling the range, not clipping it."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        values = values * 255.0 if values.size and values.max() <= 1.0 else values
    elif image.mode.startswith("I;16") or (values.size and values.max() > 255):
        values = values / 257.0  # 0..65535 -> 0..255
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """RGB flattened on white, plus the alpha mask when anything is not fully opaque."""
    # A tRNS chunk marks transparency in palette PNGs and also, as one "colour key", in greyscale and
    # RGB PNGs; without this the keyed colour would show as an opaque block instead of transparency.
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("LA", "La"):
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "RGBa"):
        return image, None
    image = image.convert("RGBA")
    alpha = image.getchannel("A")
    if alpha.getextrema() == (255, 255):
        return image.convert("RGB"), None
    white = Image.new("RGB", image.size, (255, 255, 255))
    return Image.composite(image.convert("RGB"), white, alpha), alpha


def _to_rgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Convert any remaining mode to RGB; return the ICC profile that now describes the pixels."""
    space = _profile_space(icc) if icc else None
    if image.mode == "CMYK":
        if space == "CMYK":
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))  # type: ignore[arg-type]
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
            assert converted is not None
            return converted, _srgb_profile()
        return image.convert("RGB"), None  # no profile: Pillow's naive conversion
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image, icc if space == "RGB" else None  # a grey/CMYK profile cannot describe RGB pixels


def _check_regular_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file not found") from None
    except PermissionError:
        raise ImageLoadError(f"{path}: permission denied") from None
    if not stat.S_ISREG(mode):
        raise ImageLoadError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")


def load_photo(path: Path, max_pixels: int) -> Photo:
    """Decode a photo file defensively (see the module docstring); raise ImageLoadError with a one-line reason.

    For files named by the user or the config (``process``, style images). Photos from
    the inbox are read through :mod:`pipeline.photo_file` and decoded with :func:`decode_photo`.
    """
    _check_regular_file(path)
    return _decode(path, str(path), max_pixels)


def decode_photo(data: bytes, label: str, max_pixels: int) -> Photo:
    """Decode a photo from its bytes (read through a verified descriptor, or sent to a worker).

    ``label`` names the photo in error messages (its path or file name).
    """
    if not data:
        raise ImageLoadError(f"{label}: empty file (0 bytes)")
    return _decode(io.BytesIO(data), label, max_pixels)


def _decode(source: Path | io.BytesIO, label: str, max_pixels: int) -> Photo:
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own bomb check (errors at 2x) stays on as a backstop
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise ImageLoadError(
                        f"{label}: {width}x{height} is {width * height / 1e6:.1f} megapixels, over "
                        f"limits.max_pixels ({max_pixels / 1e6:.1f} MP)"
                    )
                fmt = opened.format or "unknown"
                frames = int(getattr(opened, "n_frames", 1))
                opened.load()
                icc = opened.info.get("icc_profile") or None
                upright = ImageOps.exif_transpose(opened)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"{label}: not an image, or a format photostyle cannot read") from None
    except Image.DecompressionBombError as exc:
        # Pillow's backstop fires inside Image.open (before our own size check) for anything over
        # twice the limit, so this is the usual path for a huge image: name the setting that
        # refused it, as the check above does, rather than only Pillow's doubled pixel figure.
        raise ImageLoadError(
            f"{label}: refused before decoding, over limits.max_pixels ({max_pixels / 1e6:.1f} megapixels): {exc}"
        ) from None
    except PermissionError:
        raise ImageLoadError(f"{label}: permission denied") from None
    except FileNotFoundError:
        raise ImageLoadError(f"{label}: file disappeared while reading") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageLoadError(f"{label}: damaged or truncated image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit  # a process-wide setting: leave it as found
    exif = upright.getexif()
    if len(exif):
        exif[ORIENTATION_TAG] = 1
    if upright.mode in HIGH_BIT_MODES:
        upright = _scale_high_bit(upright)
    rgb, alpha = _split_alpha(upright)
    rgb, icc = _to_rgb(rgb, icc)
    return Photo(image=rgb, alpha=alpha, exif=exif if len(exif) else None, icc_profile=icc, format=fmt, frames=frames)


def resize_long_edge(image: Image.Image, long_edge: int, min_short: int = 1) -> Image.Image:
    """Lanczos resize so the longer side is ``long_edge`` px, keeping the aspect ratio.

    ``min_short`` raises the scale when the short side would end up smaller (a
    panorama at a small working size must still pass through VGG19's poolings).
    """
    width, height = image.size
    scale = max(long_edge / max(width, height), min_short / min(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def encode(
    image: Image.Image,
    fmt: str,
    *,
    quality: int,
    alpha: Image.Image | None = None,
    exif: Image.Exif | None = None,
    icc_profile: bytes | None = None,
) -> bytes:
    """Encode to ``jpeg``/``png``/``webp``; alpha is kept where the format can hold it (not JPEG)."""
    if alpha is not None and fmt in ("png", "webp"):
        image = image.convert("RGBA")
        image.putalpha(alpha if alpha.size == image.size else alpha.resize(image.size, Image.Resampling.LANCZOS))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    options: dict[str, object] = {}
    if fmt in ("jpeg", "webp"):
        options["quality"] = quality
    if exif is not None:
        options["exif"] = exif.tobytes()
    if icc_profile:
        options["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    image.save(buffer, format=PIL_FORMATS[fmt], **options)
    return buffer.getvalue()
