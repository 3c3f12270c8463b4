"""Build hook: the wheel carries the bundled styles and the default config as package data.

``config.yaml`` and ``styles/`` live at the top of the repository (a checkout runs
from there), outside the ``pipeline`` package, so package-data patterns cannot name
them. At build time they are copied into ``pipeline/_bundled/`` of the build
folder, and so into the wheel; ``photostyle init`` copies them out of it
(:mod:`pipeline.commands.init`). An editable install (``pip install -e .``) needs no
copy: it finds them at the top of the checkout. Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLE = Path("pipeline", "_bundled")
STYLE_FILES = (".png", ".jpg", ".jpeg", ".webp", ".md")  # keep in step with pipeline/commands/init.py


def bundled_files() -> list[tuple[Path, Path]]:
    """(source, path inside the package tree) for config.yaml and every style image and note."""
    config = ROOT / "config.yaml"
    styles = ROOT / "styles"
    if not config.is_file() or not styles.is_dir():
        raise SystemExit(f"photostyle build: {config} and {styles}/ must be there to bundle them")
    files = [(config, BUNDLE / "config.yaml")]
    files += [(path, BUNDLE / "styles" / path.name) for path in sorted(styles.iterdir())
              if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in STYLE_FILES]
    return files


class BuildPyWithBundle(build_py):
    """``build_py`` plus the copy of config.yaml and styles/ into ``pipeline/_bundled/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the checkout's own files are found where they are
        shutil.rmtree(Path(self.build_lib) / BUNDLE, ignore_errors=True)  # no style left over from an earlier build
        for source, relative in bundled_files():
            target = Path(self.build_lib) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [str(Path(self.build_lib) / relative) for _, relative in bundled_files()]


setup(cmdclass={"build_py": BuildPyWithBundle})
