"""Make the README's pictures: one photo in every preset of a config, plus colour preservation.

The figures go through photostyle's own job runner (a :class:`~pipeline.execution.worker.Worker`,
as ``photostyle process`` uses), with the config's presets as they are except for
the working size, the output encoding and, if given, the weights; so they can be
remade after any change to the engine, the styles or the presets::

    python docs/make_figures.py --weights /path/to/vgg19.pth          # the README's figures
    python docs/make_figures.py --weights W --photo night.jpg --presets starry_night \\
        --colour starry_night --modes histogram luminance --size 320 --out figures-night

It prints, for the photo and each result, the mean ± spread of CIE a* and b* over
the image: whether colour preservation kept the photo's palette, as a number.
Nothing is written outside ``--out`` (state and caches live in a temporary folder).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from pipeline.app import load_app  # noqa: E402
from pipeline.job.imageio import load_photo  # noqa: E402
from pipeline.job.runner import JobRequest  # noqa: E402
from pipeline.execution.worker import Worker  # noqa: E402
from plugins.color import srgb_to_lab  # noqa: E402

DEFAULT_PHOTO = REPO / "docs" / "photos" / "astronaut.jpg"


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml", help="config whose presets to draw")
    parser.add_argument("--weights", help="VGG19 weights (model.weights), if not the config's")
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="the photo (default: the astronaut)")
    parser.add_argument("--presets", nargs="*", help="presets to draw (default: every preset in the config)")
    parser.add_argument("--colour", default="starry_night",
                        help="preset drawn again with colour preservation ('' for none)")
    parser.add_argument("--modes", nargs="*", default=["histogram"], help="preserve_color modes for --colour")
    parser.add_argument("--size", type=int, default=256, help="working size (long edge, px)")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality of the figures")
    parser.add_argument("--device", help="device, if not the config's")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures", help="folder for the figures")
    return parser.parse_args(argv)


def lab_spread(image: Image.Image) -> str:
    """'a* mean ± spread | b* mean ± spread' over the image."""
    ab = srgb_to_lab(image)[..., 1:].reshape(-1, 2)
    (a_mean, b_mean), (a_std, b_std) = ab.mean(axis=0), ab.std(axis=0)
    return f"{a_mean:+.1f} ± {a_std:.1f} | {b_mean:+.1f} ± {b_std:.1f}"


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    app = load_app(args.config)
    config = app.config
    names = args.presets or list(config.presets)
    if args.colour and args.colour not in config.presets:
        sys.exit(f"{args.config}: no preset {args.colour!r} to draw with colour preservation")
    with tempfile.TemporaryDirectory(prefix="photostyle-figures-") as scratch:
        for folder in ("inbox", "outbox", "processed", "failed", "state"):
            setattr(config, folder, Path(scratch) / folder)  # nothing of the user's is touched
        if args.weights:
            special = args.weights in ("torchvision", "random")
            config.model.weights = args.weights if special else str(Path(args.weights).expanduser().resolve())
        if args.device:
            config.device = args.device
        jobs: list[tuple[str, str]] = []  # (preset, figure name)
        for name in names:
            jobs.append((name, name))
        for mode in args.modes if args.colour else []:
            variant = f"{args.colour}+{mode}"
            config.presets[variant] = config.presets[args.colour].model_copy(deep=True)
            config.presets[variant].preserve_color = mode
            jobs.append((variant, variant))
        for name, _ in jobs:
            preset = config.presets[name]
            preset.size = args.size
            preset.resize = None
            preset.watermark = None
            preset.output.format, preset.output.quality, preset.output.keep_metadata = "jpeg", args.quality, False

        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.photo.stem
        original = load_photo(args.photo, config.limits.max_pixels).image
        worker = Worker(app)
        rows = []
        for name, figure in jobs:
            result = worker.run(JobRequest(args.photo, name, output_dir=Path(scratch) / "figures" / name))
            target = args.out / f"{stem}-{figure}.jpg"
            shutil.copyfile(result.output, target)
            with Image.open(target) as image:
                rows.append((figure, lab_spread(image.convert("RGB")), result.seconds, image.size))
            print(f"{target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target}"
                  f" ({result.seconds:.0f} s)", file=sys.stderr)
        size = rows[0][3]
        photo = original.resize(size, Image.Resampling.LANCZOS)
        photo.save(args.out / f"{stem}.jpg", quality=args.quality)

    weights = config.model.weights
    print(f"\n{args.photo.name}, {size[0]} × {size[1]}, weights {weights}\n")
    print("| image | a* | b* | seconds |")
    print("| --- | --- | --- | --- |")
    print(f"| the photo | {lab_spread(photo)} | |")
    for figure, lab, seconds, _ in rows:
        print(f"| {figure} | {lab} | {seconds:.0f} |")
    total = sum(path.stat().st_size for path in args.out.glob(f"{stem}*.jpg"))
    print(f"\n{len(rows) + 1} figures, {total / 1024:.0f} KB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
