"""``config.yaml`` as a whole: the document assembled and validated, the entry points of the package.

Why a module of its own: what pydantic validates is not what the user wrote.
Every image in the ``styles`` folder becomes a preset of its own, and every
preset starts from ``preset_defaults``; this module assembles that document,
runs the models (:mod:`~pipeline.config.models`) and the folder checks
(:mod:`~pipeline.config.folders`) over it, and reports every problem at once
through :mod:`~pipeline.config.messages`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.config.folders import folder_problems, preset_name_problems, style_preset_name
from pipeline.config.messages import ProblemCollector, data_path, did_you_mean, pydantic_message, where_written
from pipeline.config.models import ConfigBase, PluginOptions, PresetFields, build_config_model, resolve_config_path
from pipeline.errors import ConfigError
from pipeline.config.yamlsource import YamlDocument


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


STYLE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def style_folder_images(folder: Path) -> dict[str, Path]:
    """Preset name -> image, for every image in the styles folder (the name comes from the file name)."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in STYLE_EXTENSIONS or not path.is_file():
            continue
        found.setdefault(style_preset_name(path.stem), path)
    return found


def _add_style_folder_presets(data: dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], set[str]]:
    """Every image in ``styles`` becomes a preset of its own name, unless a preset has that name.

    A preset of that name without a ``style`` key gets the image (so a user can
    override settings for a dropped-in style). Returns the data and the names added.
    """
    folder = data.get("styles", ConfigBase.model_fields["styles"].default)
    presets = data.get("presets", {})
    if not isinstance(folder, (str, Path)) or not isinstance(presets, Mapping):
        return data, set()
    presets = dict(presets)
    added: set[str] = set()
    for name, image in style_folder_images(resolve_config_path(Path(folder), base_dir)).items():
        if name not in presets:
            presets[name] = {"style": str(image)}
            added.add(name)
        elif isinstance(presets[name], Mapping) and "style" not in presets[name]:
            presets[name] = {**presets[name], "style": str(image)}
    return {**data, "presets": presets}, added


def _apply_preset_defaults(data: dict[str, Any]) -> dict[str, Any]:
    defaults = data.get("preset_defaults") or {}
    presets = data.get("presets")
    if not isinstance(defaults, Mapping) or not isinstance(presets, Mapping):
        return data
    data = dict(data)
    data["presets"] = {
        name: _deep_merge(defaults, preset) if isinstance(preset, Mapping) else preset
        for name, preset in presets.items()
    }
    return data


def _default_preset_problems(data: Mapping[str, Any], problems: ProblemCollector) -> None:
    presets, default = data.get("presets"), data.get("default_preset")
    if isinstance(presets, Mapping) and presets and isinstance(default, str) and default not in presets:
        known = ", ".join(sorted(map(str, presets)))
        hint = did_you_mean(default, presets)
        problems.add(("default_preset",), f"unknown preset {default!r}{hint} (presets: {known})")


def validate_config(doc: YamlDocument, path: Path, extra_fields: PresetFields | None = None) -> Any:
    """Validate a parsed YAML document; return the Config or raise ConfigError listing every problem."""
    problems = ProblemCollector(path, doc)
    if not isinstance(doc.data, Mapping):
        problems.add((), "the config must be a mapping of keys to values")
        raise ConfigError(problems.problems)
    raw: Mapping[str, Any] = doc.data
    data, from_folder = _add_style_folder_presets(dict(raw), path.parent)
    data = _apply_preset_defaults(data)
    model = build_config_model(extra_fields)
    preset_name_problems(raw, problems)
    _default_preset_problems(data, problems)
    folder_problems(raw, path.parent, problems)
    config = None
    try:
        config = model.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        for error in exc.errors():
            key = data_path(data, error["loc"])
            problems.add(where_written(key, raw), pydantic_message(error, model, key))
    if problems.problems:
        raise ConfigError(problems.problems)
    for name, preset in config.presets.items():
        config.preset_origins[name] = (
            f"{preset.style} (styles folder)" if name in from_folder else f"{path}:{doc.line_of(('presets', name))}"
        )
    return config


def validate_plugin_options(doc: YamlDocument, path: Path) -> PluginOptions:
    """Validate just the ``plugins`` section: it decides which plugins (and so which keys) exist."""
    raw = doc.data.get("plugins", {}) if isinstance(doc.data, Mapping) else {}
    problems = ProblemCollector(path, doc)
    try:
        return PluginOptions.model_validate(raw or {}, context={"base_dir": path.parent})
    except ValidationError as exc:
        for error in exc.errors():
            key = data_path(raw, error["loc"])
            problems.add(("plugins",) + key, pydantic_message(error, PluginOptions, key))
        raise ConfigError(problems.problems) from None
