"""Built-in ``stylize``: neural style transfer by optimisation (Gatys, Ecker & Bethge 2016) on VGG19.

This plugin is the bridge between a preset and the engine in ``pipeline.nst``:
it loads the network once per worker (``prepare``), turns the photo and the
style images into tensors at the preset's sizes, computes the style targets once
per style, and hands tensors to the engine, which does no file I/O.
"""

from __future__ import annotations

import gc
from dataclasses import asdict
from typing import Any

import torch
from PIL import Image

from pipeline.context import JobContext, WorkerResources
from pipeline.hookspecs import hookimpl
from pipeline.imageio import load_photo, resize_long_edge
from pipeline.nst.engine import EngineSettings, Progress, stylize as run_engine
from pipeline.nst.layer_names import min_side
from pipeline.nst.layers import FeatureExtractor
from pipeline.nst.objective import Objective, ObjectiveWeights, style_targets
from pipeline.tensors import image_to_tensor, tensor_to_image
from pipeline.style_cache import Lookup, StyleTargetCache, file_digest, targets_key
from pipeline.weights import load_features, weights_identity


RETRY_SCALE = 0.75  # each out-of-memory retry shrinks the working size's long edge to 3/4 (about half the pixels)


def network(resources: WorkerResources) -> torch.nn.Sequential:
    """VGG19 features for the configured weights and pooling, loaded once per worker and device."""
    model = resources.config.model
    key = ("vgg19", model.weights, model.pooling, resources.device)
    if key not in resources.cache:
        features = load_features(model.weights, model.pooling).to(resources.device)
        if resources.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # fixed sizes per level: let cuDNN pick its fastest kernels
            features = features.to(memory_format=torch.channels_last)  # tensor cores' layout (no gain on CPU)
        resources.cache[key] = features
    return resources.cache[key]


def objective_weights(preset: Any) -> ObjectiveWeights:
    return ObjectiveWeights(
        content_weight=preset.content_weight,
        style_weight=preset.style_weight,
        tv_weight=preset.tv_weight,
        content_layers=tuple(preset.content_layers),
        style_layers=tuple(preset.style_layers),
        style_layer_weights=tuple(preset.layer_weights),
    )


def style_cache(resources: WorkerResources) -> StyleTargetCache:
    """The worker's style-target cache (memory, backed by ``state/cache/style-targets``)."""
    cache = resources.cache.get("style-target-cache")
    if cache is None:
        cache = StyleTargetCache(resources.config.state / "cache" / "style-targets")
        resources.cache["style-target-cache"] = cache
    return cache


def style_long_edge(preset: Any, content_long_edge: int) -> int:
    """The style image's long edge for a content image of this long edge (``size × style_scale``)."""
    return max(min_side(preset.style_layers), round(content_long_edge * preset.style_scale))


def preset_style_targets(
    preset: Any, extractor: FeatureExtractor, resources: WorkerResources, long_edge: int
) -> Lookup:
    """The preset's style Gram matrices at ``long_edge``: from memory, disk, or computed once."""
    refs = preset.style_images
    model = resources.config.model
    key = targets_key(
        styles=[(file_digest(ref.image), ref.weight) for ref in refs], long_edge=long_edge,
        layers=tuple(preset.style_layers), pooling=model.pooling, weights=weights_identity(model.weights),
    )

    def compute() -> dict[str, torch.Tensor]:
        max_pixels = resources.config.limits.max_pixels
        images = [
            image_to_tensor(
                resize_long_edge(load_photo(ref.image, max_pixels).image, long_edge, min_side(preset.style_layers)),
                resources.device,
            )
            for ref in refs
        ]
        return style_targets(extractor, images, [ref.weight for ref in refs], preset.style_layers)

    return style_cache(resources).get(key, resources.device, compute)


def engine_settings(preset: Any) -> EngineSettings:
    schedule = preset.schedule
    return EngineSettings(
        iterations=preset.iterations, init=preset.init, seed=preset.seed,
        pyramid=tuple(schedule.pyramid), pyramid_iterations=tuple(schedule.pyramid_iterations),
        tolerance=schedule.tolerance, window=schedule.window, time_budget=schedule.time_budget, box=schedule.box,
    )


def compute_dtype(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype for a preset's ``precision`` on ``device`` (None: plain fp32).

    ``auto`` picks bf16 where the hardware does it natively (CUDA with bf16, CPUs with
    AVX-512 BF16/AMX: measured 1.8x faster per evaluation here at equal final loss),
    fp16 on older CUDA GPUs, and fp32 elsewhere. An explicit bf16 on a CPU without
    native support falls back to fp32 (emulated bf16 is slower than fp32).
    """
    cuda = device.startswith("cuda")
    native_cpu_bf16 = device == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision == "auto":
        if cuda:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if native_cpu_bf16 else None
    if precision == "bf16" and (cuda or native_cpu_bf16):
        return torch.bfloat16
    if precision == "fp16" and cuda:
        return torch.float16
    return None


@hookimpl
def prepare(preset_name: str, preset: Any, resources: WorkerResources) -> None:
    """Load the network and the preset's style targets before the first photo.

    Missing weights stop the run before any photo is touched; the daemon calls
    this for the default preset at start, so its first photo spends nothing on style.
    """
    weights = objective_weights(preset)
    extractor = FeatureExtractor(network(resources), weights.layers)
    for scale in [*preset.schedule.pyramid, 1.0]:
        preset_style_targets(preset, extractor, resources, style_long_edge(preset, round(preset.size * scale)))


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError ("can't allocate memory")."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _release_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _stylize_at(image: Image.Image, ctx: JobContext, size: int) -> Image.Image:
    """One optimisation at working size ``size`` (long edge); fills ``ctx.report``."""
    preset = ctx.preset
    weights = objective_weights(preset)
    extractor = FeatureExtractor(network(ctx.resources), weights.layers)
    smallest = min_side(weights.layers)
    content = image_to_tensor(resize_long_edge(image, size, smallest), ctx.device)
    settings = engine_settings(preset)
    dtype = compute_dtype(preset.precision, ctx.device)
    lookups: list[Lookup] = []

    def objective_at(level_content: torch.Tensor) -> Objective:
        lookup = preset_style_targets(
            preset, extractor, ctx.resources, style_long_edge(preset, max(level_content.shape[-2:]))
        )
        lookups.append(lookup)
        return Objective(extractor, level_content, lookup.targets, weights, compute_dtype=dtype)

    def report(progress: Progress) -> None:
        ctx.progress(progress.evaluation, progress.budget, f"loss {progress.loss.total:.4g}")

    result = run_engine(content, objective_at, settings, min_side=smallest, on_progress=report,
                        should_stop=ctx.should_stop)
    ctx.report["loss"] = {"initial": result.initial.as_dict(), "final": result.final.as_dict()}
    ctx.report["style_targets"] = {
        "source": ",".join(lookup.source for lookup in lookups),
        "seconds": round(sum(lookup.seconds for lookup in lookups), 4),
    }
    model = ctx.config.model
    ctx.report["engine"] = {
        "name": "gatys-vgg19",
        "evaluations": result.evaluations,
        "level_evaluations": list(result.level_evaluations),
        "working_size": [content.shape[3], content.shape[2]],
        "device": ctx.device,
        "weights": weights_identity(model.weights),
        "pooling": model.pooling,
        "precision": str(dtype or torch.float32).replace("torch.", ""),
        "settings": {**asdict(settings), **asdict(weights)},
    }
    return tensor_to_image(result.image)


@hookimpl
def stylize(image: Image.Image, ctx: JobContext) -> Image.Image:
    """Stylise at the preset's size; out of memory, retry at 3/4 of the size (with a warning) until it fits."""
    size = ctx.preset.size
    smallest = min_side(ctx.preset.style_layers + ctx.preset.content_layers)
    while True:
        try:
            return _stylize_at(image, ctx, size)
        except Exception as error:
            if not is_out_of_memory(error) or size <= smallest:
                raise
            _release_memory(ctx.device)
            smaller = max(smallest, int(size * RETRY_SCALE))
            message = f"out of memory at {size} px on {ctx.device}; retrying at {smaller} px"
            ctx.log.warning("%s: %s", ctx.source, message)
            ctx.report.setdefault("warnings", []).append(message)
            size = smaller
