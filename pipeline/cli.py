"""The ``photostyle`` command line: argument parsing and error-to-exit-code mapping, nothing else.

Exit status: 0 success; 1 some photo failed; 2 invalid config, plugin or usage;
3 weights unavailable; 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
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

    commands.add_parser("check", parents=[common], help="validate the config; exit 2 listing every problem")
    commands.add_parser("schema", parents=[common], help="print the config's JSON Schema")
    commands.add_parser("plugins", parents=[common], help="list loaded plugins, their source and hooks")
    commands.add_parser("presets", parents=[common], help="list presets with their style images and size")

    weights = commands.add_parser("weights", help="manage the VGG19 weights")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    weights_import = weights_commands.add_parser("import", help="validate a VGG19 state dict and cache it for offline use")
    weights_import.add_argument("file", type=Path, metavar="FILE")
    weights_commands.add_parser("status", help="show which VGG19 weights are cached")
    return parser


def _setup_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s: %(message)s")
    for name in ("PIL",):
        logging.getLogger(name).setLevel(logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    from pipeline.app import default_config_path, load_app
    from pipeline.commands import info

    if args.command == "schema":
        print(info.schema(args.config or default_config_path()))
        return 0
    if args.command == "weights":
        from pipeline import weights

        if args.weights_command == "import":
            target = weights.import_weights(args.file)
            print(f"imported {args.file} -> {target}")
        print(weights.weights_status().describe())
        return 0
    app = load_app(args.config)
    if args.command == "check":
        print(info.check(app))
    elif args.command == "plugins":
        print(info.plugins(app))
    elif args.command == "presets":
        print(info.presets(app))
    elif args.command == "process":
        from pipeline.commands.process import process

        return process(app, args.photos, args.preset, args.output_dir, args.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
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
