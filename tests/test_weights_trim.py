"""Weights load from a trimmed, memory-mapped copy of the ``features.*`` tensors.

The classifier is 500 of the ImageNet file's 548 MB; the first load keeps the
features (and the file's SHA-256) in torch's cache, later loads map that copy.
The network must compute exactly what the full state dict gives.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.engine import weights as weights_module
from pipeline.engine.nst.layer_names import LAYER_NAMES
from pipeline.engine.nst.layers import FeatureExtractor, init_like_torchvision, vgg19_features
from pipeline.engine.weights import load_features, trimmed_path, weights_identity


@pytest.fixture(autouse=True)
def private_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(weights_module, "_IDENTITIES", {})  # as a fresh process: nothing remembered
    return home


class Vgg19Like(nn.Module):
    """``features`` as torchvision's VGG19, and a stand-in classifier (torchvision's is 500 MB: too big to
    write in every test; the loader never reads it, whatever its shapes)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.features = vgg19_features()
        init_like_torchvision(self.features, seed)
        self.classifier = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Dropout(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    return Vgg19Like(21).eval()


def every_layer(features: nn.Sequential) -> dict[str, torch.Tensor]:
    image = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return FeatureExtractor(features, LAYER_NAMES)(image)


def assert_same_features(loaded: nn.Sequential, reference: nn.Module) -> None:
    expected = every_layer(reference.features)
    got = every_layer(loaded)
    assert set(got) == set(expected)
    for layer in expected:
        assert torch.equal(got[layer], expected[layer]), layer


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-pickle"])
def test_trimmed_weights_give_the_same_features_as_the_full_state_dict(
    tmp_path: Path, reference: nn.Module, zip_format: bool
) -> None:
    source = tmp_path / "vgg19-full.pth"
    torch.save(reference.state_dict(), source, _use_new_zipfile_serialization=zip_format)
    first = load_features(str(source))  # reads the source, keeps the trimmed copy
    trimmed = trimmed_path(source)
    assert trimmed.is_file()
    kept = torch.load(trimmed, weights_only=True)
    assert not any(key.startswith("classifier.") for key in kept)
    second = load_features(str(source))  # from the trimmed copy
    assert_same_features(first, reference)
    assert_same_features(second, reference)


def test_a_later_load_reads_only_the_trimmed_copy(tmp_path: Path, reference: nn.Module) -> None:
    source = tmp_path / "vgg19.pth"
    torch.save(reference.state_dict(), source)
    load_features(str(source))
    # Overwrite the source's bytes, then give it back its size and mtime (same inode): a load that still
    # gives the right network cannot have read the source.
    info = source.stat()
    source.write_bytes(b"\0" * info.st_size)
    os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert_same_features(load_features(str(source)), reference)


def test_an_edited_source_gets_a_new_trimmed_copy(tmp_path: Path, reference: nn.Module) -> None:
    source = tmp_path / "vgg19.pth"
    torch.save(reference.state_dict(), source)
    load_features(str(source))
    before = trimmed_path(source)
    other = Vgg19Like(22).eval()
    torch.save(other.state_dict(), source)
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))  # coarse-mtime filesystems
    assert trimmed_path(source) != before
    assert_same_features(load_features(str(source)), other)


def test_a_damaged_trimmed_copy_is_made_again(tmp_path: Path, reference: nn.Module) -> None:
    source = tmp_path / "vgg19.pth"
    torch.save(reference.state_dict(), source)
    load_features(str(source))
    trimmed_path(source).write_bytes(b"broken")
    assert_same_features(load_features(str(source)), reference)
    assert torch.load(trimmed_path(source), weights_only=True)  # written again, readable


def test_weights_load_when_the_cache_cannot_be_written(
    tmp_path: Path, reference: nn.Module, private_torch_home: Path
) -> None:
    private_torch_home.mkdir(parents=True)
    (private_torch_home / "hub").write_text("a file where the cache folder would be")
    source = tmp_path / "vgg19.pth"
    torch.save(reference.state_dict(), source)
    assert_same_features(load_features(str(source)), reference)


def test_identity_is_the_source_files_sha256_also_from_the_trimmed_copy(tmp_path: Path, reference: nn.Module) -> None:
    source = tmp_path / "vgg19.pth"
    torch.save(reference.state_dict(), source)
    expected = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    assert weights_identity(str(source)) == expected  # hashed: no trimmed copy yet
    load_features(str(source))
    weights_module._IDENTITIES.clear()  # a new process: the identity comes from the trimmed copy
    info = source.stat()
    source.write_bytes(b"\0" * info.st_size)  # so it cannot have been hashed again
    os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert weights_identity(str(source)) == expected
