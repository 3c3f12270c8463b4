"""The configuration (``config.yaml``): see :mod:`pipeline.config.models`."""

from pipeline.config.models import (
    DEFAULT_CONTENT_LAYERS, DEFAULT_EXTENSIONS, DEFAULT_IGNORE, DEFAULT_STYLE_LAYERS, DEVICE_PATTERN, DEVICE_SYNONYMS,
    FOLDER_KEYS, GALLERY_PAGE, OUTBOX_OWN_NAMES, PHOTO_FOLDER_KEYS, PRESET_NAME, PRESET_NAME_MAX, PRESET_NAME_RULE,
    RAY_ADDRESS_PATTERN, RAY_ONLY_KEYS, SPECIAL_WEIGHTS, STYLE_EXTENSIONS, ConfigBase, ConfigPath, ExecutorOptions,
    LayerName, Limits, ModelOptions, OutputOptions, PluginOptions, PresetBase, PresetFields, ProblemCollector,
    ScheduleOptions, Strict, StyleImagePath, StyleRef, StyleSpec, WatchOptions, allowed_keys, build_config_model,
    did_you_mean, preset_name_problem, resolve_config_path, style_folder_images, style_preset_name, validate_config,
    validate_plugin_options,
)
