"""Cost of one objective evaluation (VGG19 forward + backward to conv5_1) by precision and memory layout.

Not a test: it prints seconds per evaluation, the figure that decides the
``precision`` default. Random weights are fine here (cost does not depend on the
filters). Example::

    python bench/evaluation_cost.py --sizes 128 256 512 [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.nst.layers import FeatureExtractor, init_like_torchvision, vgg19_features
from pipeline.nst.objective import Objective, ObjectiveWeights, style_targets

LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
VARIANTS = {
    "fp32": (None, torch.contiguous_format),
    "fp32 channels_last": (None, torch.channels_last),
    "bf16 autocast": (torch.bfloat16, torch.contiguous_format),
    "bf16 channels_last": (torch.bfloat16, torch.channels_last),
}


def seconds_per_evaluation(size: int, dtype: torch.dtype | None, layout: torch.memory_format, device: str,
                           repeats: int) -> float:
    features = vgg19_features()
    init_like_torchvision(features, seed=0)
    features = features.eval().to(device).to(memory_format=layout)
    weights = ObjectiveWeights(1.0, 1e6, 0.0, ("conv4_2",), LAYERS, (0.2,) * 5)
    extractor = FeatureExtractor(features, weights.layers)
    height, width = size * 3 // 4, size  # a 4:3 photo
    content = torch.rand(1, 3, height, width, device=device).contiguous(memory_format=layout)
    style = torch.rand(1, 3, size, size, device=device).contiguous(memory_format=layout)
    objective = Objective(extractor, content, style_targets(extractor, [style], [1.0], LAYERS), weights,
                          compute_dtype=dtype)
    x = content.clone().requires_grad_(True)

    def evaluate() -> None:
        x.grad = None
        objective(x).backward()

    evaluate()  # warm-up: allocator, oneDNN/cuDNN kernel choice
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(repeats):
        evaluate()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - began) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"native CPU bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    for size in args.sizes:
        for name, (dtype, layout) in VARIANTS.items():
            cost = seconds_per_evaluation(size, dtype, layout, args.device, args.repeats)
            print(f"{size:5d} px (4:3)  {name:20s} {cost:8.3f} s/evaluation", flush=True)


if __name__ == "__main__":
    main()
