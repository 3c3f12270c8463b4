"""What makes two jobs the same: the photo's bytes, the preset, and the preset's effective settings."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipeline.files.hashing import stable_file_hash


def _weights_identity(weights: str) -> str:
    """The weights by content (``sha256:…``), so importing other weights under the same name is new work.

    Weights that cannot be found or read yet fall back to their name: hashing
    must not fail where loading them would give the clearer error.
    """
    from pipeline.engine.weights import weights_identity  # torch is imported only when a hash is needed

    try:
        identity = weights_identity(weights)
    except OSError:
        return weights
    return weights if identity.endswith(":missing") else identity


def _plugin_sections_at_default(preset: Any) -> set[str]:
    """Preset keys contributed by plugins whose value is the key's default.

    A plugin at its default changes nothing in the output, so loading or
    unloading it must not make every photo new work (``sepia: null`` did).
    """
    from pipeline.config import PresetBase

    at_default = set()
    for name, field in type(preset).model_fields.items():
        if name in PresetBase.model_fields:
            continue
        if getattr(preset, name) == field.get_default(call_default_factory=True):
            at_default.add(name)
    return at_default


def settings_hash(config: Any, preset_name: str) -> str:
    """Hash of everything that changes a preset's output: its settings, its style images' bytes, the weights.

    Paths are replaced by the content hash of the files they name, so editing a
    style image in place or importing other weights makes the next photo new
    work, and moving the project folder does not. Unset sections (``None``) and
    plugin sections at their defaults are left out, so enabling an unrelated
    plugin does not redo every photo.
    """
    preset = config.presets[preset_name]
    settings = preset.model_dump(mode="json", exclude_none=True, exclude=_plugin_sections_at_default(preset))
    styles = [{"sha256": stable_file_hash(ref.image), "weight": ref.weight} for ref in preset.style_images]
    settings["style"] = styles
    model = config.model.model_dump(mode="json", exclude_none=True)
    model["weights"] = _weights_identity(config.model.weights)
    document = {"preset": settings, "model": model}
    encoded = json.dumps(document, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


#: The preset keys that define its objective (Gatys et al. 2016, eq. 7) and the scale it sees the style at.
OBJECTIVE_KEYS = ("size", "style_scale", "content_weight", "style_weight", "tv_weight", "content_layers",
                  "style_layers", "style_layer_weights", "preserve_color")


def objective_document(config: Any, preset_name: str) -> dict[str, Any]:
    """What a fast preset's network was trained to minimise: the preset's objective, style images and weights.

    Keys that change only how a result is found or saved (``iterations``,
    ``engine``, ``output``, ``schedule``) are left out: a model stays current when
    they change. ``preserve_color`` counts, since two of its modes change what the
    network sees.
    """
    preset = config.presets[preset_name]
    settings = {key: getattr(preset, key) for key in OBJECTIVE_KEYS if getattr(preset, key, None) is not None}
    settings["style"] = [{"sha256": stable_file_hash(ref.image), "weight": ref.weight} for ref in preset.style_images]
    return {"preset": settings, "model": {"weights": _weights_identity(config.model.weights),
                                          "pooling": config.model.pooling}}


def document_hash(document: dict[str, Any]) -> str:
    """A short name for an :func:`objective_document`: a model trained under another is stale."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]
