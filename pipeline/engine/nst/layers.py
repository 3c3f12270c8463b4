"""VGG19's convolutional layers by name, and the feature extractor the objective uses.

A layer name ``convX_Y`` means the output of that convolution's ReLU in
torchvision's ``vgg19().features`` (Simonyan & Zisserman 2015, configuration E),
as in Gatys et al. (2016), who take style from conv1_1…conv5_1 and content from
conv4_2. The network is cut after the last layer used, so a preset that stops
at conv5_1 never pays for conv5_2…conv5_4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.engine.nst.layer_names import IMAGENET_MEAN, IMAGENET_STD, LAYER_INDEX, VGG19_PLAN

def vgg19_features(pooling: str = "max") -> nn.Sequential:
    """An untrained ``vgg19().features`` with the same module indices (so state dicts load)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG19_PLAN:
        if item == "M":
            layers.append(nn.AvgPool2d(2, 2) if pooling == "avg" else nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
    return nn.Sequential(*layers)


def init_like_torchvision(features: nn.Sequential, seed: int) -> None:
    """Seeded random weights, initialised as torchvision initialises VGG (He et al. 2015)."""
    generator = torch.Generator().manual_seed(seed)
    for module in features:
        if isinstance(module, nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            std = (2.0 / fan_out) ** 0.5
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                module.bias.zero_()


class FeatureExtractor(nn.Module):
    """VGG19 up to the deepest requested layer; returns the requested ReLU outputs.

    Input: an RGB batch in [0, 1], shape (B, 3, H, W). It is normalised with
    ImageNet mean/std inside, as torchvision's VGG weights expect.
    """

    def __init__(self, features: nn.Sequential, layers: Sequence[str]) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in LAYER_INDEX]
        if unknown:
            raise ValueError(f"unknown VGG19 layers: {unknown}")
        self.layer_names = tuple(dict.fromkeys(layers))
        wanted = {LAYER_INDEX[name]: name for name in self.layer_names}
        last = max(wanted)
        self.body = nn.Sequential(*list(features)[: last + 1])  # cut after the last layer used
        self._wanted = wanted
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        outputs: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.body):
            x = module(x)
            name = self._wanted.get(index)
            if name is not None:
                outputs[name] = x
        return outputs
