"""Tests for ``pipeline.job.imageio``: reading every kind of photo people drop in, and writing results safely.

Every image is made here, in ``tmp_path``, with Pillow/numpy (and, for the CMYK
case, an ICC profile written byte by byte), so the tests need nothing outside
the repository and run in about a second.
"""

from __future__ import annotations

import errno
import io
import itertools
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from pipeline.errors import ImageLoadError
from pipeline.files.fileops import write_new_file
from pipeline.job.imageio import (
    HEAD_BYTES,
    NOT_AN_IMAGE,
    decode_budget,
    decode_cost,
    decode_photo,
    encode,
    head_problem,
    load_photo,
    resize_long_edge,
    sniff_format,
)

ORIENTATION = 0x0112
MAKE = 0x010F
MODEL = 0x0110
LIMIT = 10_000_000  # a max_pixels no test image comes near, unless it means to


@pytest.fixture(autouse=True)
def _restore_pillow_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_photo sets Pillow's process-wide MAX_IMAGE_PIXELS; put it back so later tests are unaffected."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


# --- helpers -----------------------------------------------------------------------------------


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def marked_photo(size: tuple[int, int] = (60, 40)) -> Image.Image:
    """Grey landscape image with a red block in the top-left corner (where the sensor's origin is)."""
    image = Image.new("RGB", size, (128, 128, 128))
    image.paste((255, 0, 0), (0, 0, 12, 12))
    return image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims ``width`` x ``height`` greyscale pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _lab_from_srgb(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """CIELAB (D50) of an sRGB colour, for the synthetic profile's table."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz_d50 = np.array(
        [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]
    )
    xyz = to_xyz_d50 @ linear / np.array([0.9642, 1.0, 0.8249])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def synthetic_cmyk_profile(*, with_table: bool = True) -> bytes:
    """A valid ICC v2 CMYK input profile (A2B0 lut16, 2-point grid) with deliberately odd inks.

    Cyan ink prints magenta, magenta prints yellow, yellow prints cyan (a rotation of
    Pillow's naive ``1 - ink`` formula), so a conversion that ignored the profile is
    unmistakable: pure cyan comes out (255, 0, 255), not (0, 255, 255).

    ``with_table=False`` leaves the A2B0 table out: a profile that parses (a CMYK
    input profile, by its header) but from which no transform can be built
    (``PyCMSError: cannot build transform``), as some damaged files carry.
    """

    def ink_rgb(c: int, m: int, y: int, k: int) -> tuple[float, float, float]:
        return 255 * (1 - y) * (1 - k), 255 * (1 - c) * (1 - k), 255 * (1 - m) * (1 - k)

    clut = b""
    for c, m, y, k in itertools.product((0, 1), repeat=4):  # first channel varies slowest (ICC order)
        lightness, a, b = _lab_from_srgb(ink_rgb(c, m, y, k))
        clut += struct.pack(">3H", round(lightness / 100 * 0xFF00), round((a + 128) * 256), round((b + 128) * 256))
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    linear_table = struct.pack(">2H", 0, 0xFFFF)
    lut = b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + identity + struct.pack(">HH", 2, 2)
    lut += linear_table * 4 + clut + linear_table * 3
    text = b"photostyle test CMYK"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text) + 1) + text + b"\0" + bytes(8) + bytes(3) + bytes(67)
    white = b"XYZ " + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    copyright_ = b"text" + bytes(4) + b"public domain\0"
    tags = [(b"desc", desc), (b"wtpt", white), (b"cprt", copyright_)] + ([(b"A2B0", lut)] if with_table else [])
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", offset + len(body)) + b"lcms" + struct.pack(">I", 0x02100000) + b"scnrCMYKLab "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + bytes(4) + bytes(4) + bytes(8) + bytes(8)
        + struct.pack(">I", 0) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(4) + bytes(16) + bytes(28)
    )
    assert len(header) == 128
    return header + table + body


def _profile_space(icc: bytes) -> str:
    return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()


def system_cmyk_profiles() -> list[Path]:
    """CMYK profiles installed on this machine (colord, ghostscript), if any."""
    roots = [Path("/usr/share/color/icc"), Path("/usr/share/ghostscript/iccprofiles")]
    roots += list(Path("/usr/share/ghostscript").glob("*/iccprofiles"))
    found = []
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.suffix.lower() in (".icc", ".icm"):
                try:
                    if _profile_space(path.read_bytes()) == "CMYK":
                        found.append(path)
                except (OSError, ImageCms.PyCMSError):
                    continue
    return found


def cmyk_patches() -> Image.Image:
    """Blocks of pure inks and mixes, so the profile's whole table is exercised."""
    inks = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0), (128, 64, 0, 30)]
    image = Image.new("CMYK", (8 * len(inks), 8))
    for i, ink in enumerate(inks):
        image.paste(ink, (8 * i, 0, 8 * i + 8, 8))
    return image


def assert_one_line_error(exc: pytest.ExceptionInfo[ImageLoadError], path: Path) -> str:
    message = str(exc.value)
    assert str(path) in message
    assert "\n" not in message
    return message


# --- EXIF orientation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "rotations", "marker_corner"),
    [(6, -1, "top-right"), (8, 1, "bottom-left")],  # 6: viewer turns 90° clockwise; 8: counter-clockwise
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, rotations: int, marker_corner: str) -> None:
    original = marked_photo((60, 40))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = "Acme"
    path = tmp_path / "sideways.jpg"
    original.save(path, exif=exif.tobytes(), quality=95)

    photo = load_photo(path, LIMIT)

    assert photo.image.size == (40, 60)  # width and height swapped: the photo is now upright
    got = pixels(photo.image)
    expected = np.rot90(pixels(original), k=rotations)
    assert np.abs(got - expected).mean() < 3
    corners = {"top-left": got[3, 3], "top-right": got[3, -4], "bottom-left": got[-4, 3], "bottom-right": got[-4, -4]}
    for name, value in corners.items():
        is_red = value[0] > 200 and value[1] < 60 and value[2] < 60
        assert is_red == (name == marker_corner), f"{name}: {value}"
    assert photo.exif is not None
    assert photo.exif[ORIENTATION] == 1  # the pixels are upright, so viewers must not rotate again
    assert photo.exif[MAKE] == "Acme"


# --- modes -------------------------------------------------------------------------------------


def _two_halves(mode: str, left: object, right: object, size: tuple[int, int] = (20, 10)) -> Image.Image:
    image = Image.new(mode, size, right)  # type: ignore[arg-type]
    image.paste(left, (0, 0, size[0] // 2, size[1]))  # type: ignore[arg-type]
    return image


def test_greyscale_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    _two_halves("L", 30, 200).save(path)
    photo = load_photo(path, LIMIT)
    assert photo.image.mode == "RGB"
    assert photo.image.getpixel((2, 2)) == (30, 30, 30)
    assert photo.image.getpixel((17, 7)) == (200, 200, 200)
    assert photo.alpha is None


def test_palette_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = _two_halves("P", 1, 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.save(path)
    photo = load_photo(path, LIMIT)
    assert photo.image.mode == "RGB"
    assert photo.image.getpixel((2, 2)) == (200, 100, 50)
    assert photo.image.getpixel((17, 7)) == (10, 20, 30)
    assert photo.alpha is None


def test_palette_with_trns_is_flattened_on_white_with_a_mask(tmp_path: Path) -> None:
    path = tmp_path / "palette-trns.png"
    image = _two_halves("P", 1, 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.save(path, transparency=1)  # palette entry 1 (the left half) is transparent: a tRNS chunk
    photo = load_photo(path, LIMIT)
    assert photo.image.mode == "RGB"
    assert photo.image.getpixel((2, 2)) == (255, 255, 255)
    assert photo.image.getpixel((17, 7)) == (255, 0, 0)
    assert photo.alpha is not None
    assert photo.alpha.getpixel((2, 2)) == 0
    assert photo.alpha.getpixel((17, 7)) == 255


@pytest.mark.parametrize(("mode", "key", "other"), [("L", 50, 200), ("RGB", (0, 0, 255), (200, 40, 40))])
def test_colour_key_trns_in_grey_and_rgb_png_is_transparency(
    tmp_path: Path, mode: str, key: object, other: object
) -> None:
    """Greyscale and RGB PNGs mark one colour transparent with tRNS; it must not show as an opaque block."""
    path = tmp_path / f"key-{mode}.png"
    _two_halves(mode, key, other).save(path, transparency=key)
    photo = load_photo(path, LIMIT)
    assert photo.image.mode == "RGB"
    assert photo.image.getpixel((2, 2)) == (255, 255, 255)
    assert photo.image.getpixel((17, 7)) == ((200,) * 3 if mode == "L" else other)
    assert photo.alpha is not None
    assert photo.alpha.getpixel((2, 2)) == 0 and photo.alpha.getpixel((17, 7)) == 255


@pytest.mark.parametrize(
    ("mode", "transparent", "opaque", "opaque_rgb"),
    [("LA", (0, 0), (60, 255), (60, 60, 60)), ("RGBA", (0, 0, 255, 0), (0, 128, 0, 255), (0, 128, 0))],
)
def test_alpha_modes_are_flattened_on_white_with_a_mask(
    tmp_path: Path, mode: str, transparent: tuple[int, ...], opaque: tuple[int, ...], opaque_rgb: tuple[int, ...]
) -> None:
    path = tmp_path / f"{mode}.png"
    _two_halves(mode, transparent, opaque).save(path)
    photo = load_photo(path, LIMIT)
    assert photo.image.mode == "RGB"
    assert photo.image.getpixel((2, 2)) == (255, 255, 255)  # not the hidden blue/black under alpha 0
    assert photo.image.getpixel((17, 7)) == opaque_rgb
    assert photo.alpha is not None and photo.alpha.mode == "L"
    assert photo.alpha.getpixel((2, 2)) == 0
    assert photo.alpha.getpixel((17, 7)) == 255


def test_semi_transparent_pixels_are_blended_on_white(tmp_path: Path) -> None:
    path = tmp_path / "half.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 128)).save(path)
    photo = load_photo(path, LIMIT)
    assert all(abs(v - 127) <= 1 for v in photo.image.getpixel((3, 3)))
    assert photo.alpha is not None and photo.alpha.getpixel((3, 3)) == 128


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_fully_opaque_alpha_gives_no_mask(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "opaque.png"
    Image.new(mode, (8, 8), (90, 255) if mode == "LA" else (1, 2, 3, 255)).save(path)
    photo = load_photo(path, LIMIT)
    assert photo.image.mode == "RGB"
    assert photo.alpha is None


def test_alpha_survives_encode_for_png_and_webp_but_not_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cutout.png"
    _two_halves("RGBA", (0, 0, 0, 0), (200, 40, 40, 255)).save(path)
    photo = load_photo(path, LIMIT)

    for fmt in ("png", "webp"):
        with Image.open(io.BytesIO(encode(photo.image, fmt, quality=100, alpha=photo.alpha))) as out:
            assert out.mode == "RGBA", fmt
            assert out.getpixel((2, 2))[3] == 0, fmt
            assert out.getpixel((17, 7))[3] == 255, fmt
    with Image.open(io.BytesIO(encode(photo.image, "jpeg", quality=95, alpha=photo.alpha))) as out:
        assert out.mode == "RGB"
        assert min(out.getpixel((2, 2))) > 240  # flattened on white


def test_alpha_mask_is_resized_to_the_encoded_image(tmp_path: Path) -> None:
    """Stylisation runs at the working size: the full-size mask must follow the smaller result."""
    mask = _two_halves("L", 0, 255, size=(40, 20))
    small = Image.new("RGB", (20, 10), (10, 200, 10))
    with Image.open(io.BytesIO(encode(small, "png", quality=90, alpha=mask))) as out:
        assert out.size == (20, 10)
        assert out.getpixel((1, 5))[3] == 0
        assert out.getpixel((18, 5))[3] == 255


# --- CMYK --------------------------------------------------------------------------------------


def _check_cmyk_through_profile(tmp_path: Path, icc: bytes) -> Image.Image:
    path = tmp_path / "print.jpg"
    cmyk_patches().save(path, quality=100, icc_profile=icc)
    with Image.open(path) as opened:
        decoded_cmyk = opened.copy()
    expected = ImageCms.profileToProfile(
        decoded_cmyk, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    assert expected is not None

    photo = load_photo(path, LIMIT)

    assert photo.format == "JPEG"
    assert photo.image.mode == "RGB"
    assert np.abs(pixels(photo.image) - pixels(expected)).max() <= 1
    # The pixels are now sRGB, so the CMYK profile must not travel with them.
    assert photo.icc_profile is not None and _profile_space(photo.icc_profile) == "RGB"
    return photo.image


def test_cmyk_jpeg_is_converted_through_its_embedded_profile(tmp_path: Path) -> None:
    image = _check_cmyk_through_profile(tmp_path, synthetic_cmyk_profile())
    cyan = np.asarray(image.getpixel((4, 4)))
    assert np.abs(cyan - (255, 0, 255)).max() < 20  # what the profile says cyan ink looks like...
    assert np.abs(cyan - (0, 255, 255)).max() > 200  # ...not Pillow's profile-blind formula


@pytest.mark.parametrize("profile", system_cmyk_profiles() or [None], ids=lambda p: p.name if p else "none")
def test_cmyk_jpeg_with_an_installed_profile(tmp_path: Path, profile: Path | None) -> None:
    if profile is None:
        pytest.skip("no CMYK .icc profile installed (/usr/share/color/icc, ghostscript iccprofiles)")
    _check_cmyk_through_profile(tmp_path, profile.read_bytes())


def test_cmyk_jpeg_without_profile_gets_sensible_colours(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    cmyk_patches().save(path, quality=100)
    photo = load_photo(path, LIMIT)
    assert photo.image.mode == "RGB"
    expected = [(0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 0, 0), (255, 255, 255)]
    for i, colour in enumerate(expected):
        got = np.asarray(photo.image.getpixel((8 * i + 4, 4)))
        assert np.abs(got - colour).max() < 12, (i, got)
    assert photo.icc_profile is None


def test_cmyk_profile_no_transform_can_be_built_from_is_dropped_with_a_warning(tmp_path: Path) -> None:
    """Pillow raised ``PyCMSError: cannot build transform`` out of the loader: the photo failed as an internal error."""
    path = tmp_path / "print.jpg"
    cmyk_patches().save(path, quality=100, icc_profile=synthetic_cmyk_profile(with_table=False))
    photo = load_photo(path, LIMIT)
    assert photo.image.mode == "RGB" and photo.icc_profile is None
    [warning] = photo.warnings
    assert "CMYK colour profile cannot be used" in warning and "cannot build transform" in warning
    assert "\n" not in warning
    cyan = np.asarray(photo.image.getpixel((4, 4)))
    assert np.abs(cyan - (0, 255, 255)).max() < 12  # converted as if it had no profile


# --- 16-bit, HEIF, sniffing --------------------------------------------------------------------


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "mid-grey-16.png"
    Image.fromarray(np.full((10, 12), 32768, dtype=np.uint16)).save(path)
    photo = load_photo(path, LIMIT)
    assert photo.image.mode == "RGB"
    assert all(abs(v - 128) <= 1 for v in photo.image.getpixel((5, 5)))  # not 255


def test_16_bit_gradient_keeps_its_ordering(tmp_path: Path) -> None:
    path = tmp_path / "ramp-16.png"
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(path)
    values = pixels(load_photo(path, LIMIT).image)[..., 0].ravel()
    assert values[0] == 0 and values[-1] == 255
    assert np.all(np.diff(values) >= 0)
    assert len(np.unique(values)) > 200  # a ramp, not a few clipped steps


def test_heic_opens_through_pillow_heif(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("the installed libheif has no HEIF (HEVC) encoder")
    path = tmp_path / "phone.heic"
    try:
        _two_halves("RGB", (200, 30, 40), (30, 60, 200), size=(64, 32)).save(path, format="HEIF", quality=95)
    except (OSError, ValueError, RuntimeError) as exc:  # pragma: no cover - depends on libheif's build
        pytest.skip(f"the installed libheif cannot encode HEIF: {exc}")

    photo = load_photo(path, LIMIT)

    assert photo.format == "HEIF"
    assert photo.image.mode == "RGB" and photo.image.size == (64, 32)
    assert np.abs(np.asarray(photo.image.getpixel((8, 16))) - (200, 30, 40)).max() < 20
    assert np.abs(np.asarray(photo.image.getpixel((56, 16))) - (30, 60, 200)).max() < 20


def test_format_is_sniffed_from_content_not_the_name(tmp_path: Path) -> None:
    png_named_jpg = tmp_path / "really-a-png.jpg"
    jpeg_named_png = tmp_path / "really-a-jpeg.png"
    Image.new("RGB", (10, 8), (1, 2, 3)).save(png_named_jpg, format="PNG")
    Image.new("RGB", (10, 8), (100, 150, 200)).save(jpeg_named_png, format="JPEG", quality=95)

    png = load_photo(png_named_jpg, LIMIT)
    jpeg = load_photo(jpeg_named_png, LIMIT)

    assert png.format == "PNG" and png.image.getpixel((4, 4)) == (1, 2, 3)
    assert jpeg.format == "JPEG"
    assert np.abs(np.asarray(jpeg.image.getpixel((4, 4))) - (100, 150, 200)).max() < 6


def _encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (16, 12), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 200 if mode in ("L", "P", "1") else None).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode", "expected"),
    [("JPEG", "RGB", "JPEG"), ("JPEG", "CMYK", "JPEG"), ("PNG", "RGBA", "PNG"), ("GIF", "P", "GIF"),
     ("WEBP", "RGB", "WEBP"), ("WEBP", "RGBA", "WEBP"), ("TIFF", "RGB", "TIFF"), ("BMP", "RGB", "BMP"),
     ("BMP", "1", "BMP"), ("HEIF", "RGB", "HEIF"), ("AVIF", "RGB", "AVIF")],
)
def test_sniff_format_knows_each_format_the_loader_reads(fmt: str, mode: str, expected: str) -> None:
    try:
        data = _encoded(fmt, mode)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:  # pragma: no cover - HEIF/AVIF encoders vary
        pytest.skip(f"cannot write {fmt} here: {exc}")
    assert sniff_format(data[:HEAD_BYTES]) == expected
    assert decode_photo(data, "x", LIMIT).format == expected


def test_sniff_format_knows_bigtiff_and_both_byte_orders() -> None:
    for head in (b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00", b"MM\x00+\x00\x08\x00\x00"):
        assert sniff_format(head + bytes(HEAD_BYTES)) == "TIFF"


def test_sniff_format_tells_heif_from_avif_by_the_ftyp_brands() -> None:
    def ftyp(major: bytes, *compatible: bytes) -> bytes:
        body = b"ftyp" + major + b"\x00\x00\x00\x00" + b"".join(compatible)
        return (len(body) + 4).to_bytes(4, "big") + body + b"\x00\x00\x00\x08meta"

    assert sniff_format(ftyp(b"heic", b"mif1", b"heic")) == "HEIF"
    assert sniff_format(ftyp(b"avif", b"mif1", b"avif")) == "AVIF"
    assert sniff_format(ftyp(b"mif1", b"mif1", b"avif", b"miaf")) == "AVIF"
    assert sniff_format(ftyp(b"mif1", b"mif1", b"heic")) == "HEIF"
    assert sniff_format(ftyp(b"isom", b"isom", b"mp41")) is None  # an MP4 video
    assert sniff_format(ftyp(b"qt  ")) is None  # a QuickTime movie


@pytest.mark.parametrize(
    "head",
    [b"", b"\xff\xd8", b"shopping list\nmilk\n", b"%PDF-1.7\n", b"PK\x03\x04" + bytes(40), b"\x1f\x8b\x08\x00" + bytes(20),
     b"RIFF\x24\x00\x00\x00WAVEfmt ", b"RIFF\x24\x00\x00\x00WEBPjunk", b"BMW 320d, 2009, blue" + bytes(20),
     b"P6\n16 12\n255\n", b"\x00\x00\x01\x00\x01\x00", b"8BPS\x00\x01", b"%!PS-Adobe-3.0 EPSF-3.0\n", bytes(64)],
    ids=["empty", "half-jpeg-magic", "text", "pdf", "zip", "gzip", "wav", "riff-not-vp8", "text-starting-BM",
         "ppm", "ico", "psd", "eps", "zeros"],
)
def test_sniff_format_refuses_everything_else(head: bytes) -> None:
    assert sniff_format(head) is None


def test_head_problem_is_what_intake_refuses_a_file_for_before_reading_it() -> None:
    assert head_problem(_encoded("PNG")[:HEAD_BYTES]) is None
    assert head_problem(_encoded("JPEG")[:3]) is None  # a head shorter than HEAD_BYTES: the file is that short
    assert head_problem(b"") == "empty file (0 bytes)"
    assert head_problem(b"PK\x03\x04" + bytes(60)) == NOT_AN_IMAGE
    assert "JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC/HEIF or AVIF" in NOT_AN_IMAGE and "\n" not in NOT_AN_IMAGE


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX", "SGI", "QOI", "EPS"])
def test_formats_pillow_reads_but_photostyle_does_not_accept_are_refused_unparsed(tmp_path: Path, fmt: str) -> None:
    """Pillow can parse dozens of formats (EPS runs Ghostscript); only the ones the README lists are tried.

    Before the sniff, each of these was decoded as a photo.
    """
    path = tmp_path / f"photo.{fmt.lower()}"
    try:
        Image.new("RGB", (16, 12), (10, 20, 30)).save(path, format=fmt)
    except (OSError, KeyError) as exc:  # EPS needs Ghostscript to write
        pytest.skip(f"Pillow cannot write {fmt} here: {exc}")
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, LIMIT)
    message = assert_one_line_error(exc, path)
    assert NOT_AN_IMAGE in message


def test_the_loader_reads_only_the_head_of_a_file_that_is_not_an_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "archive.jpg"
    with path.open("wb") as file:
        file.write(b"PK\x03\x04")
        file.truncate(64 << 20)  # sparse: 64 MB that are never written to disk
    reads: list[int] = []
    real_open = open

    class Counting(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            reads.append(len(data))
            return data

    monkeypatch.setattr("builtins.open", lambda file, mode="r", *args, **kwargs: Counting(
        real_open(file, "rb", buffering=0)) if str(file) == str(path) else real_open(file, mode, *args, **kwargs))
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, LIMIT)
    assert NOT_AN_IMAGE in assert_one_line_error(exc, path)
    assert 0 < sum(reads) <= HEAD_BYTES


def test_animated_gif_loads_its_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (10, 10), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    photo = load_photo(path, LIMIT)
    assert photo.format == "GIF"
    assert photo.frames == 3
    assert photo.image.mode == "RGB"
    assert photo.image.getpixel((5, 5)) == (255, 0, 0)


# --- pixel limit -------------------------------------------------------------------------------


def test_huge_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(60_000, 60_000))  # 3.6 gigapixels in ~100 bytes
    began = time.perf_counter()
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, max_pixels=1_000_000)
    assert time.perf_counter() - began < 1.0  # decoding 3.6 GP would take minutes and ~3.6 GB
    message = assert_one_line_error(exc, path)
    assert "megapixels" in message
    assert "max_pixels" in message


def test_header_just_over_the_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    """Between 1x and 2x the limit Pillow only warns: the loader's own check must refuse it."""
    path = tmp_path / "big.png"
    path.write_bytes(png_claiming(1500, 1000))
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, max_pixels=1_000_000)
    message = assert_one_line_error(exc, path)
    assert "1500x1000" in message and "megapixels" in message and "max_pixels" in message


def test_real_image_just_over_a_small_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (1200, 1000), (10, 20, 30)).save(path)
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, max_pixels=1_000_000)
    assert "max_pixels" in assert_one_line_error(exc, path)
    assert load_photo(path, max_pixels=1_200_000).image.size == (1200, 1000)  # exactly at the limit is fine


def test_decode_cost_counts_mode_bit_depth_and_decoder() -> None:
    megapixel = 1_000_000
    assert decode_budget(100 * megapixel) == 800 * megapixel  # 8 bytes a pixel: 8-bit RGB, turned upright
    assert decode_cost("RGB", "JPEG", megapixel) == 8 * megapixel
    assert decode_cost("RGB", "JPEG", megapixel, transparent=False) == 8 * megapixel
    assert decode_cost("L", "PNG", megapixel, transparent=False) == 5 * megapixel  # 1 byte, then RGB
    assert decode_cost("I;16", "PNG", megapixel) == 5 * megapixel  # 2 bytes, 8-bit grey in bands, then RGB
    assert decode_cost("F", "TIFF", megapixel) == 8 * megapixel  # 4 bytes, twice while turned upright
    assert decode_cost("RGBA", "PNG", megapixel) == 8 * megapixel
    assert decode_cost("CMYK", "JPEG", megapixel) == 8 * megapixel
    assert decode_cost("RGB", "WEBP", megapixel) > decode_budget(megapixel)  # libwebp's two canvases beside Pillow's


def test_photo_whose_decode_cost_is_over_the_budget_is_refused_before_decoding(tmp_path: Path) -> None:
    """A WebP decodes through two full canvases of libwebp's plus Pillow's image: 17 bytes a pixel, not 8.

    Within ``max_pixels``, it is refused with the estimate and the setting to raise;
    a JPEG of the same size is taken.
    """
    webp, jpeg = tmp_path / "big.webp", tmp_path / "big.jpg"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(webp, quality=90)
    Image.new("RGB", (40, 30), (10, 20, 30)).save(jpeg, quality=90)
    with pytest.raises(ImageLoadError) as exc:
        load_photo(webp, max_pixels=1200)
    message = assert_one_line_error(exc, webp)
    assert "40x30 RGB WEBP needs about 20 KB" in message and "limits.max_pixels" in message
    assert "raise limits.max_pixels" in message
    assert load_photo(jpeg, max_pixels=1200).image.size == (40, 30)
    assert load_photo(webp, max_pixels=3 * 1200).image.size == (40, 30)  # a limit over 17/8 as large takes it


# --- one-line errors ---------------------------------------------------------------------------


def test_text_file_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list\nmilk\neggs\n")
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, LIMIT)
    assert "not an image" in assert_one_line_error(exc, path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    full = tmp_path / "full.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, quality=90)
    path = tmp_path / "half.jpg"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, LIMIT)
    assert "truncated" in assert_one_line_error(exc, path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, LIMIT)
    assert "empty" in assert_one_line_error(exc, path)


def test_directory(tmp_path: Path) -> None:
    path = tmp_path / "album.jpg"
    path.mkdir()
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, LIMIT)
    assert "not a regular file" in assert_one_line_error(exc, path)


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_photo(path, LIMIT)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=5)
    if worker.is_alive():  # unblock the reader so the thread can finish, then fail
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("load_photo blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ImageLoadError), outcome
    message = str(outcome[0])
    assert str(path) in message and "\n" not in message
    assert "not a regular file" in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, LIMIT)
    assert "not found" in assert_one_line_error(exc, path)


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root, which can read a chmod 000 file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "private.jpg"
    Image.new("RGB", (8, 8)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(ImageLoadError) as exc:
            load_photo(path, LIMIT)
    finally:
        path.chmod(0o644)
    assert "permission denied" in assert_one_line_error(exc, path)


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same as above where chmod cannot stop us (root): opening the file raises EACCES."""
    import builtins

    path = tmp_path / "private.jpg"
    Image.new("RGB", (8, 8)).save(path)
    real_open = builtins.open

    def refusing_open(file: object, *args: object, **kwargs: object) -> object:
        if str(file) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(ImageLoadError) as exc:
        load_photo(path, LIMIT)
    monkeypatch.undo()
    assert "permission denied" in assert_one_line_error(exc, path)


# --- writing -----------------------------------------------------------------------------------


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_write_new_file_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    payloads = [b"first", b"second", b"third"]
    written = [write_new_file(data, folder, "holiday", ".jpg") for data in payloads]
    assert [p.name for p in written] == ["holiday.jpg", "holiday-1.jpg", "holiday-2.jpg"]
    assert [p.read_bytes() for p in written] == payloads  # earlier results untouched
    assert _hidden(folder) == []  # no temp files left behind
    assert sorted(p.name for p in folder.iterdir()) == ["holiday-1.jpg", "holiday-2.jpg", "holiday.jpg"]


def test_write_new_file_leaves_a_users_file_alone(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    folder.mkdir()
    mine = folder / "holiday.jpg"
    mine.write_bytes(b"the user's own edit")
    target = write_new_file(b"result", folder, "holiday", ".jpg")
    assert target.name == "holiday-1.jpg" and target.read_bytes() == b"result"
    assert mine.read_bytes() == b"the user's own edit"
    assert _hidden(folder) == []


def test_write_new_file_without_hard_links_still_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some file systems (exFAT, some network shares) refuse link(); the rename fallback must be as safe."""

    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"mine")
    written = [write_new_file(data, folder, "holiday", ".jpg") for data in (b"a", b"b")]
    assert [p.name for p in written] == ["holiday-1.jpg", "holiday-2.jpg"]
    assert [p.read_bytes() for p in written] == [b"a", b"b"]
    assert (folder / "holiday.jpg").read_bytes() == b"mine"
    assert _hidden(folder) == []


# --- metadata ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_carries_exif_and_icc(fmt: str) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 1
    exif[MAKE] = "Acme"
    exif[MODEL] = "Pocket 3"
    icc = srgb_icc()
    data = encode(marked_photo(), fmt, quality=90, exif=exif, icc_profile=icc)
    with Image.open(io.BytesIO(data)) as out:
        assert out.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
        out.load()
        got = out.getexif()
        assert got[ORIENTATION] == 1 and got[MAKE] == "Acme" and got[MODEL] == "Pocket 3"
        assert out.info.get("icc_profile") == icc


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_without_metadata_adds_none(fmt: str) -> None:
    with Image.open(io.BytesIO(encode(marked_photo(), fmt, quality=90))) as out:
        out.load()
        assert len(out.getexif()) == 0
        assert not out.info.get("icc_profile")


def test_loaded_metadata_round_trips_through_encode(tmp_path: Path) -> None:
    path = tmp_path / "camera.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[MAKE] = "Acme"
    icc = srgb_icc()  # made once: the profile's header records the second it was created
    marked_photo().save(path, exif=exif.tobytes(), icc_profile=icc)
    photo = load_photo(path, LIMIT)
    assert photo.icc_profile == icc
    data = encode(photo.image, "jpeg", quality=90, exif=photo.exif, icc_profile=photo.icc_profile)
    with Image.open(io.BytesIO(data)) as out:
        assert out.size == (40, 60)
        assert out.getexif()[ORIENTATION] == 1 and out.getexif()[MAKE] == "Acme"
        assert out.info.get("icc_profile") == icc


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_drops_exif_the_format_cannot_hold_and_says_so(fmt: str) -> None:
    """A 1 MB EXIF block (a PNG or WebP can carry one) raised ``EXIF data is too long`` writing a JPEG."""
    exif = Image.Exif()
    exif[MAKE] = "Acme"
    exif[0x9286] = b"ASCII\x00\x00\x00" + b"x" * 1_000_000  # UserComment
    icc = srgb_icc()
    dropped: list[str] = []
    data = encode(marked_photo(), fmt, quality=90, exif=exif, icc_profile=icc, dropped=dropped)
    with Image.open(io.BytesIO(data)) as out:
        out.load()
        assert out.size == (60, 40)
        assert out.info.get("icc_profile") == icc  # what fits is still carried
        if fmt == "jpeg":
            assert len(out.getexif()) == 0
            [note] = dropped
            assert note.startswith("EXIF dropped") and "JPEG cannot hold" in note and "too long" in note
        else:  # PNG and WebP chunks hold it
            assert out.getexif()[MAKE] == "Acme" and dropped == []


def test_encode_drops_an_icc_profile_the_format_cannot_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = Image.Image.save

    def refuse_profiles(self: Image.Image, fp: object, format: str | None = None, **params: object) -> None:
        if params.get("icc_profile"):
            raise ValueError("ICC profile is too long")
        real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", refuse_profiles)
    exif = Image.Exif()
    exif[MAKE] = "Acme"
    dropped: list[str] = []
    data = encode(marked_photo(), "jpeg", quality=90, exif=exif, icc_profile=b"x" * 100, dropped=dropped)
    with Image.open(io.BytesIO(data)) as out:
        assert out.getexif()[MAKE] == "Acme" and not out.info.get("icc_profile")
    assert dropped == ["ICC profile dropped: 100 bytes that JPEG cannot hold (ICC profile is too long)"]


def test_encode_still_raises_what_is_not_about_metadata() -> None:
    with pytest.raises(KeyError):
        encode(marked_photo(), "gif", quality=90)


# --- resize ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "long_edge", "expected"),
    [((400, 300), 100, (100, 75)), ((300, 400), 100, (75, 100)), ((64, 48), 256, (256, 192)), ((97, 13), 50, (50, 7))],
)
def test_resize_long_edge(size: tuple[int, int], long_edge: int, expected: tuple[int, int]) -> None:
    resized = resize_long_edge(Image.new("RGB", size), long_edge)
    assert resized.size == expected
    assert max(resized.size) == long_edge
    # Aspect ratio kept: the short edge is the original's, scaled by the same factor, to the nearest pixel.
    scale = long_edge / max(size)
    assert abs(min(resized.size) - min(size) * scale) <= 0.5
    assert (resized.size[0] >= resized.size[1]) == (size[0] >= size[1])


def test_resize_long_edge_keeps_content_in_place() -> None:
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # right half white
    resized = resize_long_edge(image, 50)
    assert resized.size == (50, 25)
    assert resized.getpixel((5, 12))[0] < 10 and resized.getpixel((45, 12))[0] > 245
