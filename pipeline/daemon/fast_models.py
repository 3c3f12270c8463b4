"""Which fast presets have a current model: said in the log at start and on reload, and in ``status``."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.config.settings_hash import document_hash, objective_document
from pipeline.engine.fast.model_files import ModelFiles, problem, read_sidecar

log = logging.getLogger(__name__)


def model_states(config: Any) -> dict[str, dict[str, Any]]:
    """For every preset with ``engine: fast``/``fast+refine`` or a trained model: its engine and its model's state."""
    states: dict[str, dict[str, Any]] = {}
    for name, preset in config.presets.items():
        engine = getattr(preset, "engine", "optimize")
        files = ModelFiles.of(config.state, name)
        if engine == "optimize" and not files.sidecar.is_file():
            continue
        document = objective_document(config, name)
        reason = problem(files, document, document_hash(document))
        state: dict[str, Any] = {"engine": engine, "model": "current" if reason is None else reason}
        sidecar = read_sidecar(files)
        if sidecar is not None:
            validation = sidecar.get("curves", {}).get("validation") or [[None, None, None]]
            state.update(steps=sidecar.get("steps"), trained_at=sidecar.get("trained_at"),
                         validation_loss=validation[-1][2])
        states[name] = state
    return states


def log_model_states(config: Any) -> dict[str, dict[str, Any]]:
    """One line per fast preset: a warning when its photos will be optimised for want of a current model."""
    states = model_states(config)
    for name, state in states.items():
        fields = {"preset": name, "engine": state["engine"], "model": state["model"]}
        if state["model"] == "current":
            log.info("fast preset ready", extra={"fields": {**fields, "steps": state.get("steps")}})
        elif state["engine"] != "optimize":
            log.warning(f"fast preset without a current model ({state['model']}): its photos are optimised until "
                        f"`photostyle train {name}`", extra={"fields": fields})
    return states
