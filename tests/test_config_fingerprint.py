""""Never twice" means the same work: fingerprint.settings_hash changes with what changes the output,
and only with that (unrelated plugins and unset sections don't; the weights' content does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_config, write_text
from pipeline.app import load_app
from pipeline.config.settings_hash import settings_hash
from pipeline.engine.weights import cache_path

PLUGIN = '''
from typing import Any
from pydantic import BaseModel, Field
from pipeline import hookimpl


class SepiaOptions(BaseModel):
    strength: float = Field(1.0, ge=0, le=1)


@hookimpl
def preset_options() -> dict[str, tuple[Any, Any]]:
    return {"sepia": (SepiaOptions | None, None), "grain": (float, 0.0)}
'''


def hash_of(config: Path, preset: str = "tiny") -> str:
    return settings_hash(load_app(config).config, preset)


def test_enabling_an_unrelated_plugin_keeps_the_hash(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_text(project / "sepia.py", PLUGIN)
    before = hash_of(write_config(project))
    after = hash_of(write_config(project, extra={"plugins": {"paths": ["sepia.py"]}}))
    assert after == before


def test_a_plugin_section_set_away_from_its_default_changes_the_hash(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_text(project / "sepia.py", PLUGIN)
    plugins = {"plugins": {"paths": ["sepia.py"]}}
    plain = hash_of(write_config(project, extra=plugins))
    assert hash_of(write_config(project, extra=plugins, preset={"grain": 0.0, "sepia": None})) == plain
    assert hash_of(write_config(project, extra=plugins, preset={"grain": 0.5})) != plain
    assert hash_of(write_config(project, extra=plugins, preset={"sepia": {"strength": 0.8}})) != plain


def test_unset_core_sections_do_not_change_the_hash_but_settings_do(tmp_path: Path) -> None:
    project = tmp_path / "project"
    plain = hash_of(write_config(project))
    assert hash_of(write_config(project, preset={"resize": None, "watermark": None})) == plain
    assert hash_of(write_config(project, preset={"resize": 48})) != plain
    assert hash_of(write_config(project, preset={"iterations": 4})) != plain


def test_weights_are_named_by_their_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing other weights (same name `torchvision`) is new work; a weights file edited in place too."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    project = tmp_path / "project"
    config = write_config(project, extra={"model": {"weights": "torchvision"}})
    cached = cache_path()
    assert cached.is_relative_to(tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"first weights")
    first = hash_of(config)
    cached.write_bytes(b"other weights, imported later")
    assert hash_of(config) != first

    own = project / "vgg.pth"
    own.write_bytes(b"my weights")
    config = write_config(project, extra={"model": {"weights": "vgg.pth"}})
    mine = hash_of(config)
    own.write_bytes(b"my retrained weights")
    assert hash_of(config) != mine


def test_the_same_weights_anywhere_give_the_same_hash(tmp_path: Path) -> None:
    """The hash names the content, not the path: moving the project keeps its photos done."""
    hashes = []
    for folder in ("a", "b"):
        project = tmp_path / folder
        project.mkdir()
        (project / "vgg.pth").write_bytes(b"the same weights")
        hashes.append(hash_of(write_config(project, extra={"model": {"weights": "vgg.pth"}})))
    assert hashes[0] == hashes[1]


def test_missing_weights_do_not_stop_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    project = tmp_path / "project"
    missing_file = hash_of(write_config(project, extra={"model": {"weights": "nowhere.pth"}}))
    not_cached = hash_of(write_config(project, extra={"model": {"weights": "torchvision"}}))
    assert len(missing_file) == len(not_cached) == 16 and missing_file != not_cached
