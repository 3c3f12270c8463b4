"""The image transformation network of Johnson, Alahi & Fei-Fei (2016), with instance normalisation.

Johnson et al., "Perceptual Losses for Real-Time Style Transfer and Super-Resolution"
(ECCV 2016, supplementary Table 1): convolutions down to a quarter of the
resolution, residual blocks there, and back up to RGB. Departures, each for a reason:

- Instance normalisation instead of batch normalisation (Ulyanov, Vedaldi &
  Lempitsky 2016, "Instance Normalization: The Missing Ingredient for Fast
  Stylization"): the statistics of one image, so the result does not depend on
  what else is in the batch.
- The full-resolution ends are rearrangements instead of convolutions: the photo
  enters as 2×2 pixel blocks stacked into 12 channels (space-to-depth) and leaves
  the same way (the sub-pixel convolution of Shi et al. 2016, "Real-Time Single
  Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional
  Neural Network"). Johnson's 9×9 convolutions and 16-channel tensors at full
  resolution cost 45% of the time on a CPU for a fifth of the arithmetic
  (memory traffic, reflection padding); without them a 1024 px photo renders
  about 2× faster (``bench/fast.py``).
- Nearest-neighbour upsampling followed by a convolution instead of a transposed
  convolution (Odena, Dumoulin & Olah 2016, "Deconvolution and Checkerboard
  Artifacts"): no checkerboard pattern.
- Reflection padding: no dark frame along the borders.
- Four residual blocks (Johnson: five) and ``width`` scaling the channels
  (32 and 64 at 1.0, Johnson's half and quarter resolution widths).
- The output is ``sigmoid``-bounded to [0, 1], the range the objective scores.

For rendering (:mod:`pipeline.engine.fast.tiling`) the normalisation statistics are
measured once for the whole image and then fixed, so that tiles rendered apart
look like one image. With fixed statistics each normalisation is a per-channel
affine map, which :func:`folded` moves into the convolution before it: the
rendering network is convolutions and ReLUs only.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NetworkShape:
    """What a saved model needs to be rebuilt: recorded in its file."""

    width: float = 1.0
    residual_blocks: int = 4

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def channels(self) -> tuple[int, int]:
        return max(4, round(32 * self.width)), max(4, round(64 * self.width))


class InstanceNorm(nn.Module):
    """Instance normalisation with a learned affine (γ, β); it can record the statistics it saw.

    Rendering records each layer's (mean, var) once for the whole image (``record``
    set to a list) and folds them into the convolutions (:func:`folded`).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.record: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # set to a list to collect statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, unbiased=False)
        if self.record is not None:
            self.record.append((mean.detach(), var.detach()))
        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
        return x * scale + (self.bias.view(1, -1, 1, 1) - mean * scale)


class ConvLayer(nn.Sequential):
    """Reflection padding, a convolution, and (except at the output) instance norm + ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *, norm: bool = True,
                 relu: bool = True, upsample: bool = False) -> None:
        layers: list[nn.Module] = []
        if upsample:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers += [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(c_in, c_out, kernel, stride)]
        if norm:
            layers.append(InstanceNorm(c_out))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with a skip connection (He et al. 2016, as in Johnson et al.)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3), ConvLayer(channels, channels, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TransformNet(nn.Module):
    """Photo (B, 3, H, W) in [0, 1] -> stylised image of the same size in [0, 1].

    H and W need not be multiples of 4: the input is reflection-padded and the output cropped.
    """

    def receptive_radius(self) -> int:
        """How far (in input pixels) one output pixel sees: the 2×2 blocks at both ends (1 px each), the 5×5
        and the stride-2 convolutions at half resolution (4 + 2 px), the residual blocks at a quarter
        (4 px per 3×3 convolution), the two 3×3 convolutions at half resolution on the way up (2 px each).
        Tiles overlap by at least this much."""
        return 1 + 4 + 2 + 4 * 2 * self.shape.residual_blocks + 2 + 2 + 1

    def __init__(self, shape: NetworkShape = NetworkShape()) -> None:
        super().__init__()
        self.shape = shape
        c1, c2 = shape.channels()
        self.down = nn.Sequential(nn.PixelUnshuffle(2), ConvLayer(12, c1, 5), ConvLayer(c1, c2, 3, 2))
        self.residual = nn.Sequential(*[ResidualBlock(c2) for _ in range(shape.residual_blocks)])
        self.up = nn.Sequential(ConvLayer(c2, c1, 3, upsample=True), ConvLayer(c1, 12, 3, norm=False, relu=False),
                                nn.PixelShuffle(2))

    def norms(self) -> list[InstanceNorm]:
        return [module for module in self.modules() if isinstance(module, InstanceNorm)]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        pad_h, pad_w = (-height) % 4, (-width) % 4
        x = nn.functional.pad(image, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else image
        x = self.up(self.residual(self.down(x)))
        return torch.sigmoid(x[..., :height, :width])


@torch.no_grad()
def folded(net: TransformNet, statistics: list[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """A copy of ``net`` with each normalisation, at the given fixed (mean, var), folded into its convolution.

    conv(x)·s + t with s = γ/√(var+ε) and t = β − mean·s is the convolution with
    weights W·s and bias b·s + t; the normalisation layer becomes the identity.
    """
    copied = copy.deepcopy(net)
    for module, (mean, var) in zip([m for m in copied.modules() if isinstance(m, ConvLayer) and
                                    any(isinstance(x, InstanceNorm) for x in m)], statistics, strict=True):
        conv = next(layer for layer in module if isinstance(layer, nn.Conv2d))
        index = next(i for i, layer in enumerate(module) if isinstance(layer, InstanceNorm))
        norm = module[index]
        scale = norm.weight * torch.rsqrt(var.flatten() + norm.eps)
        shift = norm.bias - mean.flatten() * scale
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias.copy_(conv.bias * scale + shift)
        module[index] = nn.Identity()
    return copied
