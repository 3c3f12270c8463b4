"""Time to quality: how soon photostyle's saved image is as good as the plain baseline's.

Not a test: it prints figures. In one process, at steady state (the worker has
already stylised a photo, as a daemon has: model loaded, style targets cached):

- **baseline**: plain single-scale L-BFGS from the photo, 300 evaluations, fp32,
  raw pixels (``box: none``), as in ``bench/benchmark.py``; the loss of its image
  (clamped and 8-bit, as it would be saved) after 25, 50, 100, 200 and 300
  evaluations, with the seconds at each (from the start of the optimisation);
- **photostyle** with ``schedule.time_budget`` = 1/40, 1/20, 1/10 and 1/5 of the
  baseline's seconds: the loss of the saved image and the wall time of the whole
  job (load to save), through the job runner ``photostyle process`` uses;
- **the default preset** (no budget): the same, for comparison;
- **time to baseline quality**: the smallest budget whose saved image scores at
  or below the baseline's final one.

Every image is scored under the same objective (fp32, working size) as in
``bench/benchmark.py``. Use trained filters (a HED-to-VGG19 conversion script (not in this repository))::

    python bench/time_to_quality.py --weights HED_VGG19.pth \\
        --photo DUSK_PHOTO.jpg --style the_scream.jpg --size 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.benchmark import BASELINE_EVALUATIONS, _config, _score  # noqa: E402

SNAPSHOTS = (25, 50, 100, 200, 300)
FRACTIONS = (40, 20, 10, 5)  # budgets of 1/N of the baseline's seconds


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def engine_run(worker, photo: Path, size: int, settings, on_progress=None, record=None):
    """The engine alone on the worker's network and cached style targets (as the vgg_style stage sets
    it up); returns (seconds, result). ``record(x)`` sees every image evaluated."""
    import torch

    from pipeline.job.imageio import load_photo, resize_long_edge
    from pipeline.engine.nst.engine import stylize
    from pipeline.engine.nst.layer_names import min_side
    from pipeline.engine.nst.layers import FeatureExtractor
    from pipeline.engine.nst.objective import Objective
    from pipeline.engine.nst.schedule import EvaluationCosts
    from pipeline.engine.tensors import image_to_tensor
    from plugins.vgg_style.transfer import network, objective_weights, preset_style_targets, style_long_edge

    preset = worker.app.config.presets["bench"]
    weights = objective_weights(preset)
    extractor = FeatureExtractor(network(worker.resources), weights.layers)
    image = load_photo(photo, worker.app.config.limits.max_pixels).image
    content = image_to_tensor(resize_long_edge(image, size, min_side(weights.layers)), worker.resources.device)

    def objective_at(level_content: torch.Tensor) -> Objective:
        targets = preset_style_targets(preset, extractor, worker.resources,
                                       style_long_edge(preset, max(level_content.shape[-2:])))
        objective = Objective(extractor, level_content, targets.targets, weights)
        if record is not None:
            terms = objective.terms

            def recording_terms(x: torch.Tensor):
                record(x)
                return terms(x)

            objective.terms = recording_terms  # type: ignore[method-assign]
        return objective

    costs = worker.resources.cache.setdefault(("evaluation-costs", "bench"), EvaluationCosts())
    began = time.perf_counter()
    result = stylize(content, objective_at, settings, min_side=min_side(weights.layers), on_progress=on_progress,
                     costs=costs)
    return time.perf_counter() - began, result


def baseline_snapshots(worker, photo: Path, size: int) -> tuple[float, dict[int, tuple[float, object]]]:
    """Run the baseline; the best image so far (what the engine would return) at each snapshot."""
    from pipeline.engine.nst.engine import EngineSettings

    state: dict[str, object] = {"best": float("inf"), "best_image": None, "last": None}
    snapshots: dict[int, tuple[float, object]] = {}
    began = time.perf_counter()

    def record(x) -> None:
        state["last"] = x

    def on_progress(progress) -> None:
        if progress.loss.total < state["best"]:  # the engine keeps the best evaluated image
            state["best"] = progress.loss.total
            state["best_image"] = state["last"].detach().clone()  # type: ignore[union-attr]
        if progress.evaluation in SNAPSHOTS:
            snapshots[progress.evaluation] = (time.perf_counter() - began, state["best_image"].clone())  # type: ignore[union-attr]

    seconds, _ = engine_run(worker, photo, size, EngineSettings(iterations=BASELINE_EVALUATIONS, box="none"),
                            on_progress=on_progress, record=record)
    return seconds, snapshots


def save_png(tensor, path: Path) -> Path:
    from pipeline.engine.tensors import tensor_to_image

    tensor_to_image(tensor.clamp(0.0, 1.0)).save(path)  # clamped and 8-bit, as a saved result
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--photo", required=True)
    parser.add_argument("--style", help="style image (default: the preset's)")
    parser.add_argument("--preset", default="starry_night", help="bundled preset whose settings are used")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--fractions", type=int, nargs="+", default=list(FRACTIONS), help="budgets of 1/N")
    parser.add_argument("--shares", type=float, nargs="+", default=[],
                        help="also compare these final_share values (the engine alone, interleaved) at each budget")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the --shares comparison")
    args = parser.parse_args()
    args.device, args.precision = "cpu", None
    from pipeline.engine.device import configure_cpu_runtime

    configure_cpu_runtime()  # as the photostyle command does, before torch is imported
    import torch

    from pipeline.app import load_app
    from pipeline.job.runner import JobRequest
    from pipeline.execution.worker import Worker

    folder = Path(tempfile.mkdtemp(prefix="photostyle-ttq-"))
    config_path = _config(folder, args, args.size, baseline=False)
    photo = Path(args.photo).resolve()
    app = load_app(config_path)
    worker = Worker(app)
    print(f"time to quality: {torch.get_num_threads()} threads, torch {torch.__version__}, preset {args.preset} "
          f"at {args.size} px, style {Path(args.style).name if args.style else 'the preset’s'}, photo {photo.name}")
    began = time.perf_counter()
    worker.run(JobRequest(source=photo, preset="bench", output_dir=folder / "warm-up"))
    print(f"first photo (default preset, steady state from here on): {time.perf_counter() - began:.1f} s")

    def run_preset(name: str, time_budget: float | None) -> tuple[float, float, list[int], str]:
        preset = app.config.presets["bench"]
        schedule = preset.schedule.model_copy(update={"time_budget": time_budget})
        app.config.presets[name] = preset.model_copy(update={"schedule": schedule})
        load = loadavg()
        result = worker.run(JobRequest(source=photo, preset=name, output_dir=folder / name))
        score = _score(config_path, result.output, worker, photo)["total"]
        return result.seconds, score, result.report["engine"]["level_evaluations"], load

    default_seconds, default_loss, default_levels, load = run_preset("default", None)
    print(f"default preset, second photo: {default_seconds:.1f} s, loss {default_loss:.4g}, evaluations per level "
          f"{default_levels} (loadavg {load})", flush=True)

    load = loadavg()
    seconds, snapshots = baseline_snapshots(worker, photo, args.size)
    print(f"\nbaseline (plain L-BFGS, fp32, raw pixels, single scale), {seconds:.1f} s of optimisation "
          f"(loadavg {load} at start, {loadavg()} at end):")
    scores: dict[int, float] = {}
    for count, (at, image) in sorted(snapshots.items()):
        scores[count] = _score(config_path, save_png(image, folder / f"baseline-{count}.png"), worker, photo)["total"]
        print(f"  after {count:3d} evaluations: {at:6.1f} s  loss {scores[count]:.4g}")
    target = scores[max(scores)]

    print("\nphotostyle with a time budget (steady state; wall = the whole job, load to save):")
    reached: list[tuple[int, float, float]] = []
    for fraction in sorted(args.fractions, reverse=True):
        budget = seconds / fraction
        wall, loss, levels, load = run_preset(f"budget-{fraction}", budget)
        ok = loss <= target
        print(f"  1/{fraction:<3d} = {budget:5.1f} s budget: wall {wall:5.1f} s  loss {loss:.4g}  "
              f"({'at or below' if ok else 'ABOVE'} the baseline's {target:.4g})  evaluations per level {levels}  "
              f"(loadavg {load})", flush=True)
        if ok:
            reached.append((fraction, budget, wall))
    if args.shares:
        from plugins.vgg_style.transfer import engine_settings

        print("\nsplitting a budget: the working size's share of the time (engine alone, loss of the 8-bit image):")
        preset = app.config.presets["bench"]
        for _ in range(args.rounds):
            for fraction in sorted(args.fractions, reverse=True):
                for share in args.shares:  # interleaved: load affects every share alike
                    settings = engine_settings(preset)
                    settings = type(settings)(**{**settings.__dict__, "time_budget": seconds / fraction,
                                                 "final_share": share})
                    load = loadavg()
                    spent, result = engine_run(worker, photo, args.size, settings)
                    loss = _score(config_path, save_png(result.image, folder / f"share-{fraction}-{share}.png"),
                                  worker, photo)["total"]
                    print(f"  1/{fraction:<3d} ({seconds / fraction:5.1f} s) final_share {share:4.2f}: {spent:5.1f} s  "
                          f"loss {loss:.4g}  evaluations per level {list(result.level_evaluations)}  "
                          f"(loadavg {load})", flush=True)

    print(f"\ndefault preset vs baseline: {seconds / default_seconds:.1f}x faster "
          f"(second photo, whole job {default_seconds:.1f} s vs {seconds:.1f} s of optimisation), "
          f"loss {default_loss:.4g} vs {target:.4g}")
    if reached:
        fraction, budget, wall = max(reached)
        print(f"time to baseline quality: 1/{fraction} of the baseline's time ({budget:.1f} s budget, "
              f"{wall:.1f} s wall for the whole job: {seconds / wall:.1f}x faster)")
    else:
        print("time to baseline quality: not reached by any budget tried")


if __name__ == "__main__":
    main()
