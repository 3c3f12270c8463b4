"""Fast presets in the ``vgg_style`` stage: train the network on the preset's objective, render with it.

``engine: fast`` renders the photo at its own resolution (within
``limits.max_output_pixels``) with the preset's trained network
(:mod:`pipeline.engine.fast`), in tiles. ``engine: fast+refine`` starts the
optimisation at the working size from the network's output instead of from the
photo. A preset whose model is missing or stale is optimised as before, with one
warning: a photo never fails for want of a model.

Training uses exactly what the optimisation uses for the preset
(:mod:`plugins.vgg_style.transfer`): the network, the objective's weights and
layers, the style targets at the working size, and the colour mode's preparation.
"""

from __future__ import annotations

import io
import time
from typing import Any

import torch
from PIL import Image

from pipeline.config.settings_hash import document_hash, objective_document
from pipeline.engine.fast import tiling
from pipeline.engine.fast.model_files import ModelFiles
from pipeline.engine.fast.network import NetworkShape, TransformNet
from pipeline.engine.fast.store import ModelUnavailable, load_current, network_bytes
from pipeline.engine.fast.training import Trainer, TrainingPhoto, TrainingSettings, train
from pipeline.engine.nst.layer_names import min_side
from pipeline.engine.nst.layers import FeatureExtractor
from pipeline.engine.tensors import image_to_tensor, tensor_to_image
from pipeline.job.context import JobContext, WorkerResources
from pipeline.job.imageio import decode_photo, resize_long_edge
from pipeline.job.training import TrainedModel, TrainingCallbacks, TrainingProgress, TrainingRequest
from plugins.vgg_style.transfer import (
    compute_dtype, memory_limit_mb, network, objective_weights, preset_style_targets, style_long_edge, style_preparer,
)

# Working memory of the network per pixel of a tile (activations of the widest layers, the input and
# output tiles), measured with bench/fast.py at width 0.5; used to size tiles under limits.memory_mb.
BYTES_PER_TILE_PIXEL = 400
DEFAULT_TILE = 1024  # px, a tile core's side when no memory limit asks for less


# --- training ------------------------------------------------------------------------------------


def _training_photo(data: bytes, name: str, preset: Any, resources: WorkerResources, extractor: FeatureExtractor,
                    crop: int) -> TrainingPhoto:
    """A photo brought to the preset's working size (short side at least the crop), prepared, with its targets."""
    image = decode_photo(data, name, resources.config.limits.max_pixels).image
    image = resize_long_edge(image, preset.size, min_side(preset.style_layers + preset.content_layers))
    if min(image.size) < crop:
        scale = crop / min(image.size)
        image = image.resize((max(crop, round(image.width * scale)), max(crop, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    preparer = style_preparer(resources, preset)
    preparation = None if preparer is None else preparer(image)
    seen = image if preparation is None else preparation.content(image)
    targets = preset_style_targets(preset, extractor, resources, style_long_edge(preset, preset.size), preparation)
    return TrainingPhoto(image_to_tensor(seen, "cpu"), targets.targets)


def train_model(preset: Any, request: TrainingRequest, resources: WorkerResources,
                callbacks: TrainingCallbacks) -> TrainedModel:
    """Train (or resume training) the preset's network; checkpoints and progress go through ``callbacks``."""
    weights = objective_weights(preset)
    extractor = FeatureExtractor(network(resources), weights.layers)
    photos = [_training_photo(data, name, preset, resources, extractor, request.crop) for name, data in request.photos]
    validation = [_training_photo(data, name, preset, resources, extractor, request.crop)
                  for name, data in request.validation]
    settings = TrainingSettings(crop=request.crop, batch=request.batch, learning_rate=request.learning_rate,
                                seed=request.seed,
                                shape=NetworkShape(width=request.width, residual_blocks=request.residual_blocks))
    dtype = compute_dtype(preset.precision, resources.device)
    trainer = Trainer(extractor, weights, photos, validation, settings, resources.device, dtype)
    if request.checkpoint is not None:
        trainer.load_state_dict(torch.load(io.BytesIO(request.checkpoint), map_location=resources.device,
                                           weights_only=False))
    began = time.monotonic()

    def out_of_time() -> bool:
        return callbacks.should_stop() or (request.seconds is not None and time.monotonic() - began >= request.seconds)

    def on_step(trainer: Trainer, loss: float) -> None:
        latest = trainer.curves.validation[-1][2] if trainer.curves.validation else None
        callbacks.on_progress(TrainingProgress(trainer.step_count, request.steps, loss, latest, trainer.seconds))

    def checkpoint(trainer: Trainer) -> None:
        buffer = io.BytesIO()
        torch.save(trainer.state_dict(), buffer)
        callbacks.on_checkpoint(buffer.getvalue(), trainer.step_count)

    train(trainer, steps=request.steps, should_stop=out_of_time, on_step=on_step, checkpoint=checkpoint,
          validate_every=request.validate_every, checkpoint_every=request.checkpoint_every)
    info = {
        "steps": trainer.step_count, "seconds": round(trainer.seconds, 1), "device": resources.device,
        "precision": str(dtype or torch.float32).replace("torch.", ""),
        "settings": settings.as_dict(),
        "curves": {"train": trainer.curves.train, "validation": trainer.curves.validation},
    }
    return TrainedModel(network_bytes(trainer.net), info)


# --- rendering -----------------------------------------------------------------------------------


def current_model(ctx: JobContext) -> tuple[TransformNet, dict[str, Any]]:
    """The preset's network, loaded once per worker while its file stays the same; ModelUnavailable if none is current."""
    files = ModelFiles.of(ctx.config.state, ctx.preset_name)
    document = objective_document(ctx.config, ctx.preset_name)
    digest = document_hash(document)
    key = ("fast-model", ctx.preset_name, ctx.device)
    cached = ctx.cache.get(key)
    try:
        stamp = files.sidecar.stat().st_mtime_ns
    except OSError:
        stamp = None
    if cached is not None and cached[0] == stamp and cached[1] == digest:
        return cached[2], cached[3]
    net, sidecar = load_current(files, document, digest, ctx.device)
    ctx.cache[key] = (stamp, digest, net, sidecar)
    return net, sidecar


def output_size(image: Image.Image, max_pixels: int) -> tuple[int, int]:
    """The photo's own size, or the largest of its aspect within ``max_pixels``."""
    width, height = image.size
    if width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    return max(1, int(width * scale)), max(1, int(height * scale))


def tile_side(ctx: JobContext) -> int:
    """A tile core's side: DEFAULT_TILE, or less when ``limits.memory_mb`` asks for it."""
    limit = memory_limit_mb(ctx.resources)
    if limit is None:
        return DEFAULT_TILE
    return max(64, min(DEFAULT_TILE, int((limit * 2**20 / BYTES_PER_TILE_PIXEL) ** 0.5)))


def _report(ctx: JobContext, engine: str, sidecar: dict[str, Any], size: tuple[int, int], seconds: float) -> None:
    ctx.report["fast"] = {
        "engine": engine, "model_sha256": sidecar.get("model_sha256"), "objective_hash": sidecar.get("objective_hash"),
        "trained_steps": sidecar.get("steps"), "size": list(size), "seconds": round(seconds, 3),
    }


def render_fast(net: TransformNet, image: Image.Image, ctx: JobContext) -> Image.Image:
    size = output_size(image, ctx.config.limits.max_output_pixels)
    if size != image.size:
        message = f"{image.width}×{image.height} is over limits.max_output_pixels; rendering at {size[0]}×{size[1]}"
        ctx.log.warning("%s: %s", ctx.source, message)
        ctx.report.setdefault("warnings", []).append(message)
        image = image.resize(size, Image.Resampling.LANCZOS)
    preparer = style_preparer(ctx.resources, ctx.preset)
    seen = image if preparer is None else preparer(image).content(image)
    # bf16 only on a GPU: on a CPU with AVX-512 BF16 autocast made these narrow convolutions slower (4.1 s
    # against 1.4-3.3 s in fp32 at 1024 px, measured under load), so `precision: auto` renders in fp32 there.
    dtype = compute_dtype(ctx.preset.precision, ctx.device) if ctx.device.startswith("cuda") else None
    out = tiling.render(net, image_to_tensor(seen, ctx.device), tile=tile_side(ctx), compute_dtype=dtype,
                        on_tile=lambda done, total: ctx.progress(done, total, f"tile {done}/{total}"))
    return Image.fromarray(out[0].permute(1, 2, 0).numpy(), mode="RGB")


def stylize(image: Image.Image, ctx: JobContext) -> Image.Image | None:
    """The fast engine's result, or None (after one warning) when the preset's model cannot be used."""
    engine = ctx.preset.engine
    try:
        net, sidecar = current_model(ctx)
    except ModelUnavailable as reason:
        message = (f"preset {ctx.preset_name!r} (engine: {engine}): {reason}; optimising instead "
                   f"(`photostyle train {ctx.preset_name}` makes it fast)")
        ctx.log.warning("%s: %s", ctx.source, message)
        ctx.report.setdefault("warnings", []).append(message)
        ctx.report["fast"] = {"engine": engine, "fallback": str(reason)}
        return None
    began = time.perf_counter()
    if engine == "fast":
        result = render_fast(net, image, ctx)
        _report(ctx, "fast", sidecar, result.size, time.perf_counter() - began)
        return result
    from plugins.vgg_style.transfer import refine  # fast+refine: the optimisation, from the network's output

    working = resize_long_edge(image, ctx.preset.size, min_side(ctx.preset.style_layers + ctx.preset.content_layers))
    preparer = style_preparer(ctx.resources, ctx.preset)
    seen = working if preparer is None else preparer(working).content(working)
    with torch.inference_mode():
        start = net(image_to_tensor(seen, ctx.device)).clone()
    _report(ctx, "fast+refine", sidecar, working.size, time.perf_counter() - began)
    return refine(image, ctx, tensor_to_image(start))
