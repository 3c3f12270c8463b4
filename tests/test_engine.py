"""The style-transfer engine: the seed's objective term by term, the optimiser, the network and its weights."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from pipeline.errors import Cancelled, WeightsError
from pipeline.engine.nst.engine import EngineSettings, stylize
from pipeline.engine.nst.lbfgs import minimize
from pipeline.engine.nst.layers import FeatureExtractor, init_like_torchvision, vgg19_features
from pipeline.engine.nst.layer_names import LAYER_INDEX, LAYER_NAMES
from pipeline.engine.nst.losses import content_loss, gram_matrix, style_layer_loss, total_variation
from pipeline.engine.nst.objective import Objective, ObjectiveWeights, style_targets
from pipeline.engine.weights import features_state_dict, load_features

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


@pytest.fixture(autouse=True)
def private_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a weights file keeps a trimmed copy in torch's cache: keep the user's cache out of tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture(scope="module")
def torchvision_vgg19() -> nn.Module:
    """torchvision's own VGG19 with random weights (built once: its 120M-parameter classifier takes seconds)."""
    torch.manual_seed(5)
    return torchvision.models.vgg19(weights=None)


@pytest.fixture(scope="module")
def random_features() -> nn.Sequential:
    features = vgg19_features()
    init_like_torchvision(features, seed=0)
    return features.eval()


def make_objective(features: nn.Sequential, content: torch.Tensor, style: torch.Tensor,
                   style_weight: float = 1e5, tv_weight: float = 0.0) -> Objective:
    weights = ObjectiveWeights(
        content_weight=1.0, style_weight=style_weight, tv_weight=tv_weight,
        content_layers=("conv4_2",), style_layers=STYLE_LAYERS, style_layer_weights=(0.2,) * 5,
    )
    extractor = FeatureExtractor(features, weights.layers)
    targets = style_targets(extractor, [style], [1.0], weights.style_layers)
    return Objective(extractor, content, targets, weights)


def images(seed: int = 0, size: tuple[int, int] = (24, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    content = torch.rand((1, 3, *size), generator=generator)
    style = torch.rand((1, 3, *size), generator=generator)
    return content, style


# -- the loss terms against hand-computed values (Gatys et al. 2016, eqs. 1, 3, 4) -----------------

def test_gram_matrix_is_f_times_f_transpose() -> None:
    # N = 2 channels, M = 3 positions (1 x 3)
    features = torch.tensor([[[[1.0, 2.0, 3.0]], [[0.0, 1.0, -1.0]]]])
    expected = torch.tensor([[[1 + 4 + 9, 0 + 2 - 3], [0 + 2 - 3, 0 + 1 + 1]]], dtype=torch.float32)
    assert torch.equal(gram_matrix(features), expected)


def test_content_loss_is_half_sum_of_squares() -> None:
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.tensor([[[[0.0, 2.0], [1.0, 8.0]]]])
    assert content_loss(features, target).item() == pytest.approx(0.5 * (1 + 0 + 4 + 16))


def test_style_layer_loss_matches_the_paper_formula() -> None:
    # E = sum (G - A)^2 / (4 N^2 M^2), with N = 2, M = 2
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    style = torch.tensor([[[[0.0, 1.0]], [[1.0, 1.0]]]])
    g = torch.tensor([[1 + 4, 3 + 0], [3 + 0, 9 + 0]], dtype=torch.float32)
    a = torch.tensor([[0 + 1, 0 + 1], [0 + 1, 1 + 1]], dtype=torch.float32)
    expected = ((g - a) ** 2).sum().item() / (4 * 2**2 * 2**2)
    target = gram_matrix(style)[0] / 2  # targets are per-position Grams (A / M)
    assert style_layer_loss(features, target).item() == pytest.approx(expected)


def test_total_variation_sums_squared_neighbour_differences() -> None:
    image = torch.tensor([[[[0.0, 1.0], [3.0, 3.0]]]])
    # vertical: (3-0)^2 + (3-1)^2 = 13; horizontal: (1-0)^2 + (3-3)^2 = 1
    assert total_variation(image).item() == pytest.approx(14.0)


def test_objective_is_the_weighted_sum_of_its_terms(random_features: nn.Sequential) -> None:
    content, style = images()
    objective = make_objective(random_features, content, style, style_weight=10.0, tv_weight=0.5)
    x = torch.rand_like(content)
    terms = objective.evaluate(x)
    features = objective.extractor(x)
    content_term = content_loss(features["conv4_2"], objective.content_targets["conv4_2"]).item()
    style_term = sum(0.2 * style_layer_loss(features[l], objective.style_targets[l]).item() for l in STYLE_LAYERS)
    tv_term = total_variation(x).item()
    assert terms.content == pytest.approx(content_term, rel=1e-5)
    assert terms.style == pytest.approx(10.0 * style_term, rel=1e-5)
    assert terms.tv == pytest.approx(0.5 * tv_term, rel=1e-5)
    assert terms.total == pytest.approx(terms.content + terms.style + terms.tv, rel=1e-6)


def test_style_blend_averages_gram_matrices(random_features: nn.Sequential) -> None:
    _, style_a = images(1)
    _, style_b = images(2)
    extractor = FeatureExtractor(random_features, STYLE_LAYERS)
    a = style_targets(extractor, [style_a], [1.0], STYLE_LAYERS)
    b = style_targets(extractor, [style_b], [1.0], STYLE_LAYERS)
    blend = style_targets(extractor, [style_a, style_b], [3.0, 1.0], STYLE_LAYERS)
    for layer in STYLE_LAYERS:
        assert torch.allclose(blend[layer], 0.75 * a[layer] + 0.25 * b[layer], rtol=1e-5, atol=1e-6)


# -- the network -------------------------------------------------------------------------------

def test_layer_names_are_relu_outputs_of_torchvision_vgg19(torchvision_vgg19: nn.Module) -> None:
    reference = torchvision_vgg19.features
    assert len(LAYER_NAMES) == 16
    for name, index in LAYER_INDEX.items():
        assert isinstance(reference[index], nn.ReLU), name
        conv = reference[index - 1]
        assert isinstance(conv, nn.Conv2d), name
        block = int(name[4])
        assert conv.out_channels == {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}[block]
    assert (LAYER_INDEX["conv1_1"], LAYER_INDEX["conv4_2"], LAYER_INDEX["conv5_1"]) == (1, 22, 29)


def test_network_is_cut_after_the_last_layer_used(random_features: nn.Sequential) -> None:
    extractor = FeatureExtractor(random_features, ["conv1_1", "conv3_1"])
    assert len(extractor.body) == LAYER_INDEX["conv3_1"] + 1
    outputs = extractor(torch.rand(1, 3, 16, 16))
    assert set(outputs) == {"conv1_1", "conv3_1"}
    assert outputs["conv3_1"].shape == (1, 256, 4, 4)
    assert (outputs["conv1_1"] >= 0).all(), "layers are ReLU outputs"


def test_input_is_normalised_with_imagenet_statistics(random_features: nn.Sequential) -> None:
    extractor = FeatureExtractor(random_features, ["conv1_1"])
    image = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = torch.relu(random_features[0]((image - mean) / std))
    assert torch.allclose(extractor(image)["conv1_1"], expected, atol=1e-6)


def test_avg_pooling_swaps_every_pooling_layer() -> None:
    max_net, avg_net = vgg19_features("max"), vgg19_features("avg")
    assert sum(isinstance(m, nn.MaxPool2d) for m in max_net) == 5
    assert sum(isinstance(m, nn.AvgPool2d) for m in avg_net) == 5
    assert not any(isinstance(m, nn.MaxPool2d) for m in avg_net)
    # and it changes what the network computes, with the same weights
    avg_net.load_state_dict(max_net.state_dict())
    x = torch.rand(1, 3, 16, 16)
    deep_max = FeatureExtractor(max_net, ["conv3_1"])(x)["conv3_1"]
    deep_avg = FeatureExtractor(avg_net, ["conv3_1"])(x)["conv3_1"]
    assert not torch.allclose(deep_max, deep_avg)


def test_load_features_with_avg_pooling_from_config_setting(tmp_path: Path) -> None:
    net = load_features("random", pooling="avg")
    assert sum(isinstance(m, nn.AvgPool2d) for m in net) == 5


# -- weights -----------------------------------------------------------------------------------

def _input_output(features: nn.Sequential) -> torch.Tensor:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    return FeatureExtractor(features, ["conv2_1"])(x)["conv2_1"]


def test_state_dict_saved_from_torchvision_vgg19_loads_from_a_path(tmp_path: Path, torchvision_vgg19: nn.Module) -> None:
    reference = torchvision_vgg19
    path = tmp_path / "vgg19.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_features(str(path))
    assert torch.equal(loaded[0].weight, reference.features[0].weight)
    assert torch.equal(loaded[34].bias, reference.features[34].bias)
    assert torch.allclose(_input_output(loaded), _input_output(reference.features.eval()))


def test_safetensors_features_only_state_dict_loads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    features = vgg19_features()
    init_like_torchvision(features, seed=9)
    path = tmp_path / "vgg19.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in features.state_dict().items()}, str(path))
    loaded = load_features(str(path))
    assert torch.equal(loaded[10].weight, features[10].weight)


@pytest.mark.parametrize("content", ["missing", "garbage", "wrong-shape"])
def test_unusable_weights_file_gives_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "weights.pth"
    if content == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif content == "wrong-shape":
        torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(WeightsError) as info:
        load_features(str(path))
    message = str(info.value)
    assert str(path) in message and "photostyle weights import" in message
    assert "\n" not in message


def test_features_state_dict_names_the_missing_tensor() -> None:
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    del state["features.28.weight"]
    with pytest.raises(WeightsError, match=r"features\.28\.weight"):
        features_state_dict(state, "somefile")


# -- the optimiser -----------------------------------------------------------------------------

def test_optimisation_lowers_the_objective_and_keeps_the_working_size(random_features: nn.Sequential) -> None:
    content, style = images(0, (20, 28))
    objective = make_objective(random_features, content, style)
    seen = []
    result = stylize(content, lambda level: objective, EngineSettings(iterations=12), on_progress=seen.append)
    assert result.image.shape == content.shape
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    assert result.final.total < 0.5 * result.initial.total
    assert result.evaluations == len(seen) <= 12
    assert [p.evaluation for p in seen] == list(range(1, len(seen) + 1))
    assert seen[0].loss == result.initial
    assert {(p.level, p.levels) for p in seen} == {(0, 1)}  # which level of how many: the log says it


def test_noise_init_is_reproducible_with_the_same_seed(random_features: nn.Sequential) -> None:
    content, style = images(0, (16, 16))
    objective = make_objective(random_features, content, style)
    settings = EngineSettings(iterations=4, init="noise", seed=7)
    first = stylize(content, lambda level: objective, settings).image
    second = stylize(content, lambda level: objective, settings).image
    other = stylize(content, lambda level: objective, EngineSettings(iterations=4, init="noise", seed=8)).image
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_should_stop_cancels_the_run(random_features: nn.Sequential) -> None:
    content, style = images(0, (16, 16))
    objective = make_objective(random_features, content, style)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(Cancelled):
        stylize(content, lambda level: objective, EngineSettings(iterations=50), should_stop=stop)
    assert len(calls) == 2


def _rosenbrock_like(x: torch.Tensor) -> torch.Tensor:
    a = torch.linspace(0.5, 1.5, x.numel()).reshape(x.shape)
    return ((x - a) ** 2).sum() + 3.0 * ((x[..., 1:] - x[..., :-1] ** 2) ** 2).sum() + 0.1 * (x**4).sum()


@pytest.mark.parametrize("max_evals", [7, 40])
def test_lbfgs_takes_the_same_steps_as_torch_optim_lbfgs(max_evals: int) -> None:
    start = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(11))
    ours_losses: list[float] = []
    x = start.clone().requires_grad_(True)

    def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
        x.grad = None
        loss = _rosenbrock_like(x)
        loss.backward()
        ours_losses.append(float(loss.detach()))
        return loss.detach(), x.grad

    minimize(x, evaluate, max_evals, history_size=5)

    reference_losses: list[float] = []
    y = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([y], lr=1.0, max_iter=max_evals, max_eval=max_evals, history_size=5,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _rosenbrock_like(y)
        loss.backward()
        reference_losses.append(float(loss.detach()))
        return loss

    optimizer.step(closure)
    assert len(ours_losses) == len(reference_losses) > 5
    assert ours_losses == pytest.approx(reference_losses, rel=1e-5)
    assert torch.allclose(x.detach(), y.detach(), rtol=1e-5, atol=1e-6)


def test_optimising_does_not_import_the_compiler() -> None:
    # torch.optim's optimisers import torch._dynamo when built: seconds before the first evaluation
    script = textwrap.dedent("""
        import sys, torch
        from pipeline.engine.nst.engine import EngineSettings, stylize
        from pipeline.engine.nst.layers import FeatureExtractor, init_like_torchvision, vgg19_features
        from pipeline.engine.nst.objective import Objective, ObjectiveWeights, style_targets
        features = vgg19_features()
        init_like_torchvision(features, seed=0)
        weights = ObjectiveWeights(1.0, 1e5, 0.0, ("conv2_1",), ("conv1_1",), (1.0,))
        extractor = FeatureExtractor(features.eval(), weights.layers)
        content = torch.rand(1, 3, 16, 16)
        targets = style_targets(extractor, [torch.rand(1, 3, 16, 16)], [1.0], ("conv1_1",))
        stylize(content, lambda c: Objective(extractor, c, targets, weights), EngineSettings(iterations=3))
        print("torch._dynamo" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_lbfgs_first_trial_step_moves_no_element_further_than_first_step() -> None:
    start = torch.randn(1, 3, 6, 7, generator=torch.Generator().manual_seed(12))
    x = start.clone().requires_grad_(True)
    evaluated: list[torch.Tensor] = []

    def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
        x.grad = None
        evaluated.append(x.detach().clone())
        loss = 1e6 * _rosenbrock_like(x)  # a loss scale like the style objective's: torch's guess would be tiny
        loss.backward()
        return loss.detach(), x.grad

    minimize(x, evaluate, 3, first_step=0.05)
    assert float((evaluated[1] - evaluated[0]).abs().max()) == pytest.approx(0.05, rel=1e-5)


class _SteepQuadratic:
    """An objective with the style term's scale (losses near 1e11, gradients near 1e9) whose first trial
    step overshoots, so the line search must interpolate: in float32 that overflowed (slopes of 1e20
    squared), made every later trial step NaN and stalled the level at the photo."""

    def __init__(self, target: torch.Tensor, scale: float = 1e11) -> None:
        self.target, self.scale = target, scale

    def terms(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        difference = image - self.target
        return self.scale * (difference**2).sum(), self.scale * (difference**4).sum(), image.new_zeros(())


def test_the_optimiser_keeps_finite_steps_at_the_style_objectives_scale() -> None:
    from pipeline.engine.nst.engine import optimize

    generator = torch.Generator().manual_seed(1)
    start, target = torch.rand(1, 3, 32, 32, generator=generator), torch.rand(1, 3, 32, 32, generator=generator)
    tracker = optimize(_SteepQuadratic(target), start, 20, first_step=3.0)  # type: ignore[arg-type]
    assert all(math.isfinite(loss) for loss in tracker.history)
    assert tracker.best is not None and tracker.best.total < 1e-6 * tracker.history[0]


def test_lbfgs_normalised_takes_the_same_steps_at_any_loss_scale() -> None:
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(1, 3, 6, 7, generator=generator)
    paths = []
    for scale in (1.0, 1e11):
        x = start.clone().requires_grad_(True)
        points: list[torch.Tensor] = []

        def evaluate(x: torch.Tensor = x, points: list[torch.Tensor] = points, scale: float = scale):
            x.grad = None
            points.append(x.detach().clone())
            loss = scale * _rosenbrock_like(x)
            loss.backward()
            return loss.detach(), x.grad

        minimize(x, evaluate, 15, first_step=0.05, normalize=True)
        paths.append(torch.stack(points))
    assert paths[0].shape == paths[1].shape
    assert torch.allclose(paths[0], paths[1], rtol=1e-4, atol=1e-5)
