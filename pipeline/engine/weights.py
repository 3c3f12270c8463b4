"""Where VGG19's weights come from: torchvision's cache, a file, or seeded random.

The engine only ever sees an ``nn.Sequential`` shaped like ``vgg19().features``;
this module is the file-reading side. ImageNet weights come through torchvision's
own download and cache (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``), so a
machine that already has them needs nothing else. Offline machines import a file
once with ``photostyle weights import FILE``, which validates it and places it in
that same cache. Without any, ``model.weights: random`` still runs everything else
(folders, gallery, plugins); the pictures are not art.

torchvision is imported only to download the ImageNet file. A torch and torchvision
that were not built for each other fail right there (``operator torchvision::nms does
not exist``); :func:`torchvision_weights` says so, with both versions, read from the
installed packages' metadata since torchvision itself cannot be imported.

Start-up: the classifier is 500 of the file's 548 MB, and unpickling it all took
2.3 s here. So the first load keeps a trimmed copy of the ``features.*`` tensors
(zip format, with the source's SHA-256) in ``<torch hub>/checkpoints/photostyle-features/``,
keyed by the source's path, size, mtime and inode; later loads memory-map it,
so only the pages of the layers a preset reaches are ever read, and the network
is built on the meta device and takes those tensors as they are (no random
initialisation to overwrite, no copy).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import sys
import tempfile
from importlib import metadata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import WeightsError
from pipeline.files.hashing import stable_file_hash
from pipeline.engine.nst.layers import init_like_torchvision, vgg19_features
from pipeline.engine.weights_names import TORCHVISION_FILE  # the suffix is its SHA-256 prefix

log = logging.getLogger(__name__)

OFFICIAL_SHA256_PREFIX = "dcbb9e9d"
RANDOM_SEED = 0

HOW_TO_FIX = (
    "run `photostyle weights import FILE` with a torchvision VGG19 state dict (.pth or .safetensors), "
    "or set model.weights in the config to such a file; `photostyle weights status` shows what is cached"
)
#: Added where the weights are missing: the rest of photostyle can be tried without them.
TRY_WITHOUT = (
    "to try the daemon, the folders, the gallery and plugins without them, set `model.weights: random` "
    "in the config (the pictures will not be art)"
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
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
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


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:2])


def _paired(torch_version: str, torchvision_version: str) -> bool | None:
    """Whether these releases are built for each other: torch 2.m goes with torchvision 0.(m+15), torch 1.m
    with 0.(m+1), and both must be the same build (``+cpu``, ``+cu124``, or PyPI's with none). None: unknown."""
    torch_release, vision_release = _release(torch_version), _release(torchvision_version)
    if len(vision_release) < 2:
        return False  # not installed
    if len(torch_release) < 2 or torch_release[0] not in (1, 2):
        return None
    major, minor = torch_release
    expected = (0, minor + 15) if major == 2 else (0, minor + 1)
    return vision_release == expected and torchvision_version.partition("+")[2] == torch_version.partition("+")[2]


def _reinstall_command(torch_version: str) -> str:
    """``pip install`` of both from the index this torch build comes from (its ``+cpu``/``+cuXXX`` tag)."""
    local = torch_version.partition("+")[2]
    built_for = re.fullmatch(r"cpu|cu\d+|rocm[\d.]+", local)
    index = f" --index-url https://download.pytorch.org/whl/{local}" if built_for else ""
    return f"{shlex.quote(sys.executable)} -m pip install --force-reinstall torch torchvision{index}"


def torchvision_mismatch(error: BaseException) -> str:
    """One line for a torchvision that cannot be imported: both versions and how to make them a pair."""
    torch_version, vision_version = _version("torch"), _version("torchvision")
    if isinstance(error, ModuleNotFoundError) and error.name == "torchvision":
        return (f"torchvision is not installed (torch {torch_version} is), and it downloads the ImageNet weights: "
                f"install it from the index torch came from (`{_reinstall_command(torch_version)}`); {HOW_TO_FIX}")
    # torchvision::nms and friends: its compiled operators did not load into this torch, whatever the numbers say
    mismatch = _paired(torch_version, vision_version) is False or "torchvision::" in str(error)
    what = (f"the installed torch {torch_version} and torchvision {vision_version} don't match" if mismatch else
            f"torchvision {vision_version} cannot be imported with torch {torch_version}")
    return (f"{what} (importing torchvision: {_brief(error)}); reinstall both from the same index: "
            f"`{_reinstall_command(torch_version)}`")


def torchvision_weights() -> type:
    """torchvision's ``VGG19_Weights``; a torchvision that cannot be imported is a :class:`WeightsError`."""
    try:
        from torchvision.models import VGG19_Weights
    except Exception as exc:  # RuntimeError (torchvision::nms), ImportError, OSError (a symbol), AttributeError
        raise WeightsError(torchvision_mismatch(exc)) from None
    return VGG19_Weights


def _download_torchvision() -> Mapping[str, torch.Tensor]:
    weights = torchvision_weights()
    try:
        return weights.IMAGENET1K_V1.get_state_dict(progress=True)
    except Exception as exc:  # offline, proxy, disk full: all end the same way
        raise WeightsError(
            f"ImageNet VGG19 weights are not cached at {cache_path()} and could not be downloaded "
            f"({_brief(exc)}); {HOW_TO_FIX}; {TRY_WITHOUT}"
        ) from None


TRIMMED_FOLDER = "photostyle-features"
_SHA256_KEY = "photostyle.source_sha256"  # the source file's SHA-256, stored in its trimmed copy


def trimmed_path(source: Path) -> Path:
    """Where the trimmed copy of ``source`` lives: named by the source's path, size, mtime and inode, so a
    replaced or edited file gets a new copy (and one stat finds the copy)."""
    info = source.stat()
    key = f"{source.resolve()}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ino}".encode()
    return Path(torch.hub.get_dir()) / "checkpoints" / TRIMMED_FOLDER / f"vgg19-{hashlib.sha256(key).hexdigest()[:20]}.pt"


def _read_trimmed(source: Path) -> tuple[dict[str, torch.Tensor], str] | None:
    """The features and the source's SHA-256 from ``source``'s trimmed copy, memory-mapped; None if absent."""
    path = trimmed_path(source)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        sha256 = state.pop(_SHA256_KEY)
        return features_state_dict(state, str(path)), str(sha256)
    except Exception as exc:  # damaged or foreign: made again from the source
        log.warning("%s: unusable trimmed weights (%s); reading %s again", path, _brief(exc), source)
        return None


def _write_trimmed(source: Path, features: Mapping[str, torch.Tensor], sha256: str) -> None:
    """Save the trimmed copy atomically; a cache that cannot be written only costs the next start time."""
    path = trimmed_path(source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".vgg19-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.save({**{f"features.{k}": v for k, v in features.items()}, _SHA256_KEY: sha256}, tmp_name)
            os.replace(tmp_name, path)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    except OSError as exc:
        log.info("could not keep trimmed weights at %s (%s); the next start reads %s again", path, exc, source)


def _read_features(source: Path) -> dict[str, torch.Tensor]:
    """Only the ``features.*`` tensors of a state dict file, reading as little of it as the format allows."""
    try:
        if source.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(source), framework="pt", device="cpu") as handle:
                keys = [k for k in handle.keys() if not k.startswith("classifier.")]
                return features_state_dict({k: handle.get_tensor(k) for k in keys}, str(source))
        state = torch.load(source, map_location="cpu", mmap=True, weights_only=True)
    except WeightsError:
        raise
    except Exception:  # not a zip-format checkpoint (torchvision's own file is an old one): read it all
        state = _read_state_dict(source)
    if not isinstance(state, Mapping):
        raise WeightsError(f"{source}: not a state dict (a {type(state).__name__}); {HOW_TO_FIX}")
    # clone: the copy must not depend on the source file staying as it is while we run
    return {k: v.clone() for k, v in features_state_dict(state, str(source)).items()}


def _features_from(source: Path) -> dict[str, torch.Tensor]:
    """The source's features: from its trimmed copy when there is one, else read once and trimmed."""
    if not source.is_file():
        raise WeightsError(f"{source}: weights file not found; {HOW_TO_FIX}")
    found = _read_trimmed(source)
    if found is not None:
        _remember_identity(source, found[1])
        return found[0]
    features = _read_features(source)
    sha256 = stable_file_hash(source)
    _remember_identity(source, sha256)
    _write_trimmed(source, features, sha256)
    return features


def load_features(weights: str, pooling: str = "max") -> nn.Sequential:
    """VGG19 ``features`` with the configured weights, in eval mode, on the CPU.

    ``weights`` is ``"torchvision"``, ``"random"`` or a path (see the config reference).
    """
    if weights == "random":
        log.warning("model.weights is 'random': results will not look like the style (for tests only)")
        with torch.device("meta"):  # allocated empty, then filled once (no default initialisation first)
            features = vgg19_features(pooling)
        features = features.to_empty(device="cpu")
        init_like_torchvision(features, RANDOM_SEED)
        return features.eval()
    if weights == "torchvision":
        source = cache_path()
        if not source.is_file():
            _download_torchvision()  # torchvision saves it at cache_path()
            if not source.is_file():
                raise WeightsError(f"ImageNet VGG19 weights are not cached at {source}; {HOW_TO_FIX}; {TRY_WITHOUT}")
    else:
        source = Path(weights)
    state = _features_from(source)
    with torch.device("meta"):  # no parameters allocated or randomly initialised: the loaded ones are assigned
        features = vgg19_features(pooling)
    features.load_state_dict(state, assign=True)
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


_IDENTITIES: dict[tuple[str, int, int], str] = {}


def _remember_identity(path: Path, sha256: str) -> None:
    info = path.stat()
    _IDENTITIES[(str(path.resolve()), info.st_size, info.st_mtime_ns)] = sha256


def weights_identity(weights: str) -> str:
    """A short identity for the weights in use (records which network produced a result).

    The SHA-256 of the file, read from its trimmed copy when there is one: hashing
    548 MB again at every start cost 0.3–1.2 s here.
    """
    if weights == "random":
        return f"random:seed{RANDOM_SEED}"
    path = cache_path() if weights == "torchvision" else Path(weights)
    if not path.is_file():
        return f"{weights}:missing"
    info = path.stat()
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    if key not in _IDENTITIES:
        found = _read_trimmed(path)
        _IDENTITIES[key] = found[1] if found is not None else stable_file_hash(path)
    return f"sha256:{_IDENTITIES[key][:16]}"


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
                return f"{label}: not cached (expected at {self.path}); {STATUS_HOW_TO_FIX}; {TRY_WITHOUT}"
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
