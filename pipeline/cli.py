"""The ``photostyle`` command line: argument parsing and error-to-exit-code mapping, nothing else.

Exit status: 0 success; 1 some photo failed; 2 invalid config, plugin or usage;
3 weights unavailable; 130 interrupted; 141 stdout closed early (``photostyle presets | head``),
the status ``cat`` and friends end with when SIGPIPE stops them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import ConfigError, PhotostyleError


def _config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-c", "--config", type=Path, default=None,
        help="config file (default: $PHOTOSTYLE_CONFIG or ./config.yaml)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    common = _config_parent()
    parser = argparse.ArgumentParser(prog="photostyle", description="Turn photos into artwork with neural style transfer.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    process = commands.add_parser("process", parents=[common], help="stylize photos once, in the foreground")
    process.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    process.add_argument("--preset", help="preset name (default: the config's default_preset)")
    process.add_argument("-o", "--output-dir", type=Path, help="write here instead of outbox/<preset>/")
    process.add_argument("--json", action="store_true", help="one JSON object per photo on stdout")

    watch = commands.add_parser("watch", parents=[common], help="run the watch-folder daemon in the foreground")
    watch.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines as text or JSON")
    status = commands.add_parser("status", parents=[common], help="the daemon's queue, running job and recent errors")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument("--state", type=Path, metavar="DIR",
                        help="the daemon's state folder (default: the config's; works with a broken config)")
    service = commands.add_parser("service", help="run photostyle as a systemd service")
    service_commands = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    service_install = service_commands.add_parser("install", parents=[common], help="write a systemd unit")
    service_install.add_argument("--user", action="store_true", help="a user unit (~/.config/systemd/user)")
    service_install.add_argument("--dry-run", action="store_true", help="print the unit instead of writing it")
    service_install.add_argument("--force", action="store_true",
                                 help="write the unit even if it cannot work (a folder its sandbox hides, "
                                      "weights its account cannot read); without it, exit 2 saying why")

    init = commands.add_parser("init", help="write a commented config.yaml, the bundled styles and the folders into DIR")
    init.add_argument("dir", nargs="?", type=Path, default=Path("."), metavar="DIR",
                      help="the folder to set up (default: the current one); an existing config.yaml is kept")

    commands.add_parser("check", parents=[common], help="validate the config; exit 2 listing every problem")
    commands.add_parser("schema", parents=[common], help="print the config's JSON Schema")
    commands.add_parser("plugins", parents=[common], help="list loaded plugins, their source and hooks")
    commands.add_parser("presets", parents=[common], help="list presets with their style images and size")

    show = commands.add_parser("show", parents=[common], help="show how a result was made (its sidecar)")
    show.add_argument("output", type=Path, metavar="OUTPUT")
    show.add_argument("--json", action="store_true", help="print the raw sidecar record")
    commands.add_parser("gallery", parents=[common], help="rebuild outbox/index.html from the results' sidecars")
    preview = commands.add_parser("preview", parents=[common], help="one photo in several presets, on a contact sheet")
    preview.add_argument("photo", type=Path, metavar="PHOTO")
    preview.add_argument("--presets", metavar="A,B,C", help="comma-separated presets (default: all)")
    preview.add_argument("-o", "--output", type=Path, help="sheet file (default: ./<photo stem>-preview.png)")
    preview.add_argument("--size", type=int, metavar="N", help="long edge of each cell in px (default: 160)")

    train = commands.add_parser("train", parents=[common],
                                help="distil a preset into a fast network (engine: fast); resumes where it stopped")
    train.add_argument("preset", metavar="PRESET")
    train.add_argument("--photos", type=Path, action="append", default=[], metavar="DIR",
                       help="more training photos (default: those in processed/; none: the bundled ones)")
    train.add_argument("--minutes", type=float, metavar="N", help="stop after N minutes (the model is written)")
    train.add_argument("--steps", type=int, default=2000, metavar="N", help="steps in all (default: 2000)")
    train.add_argument("--crop", type=int, default=256, metavar="PX", help="training crop side (default: 256)")
    train.add_argument("--batch", type=int, default=4, metavar="N", help="crops per step (default: 4)")
    train.add_argument("--checkpoint-every", type=int, default=25, metavar="N",
                       help="steps between checkpoints (default: 25)")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")

    weights = commands.add_parser("weights", help="manage the VGG19 weights")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    weights_import = weights_commands.add_parser(
        "import", parents=[common], help="validate a VGG19 state dict and cache it for offline use"
    )
    weights_import.add_argument("file", type=Path, metavar="FILE")
    weights_commands.add_parser(
        "status", parents=[common], help="show the VGG19 weights the config uses; exit 3 when they are not usable"
    )
    return parser


class _PlainFormatter(logging.Formatter):
    """``level: message`` for one-shot commands, with control characters escaped (names may hold them)."""

    def format(self, record: logging.LogRecord) -> str:
        from pipeline.files.textsafe import printable

        return f"{record.levelname}: {printable(record.getMessage())}"


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PlainFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for name in ("PIL",):
        logging.getLogger(name).setLevel(logging.WARNING)


def _configured_weights(config: Path | None) -> str:
    """``model.weights`` of the config; ``torchvision`` when no config was given and none is found."""
    from pipeline.app import default_config_path, load_app

    if config is None and not default_config_path().is_file():
        return "torchvision"
    return load_app(config).config.model.weights


def _require_config(config: Path | None) -> None:
    """``watch`` and ``process`` without a config: say that ``photostyle init`` writes one, in one line."""
    from pipeline.app import CONFIG_ENV, default_config_path

    path = Path(config or default_config_path()).expanduser().absolute()
    if not path.is_file():
        here = "" if path.parent == Path.cwd().absolute() else f" {shlex.quote(str(path.parent))}"
        raise ConfigError([f"{path}: config file not found; `photostyle init{here}` writes one there with the "
                           f"bundled styles and the folders (or use -c FILE or set ${CONFIG_ENV})"])


def _run(args: argparse.Namespace) -> int:
    from pipeline.app import default_config_path, load_app
    from pipeline.commands import info

    if args.command == "init":
        from pipeline.commands.init import init

        print(init(args.dir))
        return 0
    if args.command in ("watch", "process"):
        _require_config(args.config)
    if args.command == "schema":
        print(info.schema(args.config or default_config_path()))
        return 0
    if args.command == "weights":
        from pipeline.engine import weights

        if args.weights_command == "import":
            target = weights.import_weights(args.file)
            print(f"imported {args.file} -> {target}")
            print(weights.weights_status().describe())
            return 0
        report = weights.weights_status(_configured_weights(args.config))
        print(report.describe())
        return 0 if report.usable else 3
    if args.command == "show":
        from pipeline.commands.show import show

        print(show(args.output, args.json))
        return 0
    if args.command == "watch":
        from pipeline.daemon.loop import watch
        from pipeline.logs import setup_logging

        setup_logging(args.log_format)
        return watch(args.config)
    if args.command == "status":
        from pipeline.commands.status import state_folder, status

        print(status(state_folder(args.config, args.state), args.json))
        return 0
    app = load_app(args.config)
    if args.command == "service":
        from pipeline.commands.service import service_install

        print(service_install(app, user=args.user, dry_run=args.dry_run, force=args.force))
    elif args.command == "check":
        print(info.check(app))
    elif args.command == "plugins":
        print(info.plugins(app))
    elif args.command == "presets":
        print(info.presets(app))
    elif args.command == "process":
        from pipeline.commands.process import process

        return process(app, args.photos, args.preset, args.output_dir, args.json)
    elif args.command == "train":
        from pipeline.commands.train import TrainingOptions, train

        options = TrainingOptions(photos=tuple(args.photos), steps=args.steps, minutes=args.minutes, fresh=args.fresh,
                                  crop=args.crop, batch=args.batch, checkpoint_every=args.checkpoint_every)
        print(train(app, args.preset, options))
    elif args.command == "gallery":
        from pipeline.commands.gallery import gallery

        print(gallery(app))
    elif args.command == "preview":
        from pipeline.commands.preview import preview

        return preview(app, args.photo, args.presets, args.output, args.size)
    return 0


def _quiet_closed_stdout() -> int:
    """The reader of our stdout went away (``| head``): stop quietly, as SIGPIPE would stop ``cat``.

    Python ignores SIGPIPE, so the write raised instead; stdout is pointed at
    /dev/null so the flush at exit cannot raise a second time.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.engine.device import configure_cpu_runtime

    configure_cpu_runtime()  # before anything imports torch
    try:
        args = build_parser().parse_args(argv)
        _setup_logging()
        code = _main(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows up here for short output
        return code
    except BrokenPipeError:
        return _quiet_closed_stdout()


def _main(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except PhotostyleError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
