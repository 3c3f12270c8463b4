"""Reading photos defensively and encoding results (files are written by :mod:`pipeline.files.fileops`).

Reading, in this order, each step before anything costlier:

1. **The format is sniffed from the first bytes** (:func:`sniff_format`, :data:`HEAD_BYTES`
   of them): JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC/HEIF, AVIF. Anything else is
   refused there, and Pillow is only asked to parse the format the bytes claim,
   never to guess among its dozens of others (EPS, PSD, TGA, …).
2. **The header** gives the size and the mode. Over ``limits.max_pixels`` is
   refused; so is a photo whose **decode cost** (:func:`decode_cost`: the pixels in
   the mode Pillow decodes to, plus the copies the steps below make) is over what
   an 8-bit RGB photo of ``max_pixels`` would need (:func:`decode_budget`).
3. **Decoding and normalising**: every mode a camera, phone or editor produces
   becomes upright 8-bit RGB plus an optional alpha mask: EXIF orientation
   applied, palette and greyscale expanded, CMYK converted through its ICC
   profile, 16-bit and float scaled (Pillow's own ``convert`` clips it to white),
   HEIC/HEIF through pillow-heif, animations by their first frame. Each step
   drops the previous copy of the pixels before the next, so the decode cost of
   every mode stays within 8 bytes a pixel (JPEG, PNG, TIFF, GIF, BMP).
4. **Metadata that cannot be used is dropped, not fatal**: unreadable EXIF, or a
   CMYK profile no colour transform can be built from, becomes a line in
   :attr:`Photo.warnings` and the photo is still read. :func:`encode` likewise
   drops EXIF or an ICC profile the output format cannot hold (64 KB of EXIF in
   a JPEG) and says so.

A photo that fails to decode gives its memory back (:func:`pipeline.job.memory.release_memory`).

Writing: into a temp file in the target folder, fsynced, then hard-linked to the
first free name (``stem.ext``, ``stem-1.ext``, …). ``link`` fails if the name
exists, so an existing file is never overwritten, and a sync client never sees a
half-written output under the final name.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageChops, ImageCms, ImageOps, UnidentifiedImageError

from pipeline.errors import ImageLoadError
from pipeline.job.memory import release_memory
from pipeline.files.photo_file import load_error, open_regular

try:  # phone photos: HEIC/HEIF
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - a declared dependency; degrade to "cannot read HEIF"
    pillow_heif = None

log = logging.getLogger("photostyle")

EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}
PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
ORIENTATION_TAG = 0x0112
HIGH_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}

# --- sniffing ------------------------------------------------------------------------------------

HEAD_BYTES = 64
"""How many bytes from the start of a file :func:`sniff_format` needs (an ISO-BMFF ``ftyp`` box with 10 brands)."""

READABLE = "JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC/HEIF or AVIF"
NOT_AN_IMAGE = f"not an image, or a format photostyle cannot read (its first bytes are not {READABLE})"

_PREFIXES = (
    (b"\xff\xd8\xff", "JPEG"),  # also MPO (a JPEG with more pictures after it), which Pillow's JPEG opener returns
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    # TIFF and BigTIFF, either byte order (Pillow also reads the two mixed-up orders some writers produce)
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"MM*\x00", "TIFF"), (b"II\x00*", "TIFF"),
    (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),
)
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}  # the DIB headers Pillow reads
_WEBP_CHUNKS = {b"VP8 ", b"VP8L", b"VP8X"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_ISO_CONTAINER_BRANDS = {b"mif1", b"msf1"}  # HEIF or AVIF: the compatible brands tell
# Pillow opener IDs to try for each sniffed format, in order.
_OPENERS = {"HEIF": ("HEIF", "AVIF"), "AVIF": ("AVIF", "HEIF")}


def sniff_format(head: bytes) -> str | None:
    """The format of a file from its first :data:`HEAD_BYTES` bytes, or None when it is none photostyle reads.

    One of ``"JPEG"``, ``"PNG"``, ``"WEBP"``, ``"TIFF"``, ``"BMP"``, ``"GIF"``, ``"HEIF"``,
    ``"AVIF"`` (Pillow's format names). A match means "worth decoding", not "valid":
    the decoder still checks everything after the signature.
    """
    for prefix, name in _PREFIXES:
        if head.startswith(prefix):
            return name
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:16] in _WEBP_CHUNKS:
        return "WEBP"
    if head[4:8] == b"ftyp":
        major = head[8:12]
        if major in _HEIF_BRANDS:
            return "HEIF"
        if major in _AVIF_BRANDS:
            return "AVIF"
        if major in _ISO_CONTAINER_BRANDS:
            box_end = min(len(head), int.from_bytes(head[0:4], "big"))
            compatible = {head[i:i + 4] for i in range(16, box_end - 3, 4)}
            return "AVIF" if compatible & _AVIF_BRANDS else "HEIF"
    return None


def head_problem(head: bytes) -> str | None:
    """Why a file starting with ``head`` is not worth reading further, in one line; None when it may be a photo.

    For intake: read :data:`HEAD_BYTES` (fewer if the file is shorter) and refuse the
    file before hashing or reading the rest of it.
    """
    if not head:
        return "empty file (0 bytes)"
    sniffed = sniff_format(head)
    if sniffed is None:
        return NOT_AN_IMAGE
    if not _openers(sniffed):
        return f"a {sniffed} image, which this installation cannot decode"
    return None


def _openers(fmt: str) -> list[str]:
    Image.init()
    return [name for name in _OPENERS.get(fmt, (fmt,)) if name in Image.OPEN]


# --- decode cost ---------------------------------------------------------------------------------

BUDGET_BYTES_PER_PIXEL = 8
"""Decode memory allowed per pixel of ``limits.max_pixels``: what an 8-bit RGB photo needs (Pillow keeps RGB in
4 bytes a pixel, and turning it upright holds the old and the new pixels at once)."""

_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}  # Pillow: all others 4
# Bytes a pixel the decoder itself holds beside Pillow's image while it decodes, measured as
# tests/test_hostile2_memory.py measures (peak resident size, 10 and 24 MP): Pillow's WebP decoder keeps libwebp's
# two canvases and a copy of the frame (16.4 bytes a pixel in all); libheif and libavif their planes (8-9, 9.4-9.9).
_DECODER_BYTES = {"WEBP": 13, "HEIF": 5, "AVIF": 6}
_MODE_NAMES = {
    "1": "1-bit", "L": "greyscale", "P": "palette", "I": "32-bit greyscale", "F": "floating-point greyscale",
    "LA": "greyscale+alpha", "PA": "palette+alpha", "RGB": "RGB", "RGBA": "RGBA", "CMYK": "CMYK",
}
RELEASE_FROM_BYTES = 32 << 20  # a failed decode that may have used less is not worth a garbage collection


def decode_cost(mode: str, fmt: str, pixels: int, *, transparent: bool = True) -> int:
    """Peak bytes :func:`load_photo` needs to decode a photo of ``pixels`` in Pillow ``mode`` and format ``fmt``.

    The largest of: decoding (the image as Pillow stores the mode, plus the
    decoder's own buffers for WebP, HEIF and AVIF); turning it upright (assumed:
    the orientation may only be known once decoded); and converting to 8-bit RGB
    plus alpha (16-bit and float scaled to 8-bit grey in bands, then RGB; a mode
    with ``transparent`` pixels through RGBA, split into bands and merged).
    """
    stored = _STORED_BYTES.get(mode, 4)
    if mode in HIGH_BIT_MODES:
        convert = max(stored + 1, 1 + 4)
    elif transparent or mode not in ("1", "L", "P", "RGB"):
        convert = max(stored + 4, 8)
    else:
        convert = stored + (4 if mode != "RGB" else 0)
    per_pixel = max(stored + _DECODER_BYTES.get(fmt, 0), 2 * stored, convert)
    return per_pixel * pixels


def decode_budget(max_pixels: int) -> int:
    """The decode cost allowed with ``limits.max_pixels``: that many pixels of 8-bit RGB."""
    return BUDGET_BYTES_PER_PIXEL * max_pixels


def _size_text(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"


def _pixels_text(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels} pixels"


def _describe(mode: str, fmt: str) -> str:
    name = "16-bit greyscale" if mode.startswith("I;16") else _MODE_NAMES.get(mode, f"mode {mode}")
    return f"{name} {fmt}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# --- decoding ------------------------------------------------------------------------------------


@dataclass
class Photo:
    """A decoded photo: upright RGB pixels plus what a faithful output needs to carry."""

    image: Image.Image  # mode "RGB", EXIF orientation applied; transparent areas flattened on white
    alpha: Image.Image | None  # mode "L" mask when the source had (non-opaque) transparency
    exif: Image.Exif | None  # orientation reset to 1, since the pixels are upright
    icc_profile: bytes | None  # an RGB profile describing ``image``'s pixels
    format: str  # sniffed from the content, e.g. "JPEG", "PNG", "HEIF"
    frames: int  # > 1 for animations; only the first frame is used
    warnings: list[str] = field(default_factory=list)  # metadata dropped because it could not be used


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _profile_space(icc: bytes) -> str | None:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except (OSError, ImageCms.PyCMSError, AttributeError, ValueError, TypeError):
        return None


_BAND_PIXELS = 1 << 18  # float64 arithmetic on this many pixels at a time: a few MB, whatever the photo's size


def _scale_high_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale to 8-bit by scaling the range, not clipping it.

    Done in bands of rows: converting the whole image to float64 at once costs 8
    bytes a pixel per temporary (a 100 MP 16-bit PNG took 2.7 GB that way).
    """
    width, height = image.size
    if image.mode.startswith("I;16"):
        divisor, multiplier = 257.0, 1.0  # 0..65535 -> 0..255
    else:
        high = image.getextrema()[1] if width and height else 0
        divisor = 257.0 if image.mode == "I" and high > 255 else 1.0  # type: ignore[operator]
        multiplier = 255.0 if image.mode == "F" and high <= 1.0 else 1.0  # type: ignore[operator]
    scaled = Image.new("L", image.size)
    rows = max(1, _BAND_PIXELS // max(1, width))
    for top in range(0, height, rows):
        values = np.asarray(image.crop((0, top, width, min(height, top + rows))), dtype=np.float64)
        values = values * multiplier if multiplier != 1.0 else values / divisor if divisor != 1.0 else values
        scaled.paste(Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)), (0, top))
    return scaled


def _split_alpha(owned: list[Image.Image]) -> tuple[Image.Image, Image.Image | None]:
    """RGB flattened on white, plus the alpha mask when anything is not fully opaque.

    Takes the image out of ``owned`` (the caller's only reference), so each copy
    made here can free the one before: at most 8 bytes a pixel at once.
    """
    image = owned.pop()
    # A tRNS chunk marks transparency in palette PNGs and also, as one "colour key", in greyscale and
    # RGB PNGs; without this the keyed colour would show as an opaque block instead of transparency.
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info or image.mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode != "RGBA":
        return image, None
    if image.getextrema()[3] == (255, 255):
        return image.convert("RGB"), None
    red, green, blue, alpha = image.split()
    del image
    rgb = Image.merge("RGB", (red, green, blue))
    del red, green, blue
    # Flatten on white: rgb * a + white * (1 - a), in place (Pillow blends a fill through a mask exactly so).
    rgb.paste((255, 255, 255), mask=ImageChops.invert(alpha))
    return rgb, alpha


def _to_rgb(image: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    """Convert any remaining mode to RGB; return the ICC profile that now describes the pixels."""
    space = _profile_space(icc) if icc else None
    if image.mode == "CMYK":
        if space == "CMYK":
            try:
                srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
                source = ImageCms.ImageCmsProfile(io.BytesIO(icc))  # type: ignore[arg-type]
                converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
            except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
                notes.append(f"its CMYK colour profile cannot be used ({_one_line(exc)}); dropped, and the colours "
                             "converted without it")
            else:
                assert converted is not None
                return converted, _srgb_profile()
        return image.convert("RGB"), None  # no usable profile: Pillow's naive conversion
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image, icc if space == "RGB" else None  # a grey/CMYK profile cannot describe RGB pixels


def _upright(image: Image.Image, notes: list[str]) -> Image.Exif | None:
    """Turn ``image`` upright in place by its EXIF orientation; its EXIF (orientation 1), or None.

    EXIF that cannot be parsed is dropped with a note; the photo is then left as stored.
    """
    try:
        ImageOps.exif_transpose(image, in_place=True)  # reads the EXIF, turns the pixels, drops the tag
        exif = image.getexif()
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError, struct.error) as exc:
        notes.append(f"its EXIF cannot be read ({_one_line(exc)}); dropped, and the photo not turned by it")
        return None
    if not len(exif):
        return None
    exif[ORIENTATION_TAG] = 1
    return exif


def _detached(image: Image.Image) -> Image.Image:
    """The decoded pixels (not a copy) in a plain Image, so the file object can go, and a decoder's buffers with it.

    Pillow's WebP image keeps its decoder, with two full canvases of 4 bytes a pixel, for as long as the image
    lives: 12 bytes a pixel held through the whole job for a 4-byte RGB image.
    """
    return image._new(image.im)


def load_photo(path: Path, max_pixels: int) -> Photo:
    """Decode a photo file defensively (see the module docstring); raise ImageLoadError with a one-line reason.

    For files named by the user or the config (``process``, style images). Photos from
    the inbox are read through :mod:`pipeline.files.photo_file` and decoded with :func:`decode_photo`.
    """
    try:  # opened as every file others may plant is; the config may name a style image through a link
        file = open(path, "rb", opener=lambda name, flags: open_regular(Path(name), follow_links=True)[0])
    except OSError as exc:
        raise load_error(path, exc) from None
    with file:
        if os.fstat(file.fileno()).st_size == 0:
            raise ImageLoadError(f"{path}: empty file (0 bytes)")
        return _decode(file, str(path), max_pixels)


def decode_photo(data: bytes, label: str, max_pixels: int) -> Photo:
    """Decode a photo from its bytes (read through a verified descriptor, or sent to a worker).

    ``label`` names the photo in error messages (its path or file name).
    """
    if not data:
        raise ImageLoadError(f"{label}: empty file (0 bytes)")
    return _decode(io.BytesIO(data), label, max_pixels)


@dataclass
class _Progress:
    """How far a decode got, for the failure path: whether it may have allocated enough to give back."""

    cost: int = 0


def _decode(source: BinaryIO, label: str, max_pixels: int) -> Photo:
    """:func:`_decode_pixels` with every failure as one line, raised once its frames (and pixels) are gone."""
    progress = _Progress()
    try:
        return _decode_pixels(source, label, max_pixels, progress)
    except ImageLoadError as exc:
        reason = str(exc)
    except UnidentifiedImageError:
        reason = f"{label}: not an image photostyle can read (it starts like one, but its header is damaged " \
                 "or of a kind the decoder does not support)"
    except Image.DecompressionBombError as exc:
        # Pillow's backstop fires inside Image.open (before our own size check) for anything over
        # twice the limit, so this is the usual path for a huge image: name the setting that
        # refused it, as the check above does, rather than only Pillow's doubled pixel figure.
        reason = f"{label}: refused before decoding, over limits.max_pixels ({max_pixels / 1e6:.1f} megapixels): {exc}"
    except PermissionError:
        reason = f"{label}: permission denied"
    except FileNotFoundError:
        reason = f"{label}: file disappeared while reading"
    except MemoryError:
        reason = f"{label}: not enough memory to decode it (about {_size_text(progress.cost)} needed)"
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
            OverflowError, RuntimeError, struct.error, ImageCms.PyCMSError) as exc:
        reason = f"{label}: damaged or truncated image ({_one_line(exc)})"
    # Out of the except clauses: the failed decode's traceback, and the pixels its frames held, are gone.
    if progress.cost >= RELEASE_FROM_BYTES:
        release_memory()
    raise ImageLoadError(reason)


def _decode_pixels(source: BinaryIO, label: str, max_pixels: int, progress: _Progress) -> Photo:
    head = source.read(HEAD_BYTES)
    source.seek(0)
    problem = head_problem(head)
    if problem is not None:
        raise ImageLoadError(f"{label}: {problem}")
    sniffed = sniff_format(head)
    assert sniffed is not None
    openers = _openers(sniffed)
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own bomb check (errors at 2x) stays on as a backstop
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source, formats=openers)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageLoadError(
                    f"{label}: {width}x{height} is {width * height / 1e6:.1f} megapixels, over "
                    f"limits.max_pixels ({max_pixels / 1e6:.1f} MP)"
                )
            fmt = image.format or sniffed
            transparent = "transparency" in image.info or "A" in image.getbands()
            cost = decode_cost(image.mode, fmt, width * height, transparent=transparent)
            budget = decode_budget(max_pixels)
            if cost > budget:
                raise ImageLoadError(
                    f"{label}: decoding this {width}x{height} {_describe(image.mode, fmt)} needs about "
                    f"{_size_text(cost)}, over the {_size_text(budget)} limits.max_pixels "
                    f"({_pixels_text(max_pixels)}) allows ({BUDGET_BYTES_PER_PIXEL} bytes a pixel, as for 8-bit RGB); "
                    "raise limits.max_pixels to take it"
                )
            progress.cost = cost
            frames = int(getattr(image, "n_frames", 1))
            image.load()
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit  # a process-wide setting: leave it as found
    notes: list[str] = []
    icc = image.info.get("icc_profile") or None
    exif = _upright(image, notes)  # before detaching: a TIFF's EXIF is read through its file
    owned = [_detached(image)]  # the only reference from here on, so each conversion can free the copy before it
    del image
    if owned[0].mode in HIGH_BIT_MODES:
        owned[0] = _scale_high_bit(owned[0])
    rgb, alpha = _split_alpha(owned)
    rgb, icc = _to_rgb(rgb, icc, notes)
    return Photo(image=rgb, alpha=alpha, exif=exif, icc_profile=icc, format=fmt, frames=frames, warnings=notes)


def resize_long_edge(image: Image.Image, long_edge: int, min_short: int = 1) -> Image.Image:
    """Lanczos resize so the longer side is ``long_edge`` px, keeping the aspect ratio.

    ``min_short`` raises the scale when the short side would end up smaller (a
    panorama at a small working size must still pass through VGG19's poolings).
    """
    width, height = image.size
    scale = max(long_edge / max(width, height), min_short / min(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


# --- encoding ------------------------------------------------------------------------------------

_METADATA_NAMES = {"exif": "EXIF", "icc_profile": "ICC profile"}
# What Pillow raises when a format cannot hold a piece of metadata ("EXIF data is too long" for JPEG's
# 64 KB segment, libwebp's mux refusing a chunk, …).
_SAVE_ERRORS = (ValueError, OSError, RuntimeError, TypeError, struct.error)


def _save(image: Image.Image, fmt: str, options: dict[str, object]) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=PIL_FORMATS[fmt], **options)
    return buffer.getvalue()


def encode(
    image: Image.Image,
    fmt: str,
    *,
    quality: int,
    alpha: Image.Image | None = None,
    exif: Image.Exif | None = None,
    icc_profile: bytes | None = None,
    dropped: list[str] | None = None,
) -> bytes:
    """Encode to ``jpeg``/``png``/``webp``; alpha is kept where the format can hold it (not JPEG).

    EXIF and the ICC profile are carried when the format can hold them. One that
    cannot be written (a 1 MB EXIF block in a JPEG, EXIF Pillow cannot serialise)
    is left out, and a line saying so is appended to ``dropped`` (logged as a
    warning when no list is given): metadata never costs the result.
    """
    if alpha is not None and fmt in ("png", "webp"):
        image = image.convert("RGBA")
        image.putalpha(alpha if alpha.size == image.size else alpha.resize(image.size, Image.Resampling.LANCZOS))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    options: dict[str, object] = {}
    if fmt in ("jpeg", "webp"):
        options["quality"] = quality
    notes: list[str] = []
    metadata: dict[str, bytes] = {}
    if exif is not None:
        try:
            metadata["exif"] = exif.tobytes()
        except (ValueError, TypeError, KeyError, OverflowError, struct.error) as exc:
            notes.append(f"EXIF dropped: it cannot be written out again ({_one_line(exc)})")
    if icc_profile:
        metadata["icc_profile"] = icc_profile
    try:
        data = _save(image, fmt, {**options, **metadata})
    except _SAVE_ERRORS:
        if not metadata:
            raise
        data = _save_without_what_fails(image, fmt, options, metadata, notes)
    if dropped is not None:
        dropped.extend(notes)
    else:
        for note in notes:
            log.warning("%s", note)
    return data


def _save_without_what_fails(image: Image.Image, fmt: str, options: dict[str, object], metadata: dict[str, bytes],
                             notes: list[str]) -> bytes:
    """Encode with each piece of ``metadata`` the format accepts on its own; note the ones left out."""
    kept: dict[str, bytes] = {}
    for key, value in metadata.items():
        try:
            _save(image, fmt, {**options, key: value})
        except _SAVE_ERRORS as exc:
            notes.append(f"{_METADATA_NAMES[key]} dropped: {len(value)} bytes that {PIL_FORMATS[fmt]} cannot hold "
                         f"({_one_line(exc)})")
        else:
            kept[key] = value
    try:
        return _save(image, fmt, {**options, **kept})
    except _SAVE_ERRORS as exc:  # each fits alone, not together
        notes.extend(f"{_METADATA_NAMES[key]} dropped: {PIL_FORMATS[fmt]} cannot hold it with the rest "
                     f"({_one_line(exc)})" for key in kept)
        return _save(image, fmt, options)
