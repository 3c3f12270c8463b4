"""``photostyle init [DIR]``: set up a folder to run photostyle in, from what the package carries.

It writes the bundled, commented ``config.yaml`` (the repository's own file, the
single source: it is copied as it is, never rewritten), copies the bundled style
images into ``DIR/styles`` and makes the folders the config names (``inbox/`` with
one sub-folder per preset, ``outbox/``, ``processed/``, ``failed/``, ``state/``),
plus ``config.schema.json`` for editors (the first line of ``config.yaml`` points to it).

The styles are *copied*, not referenced where they are installed: the styles folder
is also where a user drops images of their own (each becomes a preset), a pipx or
venv upgrade would move or remove installed files, and the config's relative
``styles/…`` paths then work as they do in a checkout. An existing ``config.yaml``
is never overwritten, nor is any style image already in ``DIR/styles``.

Where the bundle is: in an installed wheel, ``pipeline/_bundled/`` (the build hook in
``setup.py`` puts ``config.yaml`` and ``styles/`` there); in a checkout (``pip install
-e .``), the top of the repository itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.errors import ConfigError, PhotostyleError

BUNDLE_FOLDER = "_bundled"  # inside the package, in a wheel (setup.py writes it at build time)
CONFIG_NAME = "config.yaml"
STYLES_NAME = "styles"
SCHEMA_NAME = "config.schema.json"
STYLE_FILES = (".png", ".jpg", ".jpeg", ".webp", ".md")  # the images, and where they came from (SOURCES.md)


def bundle_root() -> Path:
    """The folder holding the bundled ``config.yaml`` and ``styles/``: the installed package's, else the checkout."""
    package = Path(__file__).resolve().parents[1]
    for root in (package / BUNDLE_FOLDER, package.parent):
        if (root / CONFIG_NAME).is_file() and (root / STYLES_NAME).is_dir():
            return root
    raise PhotostyleError(f"this installation of photostyle carries no {CONFIG_NAME} and styles (looked in "
                          f"{package / BUNDLE_FOLDER} and {package.parent}); reinstall it from a wheel or a checkout")


def bundled_styles(root: Path) -> list[Path]:
    return sorted(path for path in (root / STYLES_NAME).iterdir()
                  if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in STYLE_FILES)


def init(folder: Path) -> str:
    """Set up ``folder``; return what was done and what to run next. Exit 2 when a config is already there."""
    from pipeline.app import load_app
    from pipeline.commands.info import schema

    folder = folder.expanduser().absolute()
    config = folder / CONFIG_NAME
    if config.exists() or config.is_symlink():
        raise ConfigError([f"{config}: already exists; not overwritten (edit it, or run `photostyle init` "
                           "in another folder)"])
    root = bundle_root()
    styles = folder / STYLES_NAME
    styles.mkdir(parents=True, exist_ok=True)
    copied = 0
    for source in bundled_styles(root):
        target = styles / source.name
        if not target.exists() and not target.is_symlink():
            shutil.copyfile(source, target)
            copied += 1
    with open(config, "x", encoding="utf-8") as handle:  # "x": a config that appeared meanwhile is not replaced
        handle.write((root / CONFIG_NAME).read_text(encoding="utf-8"))
    app = load_app(config)  # the folders come from the config as written, so they are the ones it uses
    made = []
    for name in ("inbox", "outbox", "processed", "failed", "state"):
        path = getattr(app.config, name)
        path.mkdir(parents=True, exist_ok=True)
        made.append(_shown(path, folder) + "/")
    for preset in app.config.presets:
        (app.config.inbox / preset).mkdir(exist_ok=True)
    if not (folder / SCHEMA_NAME).exists():
        (folder / SCHEMA_NAME).write_text(schema(config) + "\n", encoding="utf-8")
    where = "" if folder == Path.cwd().absolute() else f"cd {_quoted(folder)} && "
    return "\n".join([
        f"wrote {config}",
        f"copied {copied} bundled style file{'s' if copied != 1 else ''} into {styles}/ "
        "(any image you add there becomes a preset too)",
        f"made {', '.join(made)} (inbox/ has one folder per preset: {', '.join(app.config.presets)})",
        f"next: {where}photostyle watch   (or: photostyle process PHOTO --preset NAME)",
        "the first run downloads the VGG19 weights (548 MB); offline, see `photostyle weights import`, "
        "or set `weights: random` under `model:` to try everything (the pictures will not be art)",
    ])


def _shown(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


def _quoted(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))
