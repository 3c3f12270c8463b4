"""Render a photo of any size with the transformation network, in tiles of bounded memory.

Why the tiles need no blending: with the normalisation statistics fixed for the
whole image (below), the network is a plain stack of convolutions, so an output
pixel depends only on the input pixels within :meth:`TransformNet.receptive_radius`
of it. Each tile is rendered with a margin at least that wide on every side that
has a neighbour, its origin on the stride-4 grid of the two downsampling layers,
and only its core is kept: every kept pixel is computed from exactly the input
pixels the untiled network would use, so the seams are invisible by construction
(``tests/test_fast_engine.py`` compares tiled and untiled renders).

The statistics: instance normalisation (Ulyanov et al. 2016) normalises by the
mean and variance of the whole image, which no single tile sees. They are
measured in one pass over the photo seen at most ``stats_edge`` px on its long
edge (the whole photo when it is that small), then fixed for every tile, and
folded into the convolutions (:func:`~pipeline.engine.fast.network.folded`).
"""

from __future__ import annotations

from collections.abc import Callable
import torch
import torch.nn.functional as F

from pipeline.engine.fast.network import TransformNet, folded

# Long edge of the image the normalisation statistics are measured on; the pass that measures them runs
# unfolded. On a night photo at 760 px (bench/fast.py prints the figure for its test image), statistics seen
# at 256 px moved the render by 12 levels of 255 on average (99th percentile 54), at 512 px by 3.3 (14).
STATS_EDGE = 512
GRID = 4  # the network works at a quarter of the resolution: tiles start on multiples of 4


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def margin(net: TransformNet) -> int:
    return _round_up(net.receptive_radius(), GRID)


@torch.inference_mode()
def measure_statistics(net: TransformNet, image: torch.Tensor, stats_edge: int = STATS_EDGE,
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every normalisation layer's (mean, var) for ``image`` (1, 3, H, W), seen at most ``stats_edge`` px."""
    height, width = image.shape[-2:]
    scale = min(1.0, stats_edge / max(height, width))
    proxy = image if scale == 1.0 else F.interpolate(
        image, size=(max(1, round(height * scale)), max(1, round(width * scale))), mode="bilinear",
        antialias=True, align_corners=False)
    norms = net.norms()
    for norm in norms:
        norm.record = []
    try:
        net(proxy)
        return [norm.record[0] for norm in norms]  # type: ignore[index]
    finally:
        for norm in norms:
            norm.record = None


def tile_spans(length: int, core: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split ``[0, length)`` into cores of at most ``core`` px (multiples of the grid, but the last).

    Each item: (read_from, read_to, keep_from, keep_to) — the input span a tile reads
    (its core plus ``overlap`` on each side that has one, clipped to the image, starting
    on the grid) and the core it keeps, in image coordinates.
    """
    core = max(GRID, core - core % GRID)
    spans = []
    for start in range(0, length, core):
        end = min(length, start + core)
        read_from = max(0, start - overlap)
        read_to = min(length, end + overlap)
        spans.append((read_from, read_to, start, end))
    return spans


@torch.inference_mode()
def render(net: TransformNet, image: torch.Tensor, *, tile: int = 1024, stats_edge: int = STATS_EDGE,
           compute_dtype: torch.dtype | None = None,
           on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Stylise ``image`` (1, 3, H, W) in [0, 1]; returns (1, 3, H, W) uint8 on the CPU.

    The statistics are measured first (on the photo itself when it is at most
    ``stats_edge`` px, so exactly), folded into the network, and each tile of at
    most ``tile`` px (plus margins) runs through it: memory is bounded by the tile,
    not by the photo. ``on_tile(done, total)`` is called after each tile.
    """
    height, width = image.shape[-2:]
    overlap = margin(net)
    autocast = torch.autocast(image.device.type, dtype=compute_dtype, enabled=compute_dtype is not None)
    with autocast:
        statistics = measure_statistics(net, image, stats_edge)
    fused = folded(net, [(mean.float(), var.float()) for mean, var in statistics])
    if image.device.type == "cpu":  # oneDNN's fastest layout for these convolutions
        fused = fused.to(memory_format=torch.channels_last)
    result = torch.empty((1, 3, height, width), dtype=torch.uint8)
    rows, columns = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    total, done = len(rows) * len(columns), 0
    with autocast:
        for top, bottom, keep_top, keep_bottom in rows:
            for left, right, keep_left, keep_right in columns:
                piece = image[..., top:bottom, left:right]
                if image.device.type == "cpu":
                    piece = piece.contiguous(memory_format=torch.channels_last)
                out = fused(piece)
                core = out[..., keep_top - top:keep_bottom - top, keep_left - left:keep_right - left]
                result[..., keep_top:keep_bottom, keep_left:keep_right] = (
                    core.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
                done += 1
                if on_tile is not None:
                    on_tile(done, total)
    return result
