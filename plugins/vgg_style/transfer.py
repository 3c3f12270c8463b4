"""The ``vgg_style`` stage's work: the bridge between a preset and the engine in ``pipeline.engine.nst``.

It loads the network once per worker (``prepare``), turns the photo and the
style images into tensors at the preset's sizes, computes the style targets once
per style, and hands tensors to the engine, which does no file I/O. The hooks
that call it live in ``plugins.vgg_style`` (the package), which imports this
module, and so torch, only when a photo or a preset needs it.

A colour mode that changes what the network sees (``preserve_color: histogram``)
is another plugin's business: this module asks the ``style_preparation`` hook
and imports no other plugin, so with ``color`` disabled it does no colour work.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from PIL import Image

from pipeline.job.context import JobContext, StylePreparation, WorkerResources
from pipeline.job.imageio import load_photo, resize_long_edge
from pipeline.engine.nst.engine import EngineSettings, Progress, initial_image, stylize as run_engine
from pipeline.engine.nst.layer_names import min_side
from pipeline.engine.nst.layers import FeatureExtractor
from pipeline.engine.nst.objective import Objective, ObjectiveWeights, style_targets
from pipeline.engine.nst.schedule import EvaluationCosts
from pipeline.engine.tensors import image_to_tensor, tensor_to_image
from pipeline.files.hashing import stable_file_hash
from pipeline.engine.style_cache import Lookup, StyleTargetCache, targets_key
from pipeline.engine.weights import load_features, weights_identity


# Working memory of one optimisation (activations, gradients, up to 60 L-BFGS history pairs) per
# megapixel of the working image, above the loaded model. Measured on the CPU at 512 px with the
# default schedule (bench/benchmark.py --run project --size 512 [--precision fp32], job peak RSS):
# 5465 MB/MP in fp32, 6266 MB/MP with bf16 autocast (it keeps bf16 copies too). Rounded up.
MB_PER_MEGAPIXEL = {"fp32": 5500.0, "half": 6300.0}
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


def style_preparer(resources: WorkerResources, preset: Any) -> Callable[[Image.Image], StylePreparation] | None:
    """How the plugins (``color``) want each photo and the style prepared for this preset; None: as they are.

    Asked through the ``style_preparation`` hook, which the plugin host hands the
    worker's resources before ``prepare``; resources it never prepared have no plugins to ask.
    """
    if resources.hook is None:
        return None
    return resources.hook.style_preparation(preset=preset)


def style_long_edge(preset: Any, content_long_edge: int) -> int:
    """The style image's long edge for a content image of this long edge (``size × style_scale``)."""
    return max(min_side(preset.style_layers), round(content_long_edge * preset.style_scale))


def preset_style_targets(
    preset: Any, extractor: FeatureExtractor, resources: WorkerResources, long_edge: int,
    preparation: StylePreparation | None = None,
) -> Lookup:
    """The preset's style Gram matrices at ``long_edge``: from memory, disk, or computed once.

    With a colour mode that prepares the style (``preparation``: recoloured to the
    photo's colours, or reduced to its luminance), the targets depend on the photo's
    rounded colour statistics too, and are cached under them.
    """
    refs = preset.style_images
    model = resources.config.model
    key = targets_key(
        styles=[(stable_file_hash(ref.image), ref.weight) for ref in refs], long_edge=long_edge,
        layers=tuple(preset.style_layers), pooling=model.pooling, weights=weights_identity(model.weights),
        colour=None if preparation is None else preparation.key,
    )

    def compute() -> dict[str, torch.Tensor]:
        max_pixels = resources.config.limits.max_pixels
        prepare_style = (lambda image: image) if preparation is None else preparation.style
        images = [
            image_to_tensor(
                prepare_style(
                    resize_long_edge(load_photo(ref.image, max_pixels).image, long_edge, min_side(preset.style_layers))
                ),
                resources.device,
            )
            for ref in refs
        ]
        return style_targets(extractor, images, [ref.weight for ref in refs], preset.style_layers)

    return style_cache(resources).get(key, resources.device, compute)


def stacked_targets(lookups: list[Lookup]) -> dict[str, torch.Tensor]:
    """One photo's targets (N, N) per layer, or each photo's stacked (B, N, N) when they differ.

    The style loss compares every photo's Gram matrix (B, N, N) with its target by
    broadcasting, so a batch whose photos have their own targets (a colour mode
    that depends on the photo) still runs as one optimisation.
    """
    if len(lookups) == 1 or all(lookup.targets is lookups[0].targets for lookup in lookups):
        return lookups[0].targets
    return {layer: torch.stack([lookup.targets[layer] for lookup in lookups]) for layer in lookups[0].targets}


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


def prepare(preset_name: str, preset: Any, resources: WorkerResources) -> None:
    """Load the network and the preset's style targets before the first photo.

    Missing weights stop the run before any photo is touched; the daemon calls
    this for the default preset at start, so its first photo spends nothing on style.
    """
    weights = objective_weights(preset)
    extractor = FeatureExtractor(network(resources), weights.layers)
    if style_preparer(resources, preset) is not None:
        return  # its style targets depend on each photo (a colour mode: on its colours)
    limit = memory_limit_mb(resources)
    per_megapixel = MB_PER_MEGAPIXEL["fp32" if compute_dtype(preset.precision, resources.device) is None else "half"]
    if limit is not None and per_megapixel * (preset.size / 1e3) ** 2 > limit:
        # A square photo at this size would not fit: photos run at a size fitted to the limit, whose
        # targets are made then; warming these would only spend memory on targets no photo may use.
        return
    for scale in [*preset.schedule.pyramid, 1.0]:
        preset_style_targets(preset, extractor, resources, style_long_edge(preset, round(preset.size * scale)))


OUT_OF_MEMORY_MESSAGES = (
    "out of memory",  # CUDA, MPS
    "can't allocate memory",  # torch's CPU allocator
    "could not create a primitive",  # oneDNN (bf16 on the CPU) when its scratch memory cannot be allocated
    "std::bad_alloc",  # a C++ allocation in an operator without torch's allocator (e.g. with oneDNN off)
)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError the CPU allocators raise when memory runs out
    (or Python's MemoryError, which pybind11 makes of a C++ std::bad_alloc)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in OUT_OF_MEMORY_MESSAGES)


def _release_memory(device: str) -> None:
    """Give memory back after an out-of-memory failure (call once the exception is gone: its
    traceback holds the failed attempt's tensors)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):
        try:  # glibc keeps freed heap pages; return them, or the retry finds the address space still full
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _stylize_together(images: list[Image.Image], ctxs: list[JobContext], size: int,
                      start: Image.Image | None = None) -> list[Image.Image]:
    """One optimisation for photos of one preset whose working sizes match; fills each ``ctx.report``.

    Several photos become one batch (B, 3, H, W): the objective is the sum of
    theirs, so one L-BFGS run optimises them all, which keeps a GPU busy.
    """
    ctx = ctxs[0]
    preset = ctx.preset
    weights = objective_weights(preset)
    extractor = FeatureExtractor(network(ctx.resources), weights.layers)
    smallest = min_side(weights.layers)
    working = [resize_long_edge(image, size, smallest) for image in images]
    # A colour mode may change what the network sees, per photo (the style_preparation hook).
    preparer = style_preparer(ctx.resources, preset)
    preparations = [None if preparer is None else preparer(image) for image in working]
    content = torch.cat([
        image_to_tensor(image if preparation is None else preparation.content(image), ctx.device)
        for image, preparation in zip(working, preparations, strict=True)
    ])
    settings = engine_settings(preset)
    dtype = compute_dtype(preset.precision, ctx.device)
    lookups: list[Lookup] = []
    objectives: list[Objective] = []

    def objective_at(level_content: torch.Tensor) -> Objective:
        long_edge = style_long_edge(preset, max(level_content.shape[-2:]))
        # One set of targets for the preset, or one per photo when the colour mode prepares the style.
        level = [preset_style_targets(preset, extractor, ctx.resources, long_edge, preparation)
                 for preparation in (preparations if preparations[0] is not None else [None])]
        lookups.extend(level)
        objectives.append(Objective(extractor, level_content, stacked_targets(level), weights, compute_dtype=dtype))
        return objectives[-1]

    def report(progress: Progress) -> None:
        ctx.progress(progress.evaluation, progress.budget,
                     f"level {progress.level + 1}/{progress.levels} loss {progress.loss.total:.4g}")

    # measured seconds per evaluation, kept by the worker: a time budget is planned with known costs
    costs = ctx.resources.cache.setdefault(("evaluation-costs", ctx.device, str(dtype)), EvaluationCosts())
    first = None if start is None else image_to_tensor(start.resize(working[0].size, Image.Resampling.LANCZOS),
                                                        ctx.device)
    result = run_engine(content, objective_at, settings, min_side=smallest, on_progress=report,
                        should_stop=ctx.should_stop, costs=costs, start=first)
    # Every photo's own figures, at the working size, in full precision: where it started, what is saved.
    scorer = Objective(extractor, content, objectives[-1].style_targets, weights)
    initial = scorer.evaluate_each(initial_image(content, settings.init, settings.seed))
    final = scorer.evaluate_each(result.image)
    model = ctx.config.model
    for index, job in enumerate(ctxs):
        job.report["loss"] = {"initial": initial[index].as_dict(), "final": final[index].as_dict()}
        job.report["style_targets"] = {
            "source": ",".join(lookup.source for lookup in lookups),
            "seconds": round(sum(lookup.seconds for lookup in lookups), 4),
        }
        job.report["engine"] = {
            "name": "gatys-vgg19",
            "evaluations": result.evaluations,
            "level_evaluations": list(result.level_evaluations),
            "working_size": [content.shape[3], content.shape[2]],
            "batch": len(images),
            "device": ctx.device,
            "weights": weights_identity(model.weights),
            "pooling": model.pooling,
            "precision": str(dtype or torch.float32).replace("torch.", ""),
            "settings": {**asdict(settings), **asdict(weights)},
        }
    return [tensor_to_image(result.image[index:index + 1]) for index in range(len(images))]


def memory_limit_mb(resources: WorkerResources) -> float | None:
    """``limits.memory_mb``, else on a GPU the memory it has free (minus a margin), else no limit."""
    configured = resources.config.limits.memory_mb
    if configured is not None:
        return float(configured)
    if resources.device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(resources.device))
        return 0.9 * free / 2**20
    return None


def working_megapixels(image: Image.Image, size: int, smallest: int) -> float:
    width, height = image.size
    scale = max(size / max(width, height), smallest / min(width, height))
    return width * scale * height * scale / 1e6


def size_for_memory(image: Image.Image, ctx: JobContext, size: int, photos: int = 1) -> int:
    """The largest working size (at most ``size``) whose estimated memory fits the limit.

    The estimate is the measured working memory per megapixel (``MB_PER_MEGAPIXEL``)
    times the working image's megapixels and the number of photos optimised together.
    """
    limit = memory_limit_mb(ctx.resources)
    if limit is None:
        return size
    smallest = min_side(ctx.preset.style_layers + ctx.preset.content_layers)
    per_megapixel = MB_PER_MEGAPIXEL["fp32" if compute_dtype(ctx.preset.precision, ctx.device) is None else "half"]
    needed = per_megapixel * working_megapixels(image, size, smallest) * photos
    if needed <= limit:
        return size
    fitted = max(smallest, int(size * (limit / needed) ** 0.5))
    message = (f"working size {size} px needs about {needed:.0f} MB, over the memory limit of {limit:.0f} MB; "
               f"using {fitted} px")
    ctx.log.warning("%s: %s", ctx.source, message)
    ctx.report.setdefault("warnings", []).append(message)
    return fitted


def stylize(image: Image.Image, ctx: JobContext) -> Image.Image:
    """Stylise at the preset's size (reduced to fit the memory limit); out of memory, retry at 3/4 of it."""
    return refine(image, ctx, None)


def refine(image: Image.Image, ctx: JobContext, start: Image.Image | None) -> Image.Image:
    """The optimisation, from the photo (``start`` None) or from a fast preset's output at the working size."""
    size = size_for_memory(image, ctx, ctx.preset.size)
    smallest = min_side(ctx.preset.style_layers + ctx.preset.content_layers)
    while True:
        try:
            return _stylize_together([image], [ctx], size, start)[0]
        except Exception as error:
            if not is_out_of_memory(error) or size <= smallest:
                raise
        _release_memory(ctx.device)
        smaller = max(smallest, int(size * RETRY_SCALE))
        message = f"out of memory at {size} px on {ctx.device}; retrying at {smaller} px"
        ctx.log.warning("%s: %s", ctx.source, message)
        ctx.report.setdefault("warnings", []).append(message)
        size = smaller


def stylize_batch(images: list[Image.Image], ctxs: list[JobContext]) -> list[Image.Image] | None:
    """Batch photos whose working sizes match; decline (photo by photo) otherwise or when memory runs out."""
    preset = ctxs[0].preset
    smallest = min_side(preset.style_layers + preset.content_layers)
    if any(ctx.preset_name != ctxs[0].preset_name for ctx in ctxs) or preset.engine != "optimize":
        return None  # several presets, or a fast preset (one network pass per photo gains nothing from a batch)
    if len({resize_long_edge(image, preset.size, smallest).size for image in images}) != 1:
        return None
    limit = memory_limit_mb(ctxs[0].resources)
    per_megapixel = MB_PER_MEGAPIXEL["fp32" if compute_dtype(preset.precision, ctxs[0].device) is None else "half"]
    if limit is not None and per_megapixel * working_megapixels(images[0], preset.size, smallest) * len(images) > limit:
        return None  # together they would not fit: one by one, each at the largest size that does
    try:
        return _stylize_together(images, ctxs, preset.size)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
    _release_memory(ctxs[0].device)
    ctxs[0].log.warning("out of memory for a batch of %d; running them one by one", len(images))
    return None
