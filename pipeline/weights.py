"""Where VGG19's weights come from: torchvision's cache, a file, or seeded random.

The engine only ever sees an ``nn.Sequential`` shaped like ``vgg19().features``;
this module is the file-reading side. ImageNet weights come through torchvision's
own download and cache (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``), so a
machine that already has them needs nothing else. Offline machines import a file
once with ``photostyle weights import FILE``, which validates it and places it in
that same cache.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import WeightsError
from pipeline.fingerprint import stable_file_hash
from pipeline.nst.layers import init_like_torchvision, vgg19_features

log = logging.getLogger(__name__)

#: The file name torchvision gives ImageNet VGG19 weights (the suffix is its SHA-256 prefix).
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
OFFICIAL_SHA256_PREFIX = "dcbb9e9d"
RANDOM_SEED = 0

HOW_TO_FIX = (
    "run `photostyle weights import FILE` with a torchvision VGG19 state dict (.pth or .safetensors), "
    "or set model.weights in the config to such a file; `photostyle weights status` shows what is cached"
)


def _brief(exc: BaseException) -> str:
    """The first line of an exception (torch's unpickling errors run to paragraphs)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def cache_path() -> Path:
    """Where torchvision keeps (and looks for) the ImageNet VGG19 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; {HOW_TO_FIX}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable/unpicklable file is the same user problem
        raise WeightsError(f"{path}: not a readable state dict ({_brief(exc)}); {HOW_TO_FIX}") from None
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: not a state dict (a {type(state).__name__}); {HOW_TO_FIX}")
    return state


def features_state_dict(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The ``features.*`` part of a VGG19 state dict, keyed as ``nn.Sequential`` keys.

    Accepts a whole ``vgg19().state_dict()`` or one of ``vgg19().features``;
    raises :class:`WeightsError` naming the first missing or misshapen tensor.
    """
    expected = vgg19_features().state_dict()
    prefix = "features." if any(key.startswith("features.") for key in state) else ""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in expected.items():
        value = state.get(prefix + key)
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{source}: not a VGG19 state dict (no tensor '{prefix + key}'); {HOW_TO_FIX}")
        if value.shape != tensor.shape:
            raise WeightsError(
                f"{source}: not a VGG19 state dict ('{prefix + key}' has shape {tuple(value.shape)}, "
                f"VGG19 needs {tuple(tensor.shape)}); {HOW_TO_FIX}"
            )
        out[key] = value.float()
    return out


def _download_torchvision() -> Mapping[str, torch.Tensor]:
    from torchvision.models import VGG19_Weights

    try:
        return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
    except Exception as exc:  # offline, proxy, disk full: all end the same way
        raise WeightsError(
            f"ImageNet VGG19 weights are not cached at {cache_path()} and could not be downloaded "
            f"({_brief(exc)}); {HOW_TO_FIX}"
        ) from None


def load_features(weights: str, pooling: str = "max") -> nn.Sequential:
    """VGG19 ``features`` with the configured weights, in eval mode, on the CPU.

    ``weights`` is ``"torchvision"``, ``"random"`` or a path (see the config reference).
    """
    features = vgg19_features(pooling)
    if weights == "random":
        log.warning("model.weights is 'random': results will not look like the style (for tests only)")
        init_like_torchvision(features, RANDOM_SEED)
    else:
        if weights == "torchvision":
            cached = cache_path()
            state = _read_state_dict(cached) if cached.is_file() else _download_torchvision()
            source = str(cached)
        else:
            state = _read_state_dict(Path(weights))
            source = weights
        features.load_state_dict(features_state_dict(state, source))
    return features.eval()


def import_weights(source: Path) -> Path:
    """Validate a VGG19 state dict and install it where ``weights: torchvision`` finds it."""
    state = _read_state_dict(source)
    features = features_state_dict(state, str(source))
    target = cache_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    keep = dict(state) if any(key.startswith("classifier.") for key in state) else {
        f"features.{key}": value for key, value in features.items()
    }
    fd, tmp_name = tempfile.mkstemp(prefix=".vgg19-", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        torch.save(keep, tmp_name)
        # mkstemp makes 0600; a system service running as another account must still read it.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def weights_identity(weights: str) -> str:
    """A short identity for the weights in use (records which network produced a result)."""
    if weights == "random":
        return f"random:seed{RANDOM_SEED}"
    path = cache_path() if weights == "torchvision" else Path(weights)
    if not path.is_file():
        return f"{weights}:missing"
    return f"sha256:{stable_file_hash(path)[:16]}"


#: What ``weights status`` suggests: unlike HOW_TO_FIX, it does not send the user back to ``weights status``.
STATUS_HOW_TO_FIX = (
    "run `photostyle weights import FILE` with a torchvision VGG19 state dict (.pth or .safetensors), "
    "or let the first run download them (548 MB)"
)


@dataclass
class WeightsStatus:
    """What ``photostyle weights status`` reports; ``usable`` decides its exit status (3 when not)."""

    weights: str
    path: Path | None
    present: bool
    size_bytes: int = 0
    sha256: str = ""
    problem: str = ""

    @property
    def official(self) -> bool:
        return self.sha256.startswith(OFFICIAL_SHA256_PREFIX)

    @property
    def usable(self) -> bool:
        return self.weights == "random" or (self.present and not self.problem)

    def describe(self) -> str:
        if self.weights == "random":
            return "model.weights is 'random': seeded random weights (for tests only), nothing to cache"
        label = "torchvision VGG19 weights" if self.weights == "torchvision" else "VGG19 weights (model.weights)"
        if not self.present:
            if self.weights == "torchvision":
                return f"{label}: not cached (expected at {self.path}); {STATUS_HOW_TO_FIX}"
            return f"{label}: {self.path}: file not found; set model.weights to a VGG19 state dict"
        if self.problem:
            return f"{label}: {self.path}: unusable: {self.problem}; {STATUS_HOW_TO_FIX}"
        kind = "ImageNet VGG19 (torchvision's file)" if self.official else "imported VGG19 state dict (not ImageNet's)"
        return (
            f"{label}: {self.path}\n  {self.size_bytes / 1e6:.1f} MB, sha256 {self.sha256[:16]}…, {kind}"
        )


def weights_status(weights: str = "torchvision") -> WeightsStatus:
    """Describe the weights ``model.weights`` names: present, and (unless they are ImageNet's file) loadable."""
    if weights == "random":
        return WeightsStatus(weights, None, present=False)
    path = cache_path() if weights == "torchvision" else Path(weights)
    if not path.is_file():
        return WeightsStatus(weights, path, present=False)
    status = WeightsStatus(weights, path, present=True, size_bytes=path.stat().st_size, sha256=stable_file_hash(path))
    if not status.official:  # the official file is known by its hash; anything else must load as VGG19
        try:
            features_state_dict(_read_state_dict(path), str(path))
        except WeightsError as exc:
            status.problem = str(exc).replace(f"; {HOW_TO_FIX}", "").removeprefix(f"{path}: ")
    return status
