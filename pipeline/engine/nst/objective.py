"""The weighted objective L = α·L_content + β·L_style + tv·TV, as one module.

One forward pass of the feature extractor yields every content and style layer
(the extractor is cut after the deepest one), so an evaluation costs one VGG19
forward and one backward however many layers the preset uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.engine.nst.layers import FeatureExtractor
from pipeline.engine.nst.losses import content_loss, position_gram, style_layer_loss, total_variation


@dataclass(frozen=True)
class ObjectiveWeights:
    """α, β, the TV weight and the layers they act on (Gatys et al. 2016, eq. 7)."""

    content_weight: float
    style_weight: float
    tv_weight: float
    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    style_layer_weights: tuple[float, ...]  # w_l, one per style layer, summing to 1

    def __post_init__(self) -> None:
        assert len(self.style_layer_weights) == len(self.style_layers), "one w_l per style layer"

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))


@dataclass(frozen=True)
class LossTerms:
    """The objective's terms as plain floats (already multiplied by their weights)."""

    content: float
    style: float
    tv: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return {"content": self.content, "style": self.style, "tv": self.tv, "total": self.total}


@torch.no_grad()
def style_targets(
    extractor: FeatureExtractor, images: Sequence[torch.Tensor], blend: Sequence[float], layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Per-position Gram matrices A_l/M of a style image or a weighted blend of several.

    Blending averages the Gram matrices with the blend weights (normalised to 1),
    which mixes the styles' texture statistics rather than their pixels.
    """
    total = float(sum(blend))
    targets: dict[str, torch.Tensor] = {}
    for image, weight in zip(images, blend, strict=True):
        features = extractor(image)
        for layer in layers:
            gram = position_gram(features[layer])[0] * (weight / total)  # (N, N)
            targets[layer] = targets[layer] + gram if layer in targets else gram
    return targets


class Objective(nn.Module):
    """Gatys et al.'s total loss for a batch of images against fixed content and style targets."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        content: torch.Tensor,
        targets: dict[str, torch.Tensor],
        weights: ObjectiveWeights,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        """``compute_dtype`` (bf16/fp16) runs the network under autocast; Gram matrices and
        losses stay fp32, so the line search sees a loss accurate enough to compare steps."""
        super().__init__()
        self.extractor = extractor
        self.weights = weights
        self.compute_dtype = compute_dtype
        with torch.no_grad():
            features = self.features(content)
        self.content_targets = {layer: features[layer].detach() for layer in weights.content_layers}
        self.style_targets = {layer: targets[layer] for layer in weights.style_layers}

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass for every layer, in ``compute_dtype`` when set, returned as fp32."""
        if self.compute_dtype is None:
            return self.extractor(image)
        with torch.autocast(device_type=image.device.type, dtype=self.compute_dtype):
            features = self.extractor(image)
        return {layer: value.float() for layer, value in features.items()}

    def term_vectors(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weighted (content, style, tv) terms, one value per batch item: each (B,)."""
        w = self.weights
        features = self.features(image)
        content = sum(content_loss(features[layer], self.content_targets[layer]) for layer in w.content_layers)
        style = sum(
            wl * style_layer_loss(features[layer], self.style_targets[layer])
            for layer, wl in zip(w.style_layers, w.style_layer_weights, strict=True)
        )
        tv = total_variation(image) if w.tv_weight > 0 else image.new_zeros(image.shape[0])
        return w.content_weight * content, w.style_weight * style, w.tv_weight * tv

    def terms(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weighted (content, style, tv) terms, each summed over the batch."""
        content, style, tv = self.term_vectors(image)
        return content.sum(), style.sum(), tv.sum()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        content, style, tv = self.terms(image)
        return content + style + tv

    @torch.no_grad()
    def evaluate(self, image: torch.Tensor) -> LossTerms:
        """The terms as floats, without building a graph (for scoring a finished image)."""
        content, style, tv = self.terms(image)
        return LossTerms(float(content), float(style), float(tv), float(content + style + tv))

    @torch.no_grad()
    def evaluate_each(self, image: torch.Tensor) -> list[LossTerms]:
        """The terms of every batch item separately (each photo of a batch gets its own figures)."""
        content, style, tv = self.term_vectors(image)
        return [
            LossTerms(float(c), float(s), float(t), float(c + s + t))
            for c, s, t in zip(content.tolist(), style.tolist(), tv.tolist(), strict=True)
        ]
