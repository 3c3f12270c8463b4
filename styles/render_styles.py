"""Render photostyle's drawn style images (``ink_wash``, ``cubist``).

Why these images are generated
------------------------------
Most bundled styles are public-domain paintings (see ``SOURCES.md``).  Two looks
no painting in the bundle offers are drawn here instead: a monochrome ink wash
and an angular, muted cubist one.  Because the project's own code produces every
pixel, the images are licence-free and may be shipped with the project, and
because every style is drawn from a fixed seed they are reproducible: the same
code with the same Pillow (and numpy) version yields identical pixels.  Nothing depends on
the clock, the hash seed or the iteration order of sets.

Each style is a 512x512 RGB image with strong texture at several scales
(strokes, edges, colour contrast), which is what the Gatys style loss feeds on.

Regenerating
------------
Run from the repository root::

    python styles/render_styles.py            # writes into styles/
    python styles/render_styles.py OUTDIR     # writes into OUTDIR

The module can also be imported by path; ``STYLES`` lists the style names and
``render(name)`` returns the image for one of them.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

SIZE = 512
"""Edge length in pixels of every rendered style image."""

SS = 2
"""Supersampling factor for vector drawing; the result is downsampled."""

Color = tuple[int, int, int]
Point = tuple[float, float]


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------


def _clamp(value: float) -> int:
    """Round and clamp a channel value to 0..255."""
    return max(0, min(255, int(round(value))))


def _scale(c: Color, factor: float) -> Color:
    """Brighten (factor > 1) or darken (factor < 1) a colour."""
    return (_clamp(c[0] * factor), _clamp(c[1] * factor), _clamp(c[2] * factor))


def _jitter(rng: random.Random, c: Color, amount: int) -> Color:
    """Perturb each channel of a colour by up to +-amount."""
    return (
        _clamp(c[0] + rng.randint(-amount, amount)),
        _clamp(c[1] + rng.randint(-amount, amount)),
        _clamp(c[2] + rng.randint(-amount, amount)),
    )


def _noise(rng: random.Random, size: int, cells: int) -> Image.Image:
    """Smooth value noise: ``cells`` x ``cells`` random bytes scaled up to ``size``."""
    small = Image.frombytes("L", (cells, cells), rng.randbytes(cells * cells))
    return small.resize((size, size), Image.Resampling.BICUBIC)


def _finish(img: Image.Image) -> Image.Image:
    """Downsample a supersampled drawing to the final size."""
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return img.convert("RGB")


def _to_image(arr: np.ndarray) -> Image.Image:
    """Convert a float HxWx3 array (0..255) into an RGB image."""
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _bezier(p0: Point, p1: Point, p2: Point, steps: int) -> list[Point]:
    """Points along a quadratic Bezier curve."""
    pts = []
    for i in range(steps + 1):
        t = i / steps
        u = 1.0 - t
        pts.append((u * u * p0[0] + 2 * u * t * p1[0] + t * t * p2[0],
                    u * u * p0[1] + 2 * u * t * p1[1] + t * t * p2[1]))
    return pts


def _offset_curve(curve: Sequence[Point], offsets: Sequence[float]) -> list[Point]:
    """Shift each point of a polyline sideways (along its normal) by ``offsets``."""
    out = []
    n = len(curve)
    for i, (x, y) in enumerate(curve):
        ax, ay = curve[max(0, i - 1)]
        bx, by = curve[min(n - 1, i + 1)]
        dx, dy = bx - ax, by - ay
        norm = math.hypot(dx, dy) or 1.0
        out.append((x - dy / norm * offsets[i], y + dx / norm * offsets[i]))
    return out


def _tapered_polygon(curve: Sequence[Point], widths: Sequence[float]) -> list[Point]:
    """Outline of a brush stroke of varying width along a centre line."""
    left = _offset_curve(curve, [w / 2 for w in widths])
    right = _offset_curve(curve, [-w / 2 for w in widths])
    return left + right[::-1]


# --------------------------------------------------------------------------
# Ink wash (sumi-e)
# --------------------------------------------------------------------------

PAPER: Color = (238, 226, 198)
INK: Color = (22, 20, 24)


def _paper(rng: random.Random, size: int) -> Image.Image:
    """Warm rice paper with soft blotches and fine fibres."""
    tone = np.asarray(_noise(rng, size, 12), np.float32) / 255.0 - 0.5
    fibre = np.asarray(_noise(rng, size, size // 3), np.float32) / 255.0 - 0.5
    base = np.array(PAPER, np.float32)
    arr = base[None, None, :] * (1.0 + 0.05 * tone[..., None] + 0.05 * fibre[..., None])
    img = _to_image(arr)
    draw = ImageDraw.Draw(img, "RGBA")
    for _ in range(700):
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        a = rng.uniform(0, math.pi)
        ln = rng.uniform(6, 26)
        draw.line((x, y, x + ln * math.cos(a), y + ln * math.sin(a)),
                  fill=(200, 184, 150, 60), width=1)
    return img


def _ink(img: Image.Image, mask: Image.Image, strength: float) -> Image.Image:
    """Lay ink through a greyscale mask with the given opacity."""
    alpha = mask.point(lambda v: int(v * strength))
    return Image.composite(Image.new("RGB", img.size, INK), img, alpha)


def _ridge(rng: random.Random, base_y: float, rough: float, size: int) -> list[Point]:
    """A mountain ridge: a few peaks plus midpoint-displacement roughness."""
    heights = [base_y + rng.uniform(-rough, rough), base_y + rng.uniform(-rough, rough)]
    amp = rough
    while len(heights) < 129:
        nxt = []
        for a, b in zip(heights, heights[1:]):
            nxt += [a, (a + b) / 2 + rng.uniform(-amp, amp)]
        heights = nxt + [heights[-1]]
        amp *= 0.58
    step = size / (len(heights) - 1)
    peaks = [(rng.uniform(0, size), rng.uniform(0.08, 0.2) * size, rng.uniform(0.06, 0.14) * size)
             for _ in range(rng.randint(2, 3))]
    ridge = []
    for i, h in enumerate(heights):
        x = i * step
        lift = sum(ph * math.exp(-(((x - px) / pw) ** 2)) for px, ph, pw in peaks)
        ridge.append((x, h - lift))
    return ridge


def _mountains(img: Image.Image, rng: random.Random) -> Image.Image:
    """Layers of misty mountains: pale far ridges, darker near ones, fading into mist."""
    size = img.size[0]
    layers = ((0.42, 0.07, 0.3), (0.56, 0.06, 0.5), (0.74, 0.05, 0.8))
    rows = np.arange(size, dtype=np.float32)[:, None] + 0.5
    for base, rough, strength in layers:
        ridge = _ridge(rng, base * size, rough * size, size)
        crest = np.interp(np.arange(size) + 0.5, [p[0] for p in ridge], [p[1] for p in ridge])
        depth = (rows - crest[None, :].astype(np.float32)) / (0.16 * size)
        fade = np.where(depth >= 0, np.clip(1.0 - depth, 0, 1) ** 1.4, 0.0)
        wash = Image.fromarray((fade * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(SS))
        texture = _noise(rng, size, 48).point(lambda v: 120 + v * 135 // 255)
        img = _ink(img, ImageChops.multiply(wash, texture), strength)
        img = _ridge_line(img, rng, ridge, strength)
    return img


def _ridge_line(img: Image.Image, rng: random.Random, ridge: list[Point], strength: float) -> Image.Image:
    """Dark calligraphic contour along a ridge, broken where the brush lifts."""
    mask = Image.new("L", img.size, 0)
    draw = ImageDraw.Draw(mask)
    i = 0
    while i < len(ridge) - 4:
        run = rng.randint(8, 30)
        seg = ridge[i:i + run + 1]
        w = rng.uniform(1.5, 5.0) * SS
        widths = [w * math.sin(math.pi * (k + 0.5) / len(seg)) ** 0.5 for k in range(len(seg))]
        if len(seg) > 2:
            draw.polygon(_tapered_polygon(seg, widths), fill=rng.randint(150, 255))
        i += run + rng.randint(2, 12)
    for _ in range(int(60 * strength)):  # moss dots along the crest
        x, y = ridge[rng.randrange(len(ridge))]
        y += rng.uniform(-2, 10) * SS
        r = rng.uniform(1.2, 3.2) * SS
        draw.ellipse((x - r, y - r * 0.7, x + r, y + r * 0.7), fill=rng.randint(160, 255))
    return _ink(img, mask.filter(ImageFilter.GaussianBlur(0.8)), min(1.0, strength + 0.3))


def _brush_stroke(draw: ImageDraw.ImageDraw, rng: random.Random, curve: Sequence[Point],
                  width: float, taper: Callable[[float], float], density: int) -> None:
    """A dry-brush stroke: many bristle lines that thin out and skip near the end."""
    bristles = max(4, int(width / (1.2 * SS)))
    n = len(curve)
    for b in range(bristles):
        off = (b + 0.5) / bristles - 0.5
        end = n - int(rng.random() * abs(off) * 1.6 * n)
        offsets = [off * width * taper(k / (n - 1)) for k in range(n)]
        line = _offset_curve(curve, offsets)[:max(2, end)]
        tone = _clamp(density * rng.uniform(0.75, 1.0))
        start = 0
        while start < len(line) - 1:
            gap_at = start + rng.randint(3, n)
            draw.line(line[start:gap_at + 1], fill=tone, width=int(1.6 * SS) + 1, joint="curve")
            start = gap_at + (rng.randint(1, 2) if rng.random() < 0.35 * abs(off) * 2 else 0)


def _bamboo(img: Image.Image, rng: random.Random) -> Image.Image:
    """Bamboo stalks with nodes and clusters of tapering leaves."""
    s = SS
    mask = Image.new("L", img.size, 0)
    draw = ImageDraw.Draw(mask)
    for sx, lean, width, tone in ((400, -0.08, 17, 200), (452, 0.05, 13, 255), (335, -0.15, 9, 120)):
        y = SIZE + 10.0
        x = float(sx)
        while y > rng.uniform(10, 90):
            seg = rng.uniform(55, 90)
            p0, p2 = (x * s, y * s), ((x + lean * seg) * s, (y - seg + 5) * s)
            curve = _bezier(p0, ((p0[0] + p2[0]) / 2 + rng.uniform(-2, 2) * s, (p0[1] + p2[1]) / 2), p2, 16)
            _brush_stroke(draw, rng, curve, width * s, lambda t: 0.92 + 0.08 * abs(2 * t - 1), tone)
            node = (p2[0] - width * s * 0.6, p2[1] + 2 * s, p2[0] + width * s * 0.6, p2[1] + 6 * s)
            draw.arc(node, 180, 360, fill=255, width=3 * s)
            x, y = x + lean * seg, y - seg
            if rng.random() < 0.75:
                _leaf_cluster(draw, rng, (x * s, y * s), tone)
    return _ink(img, mask.filter(ImageFilter.GaussianBlur(0.6 * s)), 0.95)


def _leaf_cluster(draw: ImageDraw.ImageDraw, rng: random.Random, at: Point, tone: int) -> None:
    """Three to five leaves fanning out from a node, each a single tapered stroke."""
    base = rng.choice((-1, 1)) * rng.uniform(0.3, 1.2) + math.pi / 2
    for _ in range(rng.randint(3, 5)):
        ang = base + rng.uniform(-0.8, 0.8)
        ln = rng.uniform(45, 85) * SS
        tip = (at[0] + ln * math.cos(ang), at[1] + ln * math.sin(ang))
        bend = (at[0] + ln * 0.5 * math.cos(ang + 0.25), at[1] + ln * 0.5 * math.sin(ang + 0.25))
        curve = _bezier(at, bend, tip, 20)
        width = rng.uniform(8, 12) * SS
        _brush_stroke(draw, rng, curve, width, lambda t: math.sin(math.pi * min(1.0, 0.15 + t)) ** 0.6, tone)


def _washes(img: Image.Image, rng: random.Random) -> Image.Image:
    """Soft grey pools of diluted ink with a darker rim where the water dried."""
    size = img.size[0]
    for _ in range(4):
        mask = Image.new("L", img.size, 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = rng.uniform(0.05, 0.75) * size, rng.uniform(0.7, 0.98) * size
        for _ in range(5):
            rx, ry = rng.uniform(0.04, 0.14) * size, rng.uniform(0.02, 0.06) * size
            dx, dy = rng.uniform(-0.08, 0.08) * size, rng.uniform(-0.03, 0.03) * size
            draw.ellipse((cx + dx - rx, cy + dy - ry, cx + dx + rx, cy + dy + ry), fill=255)
        body = mask.filter(ImageFilter.GaussianBlur(size / 90))
        rim = ImageChops.subtract(body, mask.filter(ImageFilter.GaussianBlur(size / 40)))
        img = _ink(img, body, rng.uniform(0.12, 0.35))
        img = _ink(img, rim.point(lambda v: min(255, v * 3)), 0.35)
    return img


def _seal(img: Image.Image) -> Image.Image:
    """A small red artist's seal with carved white lines."""
    s = SS
    draw = ImageDraw.Draw(img)
    x0, y0, w = 34 * s, 440 * s, 38 * s
    draw.rounded_rectangle((x0, y0, x0 + w, y0 + w), radius=4 * s, fill=(178, 34, 30))
    for k in range(3):
        yy = y0 + (9 + 10 * k) * s
        draw.line((x0 + 7 * s, yy, x0 + w - 7 * s, yy), fill=(236, 200, 180), width=2 * s)
    draw.line((x0 + w // 2, y0 + 6 * s, x0 + w // 2, y0 + w - 6 * s), fill=(236, 200, 180), width=2 * s)
    return img


def _birds(img: Image.Image, rng: random.Random) -> Image.Image:
    """A few distant birds, each two flicks of the brush."""
    draw = ImageDraw.Draw(img)
    for _ in range(7):
        x, y = rng.uniform(90, 300) * SS, rng.uniform(50, 140) * SS
        w = rng.uniform(5, 9) * SS
        draw.line([(x - w, y - w * 0.3), (x - w * 0.4, y - w * 0.4), (x, y)], fill=INK, width=SS + 1, joint="curve")
        draw.line([(x, y), (x + w * 0.5, y - w * 0.5), (x + w, y - w * 0.2)], fill=INK, width=SS + 1, joint="curve")
    return img


def ink_wash() -> Image.Image:
    """Sumi-e: misty mountains, ink washes and dry-brush bamboo on warm paper."""
    rng = random.Random(4004)
    img = _paper(rng, SIZE * SS)
    img = _mountains(img, rng)
    img = _washes(img, rng)
    img = _bamboo(img, rng)
    img = _birds(img, rng)
    return _finish(_seal(img))


# --------------------------------------------------------------------------
# Cubist
# --------------------------------------------------------------------------

CUBIST_PALETTE: list[Color] = [
    (196, 152, 82),   # ochre
    (160, 104, 58),   # raw sienna
    (136, 132, 122),  # warm grey
    (84, 104, 128),   # slate blue
    (74, 60, 46),     # umber
    (222, 206, 170),  # pale cream
    (122, 128, 104),  # grey green
]
OUTLINE: Color = (38, 30, 26)


def _cut_lines(rng: random.Random, count: int) -> list[tuple[float, float, float]]:
    """Random straight lines across the canvas as (nx, ny, offset), |n| = 1."""
    lines = []
    for _ in range(count):
        ang = rng.uniform(0, math.pi)
        nx, ny = math.cos(ang), math.sin(ang)
        px, py = rng.uniform(0.1, 0.9) * SIZE, rng.uniform(0.1, 0.9) * SIZE
        lines.append((nx, ny, nx * px + ny * py))
    return lines


def _planes(rng: random.Random, lines: list[tuple[float, float, float]]) -> np.ndarray:
    """The canvas cut into planes by the lines, each shaded dark on one side of
    its nearest cut and light on the other (Cezanne's passage)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    signed = np.stack([xs * nx + ys * ny - c for nx, ny, c in lines])
    code = np.zeros((SIZE, SIZE), dtype=np.int64)
    for i in range(len(lines)):
        code |= (signed[i] > 0).astype(np.int64) << i
    regions, label = np.unique(code, return_inverse=True)
    colours = np.array([_jitter(rng, rng.choice(CUBIST_PALETTE), 12) for _ in regions], np.float64)
    nearest = np.argmin(np.abs(signed), axis=0)
    s = np.take_along_axis(signed, nearest[None], axis=0)[0]
    side = np.where(s > 0, -1.0, 1.0) * np.where(nearest % 2 == 0, 1.0, -1.0)
    ramp = np.exp(-np.abs(s) / 38.0)
    shade = 1.0 + 0.38 * side * ramp
    return colours[label.reshape(SIZE, SIZE)] * shade[..., None]


def _facet(rng: random.Random, scale: float) -> list[Point]:
    """A random angular convex polygon around a random centre."""
    cx, cy = rng.uniform(-0.05, 1.05) * SIZE, rng.uniform(-0.05, 1.05) * SIZE
    n = rng.randint(3, 5)
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
    return [(cx + scale * rng.uniform(0.5, 1.0) * math.cos(a),
             cy + scale * rng.uniform(0.5, 1.0) * math.sin(a)) for a in angles]


def _inside(poly: list[Point], x: float, y: float) -> bool:
    """Whether (x, y) lies inside a convex polygon with counter-clockwise corners."""
    for (ax, ay), (bx, by) in zip(poly, poly[1:] + poly[:1]):
        if (bx - ax) * (y - ay) - (by - ay) * (x - ax) < 0:
            return False
    return True


def _shade_facet(img: Image.Image, rng: random.Random, poly: list[Point], colour: Color) -> None:
    """Fill a facet with a light-to-dark gradient at partial opacity."""
    s = SS
    pts = [(x * s, y * s) for x, y in poly]
    x0 = max(0, int(min(p[0] for p in pts)))
    y0 = max(0, int(min(p[1] for p in pts)))
    x1 = min(img.size[0], int(max(p[0] for p in pts)) + 1)
    y1 = min(img.size[1], int(max(p[1] for p in pts)) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in pts], fill=int(255 * rng.uniform(0.55, 0.85)))
    ang = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:y1 - y0, 0:x1 - x0].astype(np.float32)
    proj = xs * math.cos(ang) + ys * math.sin(ang)
    t = (proj - proj.min()) / max(1.0, float(np.ptp(proj)))
    light, dark = np.array(_scale(colour, 1.3), np.float32), np.array(_scale(colour, 0.5), np.float32)
    fill = _to_image(light + (dark - light) * t[..., None] ** 0.7)
    img.paste(fill, (x0, y0), mask)


def _hatch(draw: ImageDraw.ImageDraw, rng: random.Random, poly: list[Point], colour: Color) -> None:
    """Short parallel brush strokes (Cezanne's constructive hatching) inside a facet."""
    s = SS
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    ang = rng.uniform(0, math.pi)
    dx, dy = math.cos(ang), math.sin(ang)
    area = (max(xs) - min(xs)) * (max(ys) - min(ys))
    for _ in range(int(area / 60)):
        x, y = rng.uniform(min(xs), max(xs)), rng.uniform(min(ys), max(ys))
        ln = rng.uniform(5, 11)
        if not (_inside(poly, x, y) and _inside(poly, x + dx * ln, y + dy * ln)):
            continue
        tone = _scale(colour, rng.choice((0.65, 0.8, 1.2)))
        draw.line((s * x, s * y, s * (x + dx * ln), s * (y + dy * ln)), fill=tone + (110,), width=int(2.6 * s))


def _outline(draw: ImageDraw.ImageDraw, rng: random.Random, poly: list[Point]) -> None:
    """Dark contours on most edges of a facet, some overshooting the corner."""
    s = SS
    for a, b in zip(poly, poly[1:] + poly[:1]):
        if rng.random() < 0.35:
            continue
        over = rng.uniform(0.0, 0.3) if rng.random() < 0.4 else 0.0
        ex, ey = b[0] + (b[0] - a[0]) * over, b[1] + (b[1] - a[1]) * over
        draw.line((a[0] * s, a[1] * s, ex * s, ey * s), fill=OUTLINE + (rng.randint(170, 255),),
                  width=int(rng.uniform(2.0, 4.5) * s))


def _cut_outlines(draw: ImageDraw.ImageDraw, rng: random.Random,
                  lines: list[tuple[float, float, float]]) -> None:
    """Broken dark segments along the cuts between the base planes."""
    s = SS
    for nx, ny, c in lines:
        bx, by = nx * c, ny * c  # foot of the perpendicular from the origin
        t = -SIZE * 1.5
        while t < SIZE * 1.5:
            run = rng.uniform(40, 160)
            if rng.random() < 0.5:
                a = (bx - ny * t, by + nx * t)
                b = (bx - ny * (t + run), by + nx * (t + run))
                draw.line((a[0] * s, a[1] * s, b[0] * s, b[1] * s),
                          fill=OUTLINE + (rng.randint(140, 230),), width=int(rng.uniform(1.5, 3.5) * s))
            t += run


def cubist() -> Image.Image:
    """Overlapping angular planes in muted ochres, greys and blues with dark outlines."""
    rng = random.Random(6006)
    lines = _cut_lines(rng, 11)
    base = _to_image(_planes(rng, lines))
    img = base.resize((SIZE * SS, SIZE * SS), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img, "RGBA")
    _cut_outlines(draw, rng, lines)
    for scale, count in ((170.0, 8), (95.0, 16), (50.0, 18)):
        for _ in range(count):
            poly = _facet(rng, scale)
            colour = _jitter(rng, rng.choice(CUBIST_PALETTE), 10)
            _shade_facet(img, rng, poly, colour)
            _hatch(draw, rng, poly, colour)
            _outline(draw, rng, poly)
    grain = _noise(rng, SIZE * SS, SIZE // 2).point(lambda v: 112 + v * 32 // 255)
    img = ImageChops.overlay(img, Image.merge("RGB", (grain, grain, grain)))
    return _finish(img)


# --------------------------------------------------------------------------
# Registry and command line
# --------------------------------------------------------------------------

RENDERERS: dict[str, Callable[[], Image.Image]] = {
    "ink_wash": ink_wash,
    "cubist": cubist,
}
"""Style name -> function drawing it; the name is also the PNG file stem."""

STYLES: tuple[str, ...] = tuple(RENDERERS)
"""Names of all drawn styles."""


def render(name: str) -> Image.Image:
    """Draw the named style as a SIZE x SIZE RGB image."""
    try:
        renderer = RENDERERS[name]
    except KeyError:
        raise ValueError(f"unknown style {name!r}; choose from {', '.join(STYLES)}") from None
    img = renderer()
    assert img.mode == "RGB" and img.size == (SIZE, SIZE)
    return img


def save(name: str, outdir: Path) -> Path:
    """Render one style and write it as ``outdir/<name>.png``."""
    path = outdir / f"{name}.png"
    render(name).save(path, format="PNG", optimize=True)
    return path


def main(argv: Sequence[str]) -> int:
    """Command line entry point: ``render_styles.py [OUTDIR]``."""
    if len(argv) > 1:
        print(__doc__)
        print("usage: render_styles.py [OUTDIR]", file=sys.stderr)
        return 2
    outdir = Path(argv[0]) if argv else Path(__file__).resolve().parent
    outdir.mkdir(parents=True, exist_ok=True)
    for name in STYLES:
        start = time.perf_counter()
        path = save(name, outdir)
        print(f"{path}  ({time.perf_counter() - start:.2f} s, {path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
