"""The configuration, ``config.yaml``: one module per job, every name importable from here.

Why a package: checking a config is four jobs that change for different reasons.

- :mod:`~pipeline.config.models`: the pydantic models (keys, types, defaults, the schema);
- :mod:`~pipeline.config.document`: the document as validated (the styles folder's presets,
  ``preset_defaults`` merged into each preset) and the entry points :func:`validate_config`
  and :func:`validate_plugin_options`;
- :mod:`~pipeline.config.messages`: every problem as ``FILE:LINE: dotted.key: message``, with
  the choices and a near match ("did you mean");
- :mod:`~pipeline.config.folders`: folders that alias or nest, and preset names (which become
  folder names) that would escape their folder.

The modules import one another in that order, upwards only (messages, models,
folders, document); none imports this package. Import from ``pipeline.config``:
the names below are its interface, whichever module holds them.
"""

from pipeline.config.document import STYLE_EXTENSIONS, style_folder_images, validate_config, validate_plugin_options
from pipeline.config.folders import (
    FOLDER_KEYS,
    GALLERY_PAGE,
    OUTBOX_OWN_NAMES,
    PHOTO_FOLDER_KEYS,
    PRESET_NAME,
    PRESET_NAME_MAX,
    PRESET_NAME_RULE,
    preset_name_problem,
    style_preset_name,
)
from pipeline.config.messages import ProblemCollector, allowed_keys, did_you_mean
from pipeline.config.models import (
    DEFAULT_CONTENT_LAYERS,
    DEFAULT_EXTENSIONS,
    DEFAULT_IGNORE,
    DEFAULT_STYLE_LAYERS,
    DEVICE_PATTERN,
    DEVICE_SYNONYMS,
    RAY_ADDRESS_PATTERN,
    RAY_ONLY_KEYS,
    SPECIAL_WEIGHTS,
    ConfigBase,
    ConfigPath,
    ExecutorOptions,
    LayerName,
    Limits,
    ModelOptions,
    OutputOptions,
    PluginOptions,
    PresetBase,
    PresetFields,
    ScheduleOptions,
    Strict,
    StyleImagePath,
    StyleRef,
    StyleSpec,
    WatchOptions,
    build_config_model,
    resolve_config_path,
)

__all__ = [
    "DEFAULT_CONTENT_LAYERS", "DEFAULT_EXTENSIONS", "DEFAULT_IGNORE", "DEFAULT_STYLE_LAYERS", "DEVICE_PATTERN",
    "DEVICE_SYNONYMS", "FOLDER_KEYS", "GALLERY_PAGE", "OUTBOX_OWN_NAMES", "PHOTO_FOLDER_KEYS", "PRESET_NAME",
    "PRESET_NAME_MAX", "PRESET_NAME_RULE", "RAY_ADDRESS_PATTERN", "RAY_ONLY_KEYS", "SPECIAL_WEIGHTS",
    "STYLE_EXTENSIONS", "ConfigBase", "ConfigPath", "ExecutorOptions", "LayerName", "Limits", "ModelOptions",
    "OutputOptions", "PluginOptions", "PresetBase", "PresetFields", "ProblemCollector", "ScheduleOptions", "Strict",
    "StyleImagePath", "StyleRef", "StyleSpec", "WatchOptions", "allowed_keys", "build_config_model", "did_you_mean",
    "preset_name_problem", "resolve_config_path", "style_folder_images", "style_preset_name", "validate_config",
    "validate_plugin_options",
]
