"""Cost of one objective evaluation (VGG19 forward + backward to conv5_1) by precision, layout, threads, compiler.

Not a test: it prints seconds per evaluation, the figures behind the ``precision``
default and the CPU settings. Random weights are fine here (cost does not depend
on the filters). Variants are timed in interleaved rounds (every variant once per
round, ``--rounds`` rounds, the median reported), so load from other processes
affects them alike; the load average is printed with each size. Example::

    python bench/evaluation_cost.py --sizes 256 512 [--device cuda] [--variants fp32 "fp32 1 thread"]

``torch.compile`` variants print their compile time (the first call) separately:
compiling pays only when (seconds saved per evaluation × evaluations per photo)
exceeds it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.engine.device import configure_cpu_runtime

configure_cpu_runtime()  # as the photostyle command does, before torch is imported

import torch  # noqa: E402

from pipeline.engine.nst.layers import FeatureExtractor, init_like_torchvision, vgg19_features  # noqa: E402
from pipeline.engine.nst.objective import Objective, ObjectiveWeights, style_targets  # noqa: E402

LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


@dataclass(frozen=True)
class Variant:
    dtype: torch.dtype | None = None  # autocast dtype; None = fp32
    layout: torch.memory_format = torch.contiguous_format
    threads: int | None = None  # intra-op threads; None = torch's default (physical cores)
    compile: bool = False  # torch.compile (inductor) of the objective


VARIANTS = {
    "fp32": Variant(),
    "fp32 1 thread": Variant(threads=1),
    "fp32 channels_last": Variant(layout=torch.channels_last),
    "fp32 torch.compile": Variant(compile=True),
    "fp32 channels_last torch.compile": Variant(layout=torch.channels_last, compile=True),
    "bf16 autocast": Variant(dtype=torch.bfloat16),
    "bf16 channels_last": Variant(dtype=torch.bfloat16, layout=torch.channels_last),
}


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return path.read_text().split()[0] if path.exists() else "?"


def build(size: int, variant: Variant, device: str) -> tuple[Callable[[], None], float]:
    """An evaluation closure for ``variant`` at ``size`` (4:3), and the seconds its first call took."""
    features = vgg19_features()
    init_like_torchvision(features, seed=0)
    features = features.eval().to(device).to(memory_format=variant.layout)
    weights = ObjectiveWeights(1.0, 1e6, 0.0, ("conv4_2",), LAYERS, (0.2,) * 5)
    extractor = FeatureExtractor(features, weights.layers)
    height, width = size * 3 // 4, size  # a 4:3 photo
    content = torch.rand(1, 3, height, width, device=device).contiguous(memory_format=variant.layout)
    style = torch.rand(1, 3, size, size, device=device).contiguous(memory_format=variant.layout)
    objective = Objective(extractor, content, style_targets(extractor, [style], [1.0], LAYERS), weights,
                          compute_dtype=variant.dtype)
    forward = torch.compile(objective) if variant.compile else objective
    x = content.clone().requires_grad_(True)

    def evaluate() -> None:
        x.grad = None
        forward(x).backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    began = time.perf_counter()
    evaluate()  # warm-up: allocator, oneDNN/cuDNN kernel choice, compilation
    return evaluate, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: all that apply")
    args = parser.parse_args()
    native_bf16 = args.device != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    names = args.variants or [name for name, v in VARIANTS.items() if v.dtype is None or native_bf16]
    default_threads = torch.get_num_threads()
    print(f"device {args.device}, {default_threads} threads, torch {torch.__version__}; "
          f"native CPU bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    for size in args.sizes:
        evaluations: dict[str, Callable[[], None]] = {}
        for name in names:
            torch.set_num_threads(VARIANTS[name].threads or default_threads)
            evaluations[name], first = build(size, VARIANTS[name], args.device)
            if VARIANTS[name].compile:
                print(f"{size:5d} px  {name:34s} first call (compiling) {first:7.1f} s", flush=True)
        times: dict[str, list[float]] = {name: [] for name in names}
        loads = [loadavg()]
        for _ in range(args.rounds):
            for name in names:  # interleaved: every variant once per round
                torch.set_num_threads(VARIANTS[name].threads or default_threads)
                began = time.perf_counter()
                evaluations[name]()
                times[name].append(time.perf_counter() - began)
            loads.append(loadavg())
        torch.set_num_threads(default_threads)
        reference = statistics.median(times[names[0]])
        for name in names:
            cost = statistics.median(times[name])
            print(f"{size:5d} px (4:3)  {name:34s} {cost:8.3f} s/evaluation  ({cost / reference:5.2f}x {names[0]})",
                  flush=True)
        print(f"        loadavg during the rounds: {' '.join(loads)}", flush=True)


if __name__ == "__main__":
    main()
