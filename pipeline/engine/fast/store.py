"""A fast preset's network to and from bytes, and loaded from ``state/models`` when it is current."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import torch

from pipeline.engine.fast.model_files import FORMAT, ModelFiles, problem, read_sidecar
from pipeline.engine.fast.network import NetworkShape, TransformNet


class ModelUnavailable(Exception):
    """The preset's model cannot be used; the message says why in one line."""


def network_bytes(net: TransformNet) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "shape": net.shape.as_dict(),
                "net": {key: value.detach().cpu() for key, value in net.state_dict().items()}}, buffer)
    return buffer.getvalue()


def network_from_bytes(data: bytes, device: str = "cpu") -> TransformNet:
    saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError("not a photostyle fast model")
    net = TransformNet(NetworkShape(**saved["shape"]))
    net.load_state_dict(saved["net"])
    return net.to(device).eval()


def load_current(files: ModelFiles, objective: dict[str, Any], objective_hash: str,
                 device: str) -> tuple[TransformNet, dict[str, Any]]:
    """The network and its sidecar; ModelUnavailable when there is none, it is stale, or it does not load."""
    reason = problem(files, objective, objective_hash)
    if reason is not None:
        raise ModelUnavailable(reason)
    sidecar = read_sidecar(files)
    assert sidecar is not None
    try:
        data = files.model.read_bytes()
    except OSError as exc:
        raise ModelUnavailable(f"model file unreadable ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != sidecar.get("model_sha256"):
        raise ModelUnavailable("model file does not match its sidecar (a write cut short?); train it again")
    try:
        return network_from_bytes(data, device), sidecar
    except Exception as exc:  # a damaged file must cost the photo nothing but the fast engine
        raise ModelUnavailable(f"model file unreadable ({type(exc).__name__})") from None
