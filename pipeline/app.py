"""Loading a config file together with the plugins that shape it.

The ``plugins`` section is validated first because it decides which plugins load,
and the plugins decide which preset keys exist; then the whole file is validated.
Every command goes through :func:`load_app`, so a broken config stops them all
the same way: ``FILE:LINE: key: message`` lines and exit status 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import validate_config, validate_plugin_options
from pipeline.errors import ConfigError, PluginError
from pipeline.plugin_host import PluginHost, load_plugins
from pipeline.config.yamlsource import YamlSyntaxError, read_yaml

DEFAULT_CONFIG = "config.yaml"
CONFIG_ENV = "PHOTOSTYLE_CONFIG"


def default_config_path() -> Path:
    """``$PHOTOSTYLE_CONFIG`` when set, else ``./config.yaml``."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


@dataclass
class App:
    """A validated config and its plugin host."""

    config_path: Path
    config: Any
    host: PluginHost


def load_app(config_path: Path | None = None) -> App:
    """Read, validate and load plugins; raise ConfigError or PluginError on any problem."""
    path = Path(config_path or default_config_path()).expanduser().absolute()
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found (use -c FILE or set ${CONFIG_ENV})"])
    try:
        doc = read_yaml(path)
    except YamlSyntaxError as exc:
        raise ConfigError(exc.format(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read config: {exc}"]) from None
    host = load_plugins(validate_plugin_options(doc, path))
    try:
        fields = host.preset_fields()
        config = validate_config(doc, path, fields)
    except ValueError as exc:  # a plugin's options model that pydantic cannot build
        raise PluginError(str(exc)) from None
    return App(config_path=path, config=config, host=host)
