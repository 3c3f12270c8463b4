"""VGG19 layer names without importing torch, so validating a config stays fast."""

from __future__ import annotations

# VGG19 "E": channels per conv, "M" = 2x2 pooling (torchvision.models.vgg.cfgs["E"]).
VGG19_PLAN: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_table() -> dict[str, int]:
    """Map ``convX_Y`` to the index of its ReLU in ``vgg19().features``."""
    table: dict[str, int] = {}
    index, block, conv = 0, 1, 1
    for item in VGG19_PLAN:
        if item == "M":
            index += 1
            block, conv = block + 1, 1
        else:
            table[f"conv{block}_{conv}"] = index + 1  # conv at index, its ReLU right after
            index += 2
            conv += 1
    return table


#: ``convX_Y`` -> index of the ReLU whose output is that layer's feature map.
LAYER_INDEX: dict[str, int] = _layer_table()
LAYER_NAMES: tuple[str, ...] = tuple(LAYER_INDEX)


def min_side(layers: tuple[str, ...] | list[str]) -> int:
    """The smallest image side the network can take to reach every layer: 2^(pools on the way)."""
    deepest = max(LAYER_INDEX[name] for name in layers)
    index, pools = 0, 0
    for item in VGG19_PLAN:
        if index >= deepest:
            break
        if item == "M":
            pools += 1
            index += 1
        else:
            index += 2
    return 2**pools
