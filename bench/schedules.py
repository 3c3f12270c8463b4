"""Compare optimisation schedules on one photo: seconds and the loss of the saved (8-bit) image.

Not a test: it prints one line per candidate. This is how the default schedule was
chosen (see README, "Speed and memory"). Each candidate is a JSON object of
``EngineSettings`` fields, plus ``"bf16": true`` for bf16 autocast. Example::

    python bench/schedules.py --weights HED_VGG19.pth --photo DUSK_PHOTO.jpg \\
        --size 256 '{"iterations": 300}' \\
        '{"iterations": 40, "box": "ste", "pyramid": [0.5], "pyramid_iterations": [60], "bf16": true}'

Candidates with a ``time_budget`` (and ``final_share``) compare ways of splitting a
budget; ``--rounds`` repeats the whole list, interleaved, so machine load affects
every candidate alike (the load average is printed on each line). The first run of
each working size is a warm-up and is not printed.

Use trained filters (a HED-to-VGG19 conversion script (not in this repository)): random weights converge differently.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.engine.device import configure_cpu_runtime

configure_cpu_runtime()  # as the photostyle command does, before torch is imported

import torch  # noqa: E402

from pipeline.job.imageio import load_photo, resize_long_edge
from pipeline.engine.nst.engine import EngineSettings, stylize
from pipeline.engine.nst.layers import FeatureExtractor
from pipeline.engine.nst.objective import Objective, ObjectiveWeights, style_targets
from pipeline.engine.nst.schedule import EvaluationCosts
from pipeline.engine.tensors import image_to_tensor, tensor_to_image
from pipeline.engine.weights import load_features

REPO = Path(__file__).resolve().parent.parent
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--photo", required=True)
    parser.add_argument("--style", default=str(REPO / "styles" / "starry_night.jpg"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--style-weight", type=float, default=1e6)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the candidates, interleaved")
    parser.add_argument("candidates", nargs="+", help="JSON objects of EngineSettings fields (+ bf16)")
    args = parser.parse_args()

    weights = ObjectiveWeights(1.0, args.style_weight, 0.0, ("conv4_2",), STYLE_LAYERS, (0.2,) * 5)
    extractor = FeatureExtractor(load_features(args.weights), weights.layers)
    photo = load_photo(Path(args.photo), 10**9).image
    style = load_photo(Path(args.style), 10**9).image
    content = image_to_tensor(resize_long_edge(photo, args.size, 16))
    targets: dict[int, dict[str, torch.Tensor]] = {}

    def objective_at(level_content: torch.Tensor, dtype: torch.dtype | None = None) -> Objective:
        long_edge = max(level_content.shape[-2:])
        if long_edge not in targets:  # style targets once per size, outside the timed runs' comparison
            resized = image_to_tensor(resize_long_edge(style, long_edge, 16))
            targets[long_edge] = style_targets(extractor, [resized], [1.0], STYLE_LAYERS)
        return Objective(extractor, level_content, targets[long_edge], weights, compute_dtype=dtype)

    scorer = objective_at(content)  # fp32, working size: the same yardstick for every candidate
    costs = EvaluationCosts()  # kept between runs, as the worker keeps it between photos
    print(f"working size {content.shape[3]}x{content.shape[2]}, style {Path(args.style).name}, "
          f"{torch.get_num_threads()} threads")

    def run(text: str) -> tuple[float, float, list[int]]:
        spec = json.loads(text)
        dtype = torch.bfloat16 if spec.pop("bf16", False) else None
        settings = EngineSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
        began = time.perf_counter()
        result = stylize(content, lambda c, dtype=dtype: objective_at(c, dtype), settings, min_side=16, costs=costs)
        seconds = time.perf_counter() - began
        saved = image_to_tensor(tensor_to_image(result.image))  # what the user gets: clamped, 8-bit
        return seconds, scorer.evaluate(saved).total, list(result.level_evaluations)

    run('{"iterations": 3, "pyramid": [0.5], "pyramid_iterations": [3]}')  # warm-up: kernels for both sizes
    for _ in range(args.rounds):
        for text in args.candidates:
            load = Path("/proc/loadavg").read_text().split()[0]
            seconds, score, levels = run(text)
            print(f"{seconds:7.1f} s  loss {score:.3g}  evaluations {levels}  {text}  (loadavg {load})", flush=True)


if __name__ == "__main__":
    main()
