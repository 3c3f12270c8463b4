"""Built-in ``stylize``: neural style transfer by optimisation (Gatys, Ecker & Bethge 2016) on VGG19.

This plugin is the bridge between a preset and the engine in ``pipeline.nst``:
it loads the network once per worker (``prepare``), turns the photo and the
style images into tensors at the preset's sizes, computes the style targets once
per style, and hands tensors to the engine, which does no file I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
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
from pipeline.weights import load_features, weights_identity


def network(resources: WorkerResources) -> torch.nn.Sequential:
    """VGG19 features for the configured weights and pooling, loaded once per worker and device."""
    model = resources.config.model
    key = ("vgg19", model.weights, model.pooling, resources.device)
    if key not in resources.cache:
        resources.cache[key] = load_features(model.weights, model.pooling).to(resources.device)
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


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def preset_style_targets(
    preset: Any, extractor: FeatureExtractor, resources: WorkerResources
) -> dict[str, torch.Tensor]:
    """The preset's style Gram matrices, computed once per style content, size and layer set."""
    refs = preset.style_images
    long_edge = max(16, round(preset.size * preset.style_scale))
    key = (
        "style-targets",
        tuple((_file_digest(ref.image), ref.weight) for ref in refs),
        long_edge,
        tuple(preset.style_layers),
        resources.config.model.weights,
        resources.config.model.pooling,
        resources.device,
    )
    if key not in resources.cache:
        max_pixels = resources.config.limits.max_pixels
        images = [
            image_to_tensor(
                resize_long_edge(load_photo(ref.image, max_pixels).image, long_edge, min_side(preset.style_layers)),
                resources.device,
            )
            for ref in refs
        ]
        resources.cache[key] = style_targets(extractor, images, [ref.weight for ref in refs], preset.style_layers)
    return resources.cache[key]


@hookimpl
def prepare(preset_name: str, preset: Any, resources: WorkerResources) -> None:
    """Load the network before the first photo, so missing weights stop the run before any work."""
    network(resources)


@hookimpl
def stylize(image: Image.Image, ctx: JobContext) -> Image.Image:
    preset = ctx.preset
    weights = objective_weights(preset)
    extractor = FeatureExtractor(network(ctx.resources), weights.layers)
    smallest = min_side(weights.layers)
    content = image_to_tensor(resize_long_edge(image, preset.size, smallest), ctx.device)
    targets = preset_style_targets(preset, extractor, ctx.resources)
    objective = Objective(extractor, content, targets, weights)
    settings = EngineSettings(iterations=preset.iterations, init=preset.init, seed=preset.seed)

    def report(progress: Progress) -> None:
        ctx.progress(progress.evaluation, progress.budget, f"loss {progress.loss.total:.4g}")

    result = run_engine(content, objective, settings, on_progress=report, should_stop=ctx.should_stop)
    ctx.report["loss"] = {"initial": result.initial.as_dict(), "final": result.final.as_dict()}
    model = ctx.config.model
    ctx.report["engine"] = {
        "name": "gatys-vgg19",
        "evaluations": result.evaluations,
        "working_size": [content.shape[3], content.shape[2]],
        "device": ctx.device,
        "weights": weights_identity(model.weights),
        "pooling": model.pooling,
        "settings": {**asdict(settings), **asdict(weights)},
    }
    return tensor_to_image(result.image)
