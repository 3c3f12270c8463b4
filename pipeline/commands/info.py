"""Read-only commands: ``check``, ``schema``, ``plugins``, ``presets``, ``weights status``."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.app import App
from pipeline.config import PluginOptions, build_config_model, validate_plugin_options
from pipeline.errors import ConfigError
from pipeline.plugin_host import load_plugins
from pipeline.daemon.sync_roots import failed_outside, refuse_unsafe_after
from pipeline.config.yamlsource import YamlSyntaxError, read_yaml


def check(app: App) -> str:
    """One OK line; ConfigError (exit 2) for a layout whose ``watch.after`` would delete originals elsewhere."""
    config = app.config
    refuse_unsafe_after(app)
    lines = [f"{app.config_path}: OK ({len(config.presets)} presets, {len(app.host.sources)} plugins)"]
    warning = failed_outside(config)
    if warning:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def schema(config_path: Path) -> str:
    """The JSON Schema of the config, including the preset keys of the plugins it loads."""
    options = PluginOptions()
    if config_path.is_file():
        try:
            options = validate_plugin_options(read_yaml(config_path), config_path.absolute())
        except (YamlSyntaxError, ConfigError, OSError):  # a broken config still gets the built-ins' schema
            options = PluginOptions()
    model = build_config_model(load_plugins(options).preset_fields())
    document = model.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "photostyle config.yaml"
    return json.dumps(document, indent=2)


def plugins(app: App) -> str:
    lines = []
    for info in app.host.infos():
        lines.append(f"{info.name}  ({info.source})")
        lines.append(f"    hooks: {', '.join(info.hooks) or '-'}")
    return "\n".join(lines)


def presets(app: App) -> str:
    config = app.config
    lines = []
    for name, preset in config.presets.items():
        marker = " (default)" if name == config.default_preset else ""
        styles = ", ".join(
            f"{ref.image}" + (f" x{ref.weight:g}" if len(preset.style_images) > 1 else "") for ref in preset.style_images
        )
        origin = config.preset_origins.get(name, "?")
        lines.append(f"{name}{marker}: size {preset.size} px, style {styles}  [from {origin}]")
    return "\n".join(lines)
