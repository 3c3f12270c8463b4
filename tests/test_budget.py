"""A time budget split across the pyramid's levels by their cost per evaluation.

The split is a pure function of the budget and the costs, and the level planner
takes a clock, so everything here runs on fake costs and a fake clock: no timing.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.engine.nst.engine import EngineSettings, stylize
from pipeline.engine.nst.layers import FeatureExtractor, init_like_torchvision, vgg19_features
from pipeline.engine.nst.objective import Objective, ObjectiveWeights, style_targets
from pipeline.engine.nst.schedule import EvaluationCosts, LevelBudget, split_budget

HALF, FULL = (1, 3, 68, 128), (1, 3, 135, 256)  # a pyramid level at half size costs about a quarter


def test_without_a_pyramid_the_working_size_gets_all_the_time() -> None:
    assert split_budget(10.0, [0.5], [300]) == (20,)
    assert split_budget(1000.0, [0.5], [300]) == (300,)  # at most its configured evaluations


def test_the_working_size_gets_its_share_of_the_time() -> None:
    # The case: 10 s, 60 + 60 evaluations, the coarse level a quarter of the cost. A first-come
    # deadline spent 56 evaluations at half size and one at the working size.
    coarse, final = split_budget(10.0, [0.15, 0.6], [60, 60], final_share=0.7)
    assert final == int(0.7 * 10.0 / 0.6) == 11
    assert coarse == int(0.3 * 10.0 / 0.15) == 20
    assert coarse * 0.15 + final * 0.6 <= 10.0


def test_time_a_capped_level_cannot_use_goes_to_the_others() -> None:
    # the coarse level may spend only 5 evaluations: the working size gets the rest of the time
    assert split_budget(10.0, [0.1, 0.5], [12, 60], final_share=0.5, min_coarse=1) == (12, 17)
    # the working size is capped: the coarse level gets the rest, up to its own cap
    assert split_budget(10.0, [0.1, 0.5], [60, 4], final_share=0.9, min_coarse=1) == (60, 4)


def test_a_coarse_level_too_short_to_matter_is_skipped() -> None:
    # 30% of 2 s at 0.15 s is 4 evaluations, under the minimum: the working size gets all 2 s
    assert split_budget(2.0, [0.15, 0.6], [60, 60], final_share=0.7, min_coarse=8) == (0, 3)


def test_coarse_levels_share_their_part_by_configured_time() -> None:
    # two coarse levels with 40 evaluations each, at 0.05 and 0.2 s: their 40% of 20 s is split 1:4 by time
    plan = split_budget(20.0, [0.05, 0.2, 0.8], [40, 40, 100], final_share=0.6, min_coarse=1)
    assert plan == (int(8.0 * 0.2 / 0.05), int(8.0 * 0.8 / 0.2), int(12.0 / 0.8))


def test_the_working_size_gets_one_evaluation_however_short_the_budget() -> None:
    assert split_budget(0.01, [0.15, 0.6], [60, 60]) == (0, 1)


def test_full_share_to_the_working_size_skips_every_coarse_level() -> None:
    assert split_budget(10.0, [0.1, 0.4], [60, 60], final_share=1.0) == (0, 25)


@pytest.mark.parametrize("seconds", [3.0, 10.0, 30.0])
@pytest.mark.parametrize("share", [0.5, 0.7, 0.9])
def test_a_plan_never_exceeds_the_budget_or_the_caps(seconds: float, share: float) -> None:
    costs, caps = [0.02, 0.15, 0.6], [60, 60, 60]
    plan = split_budget(seconds, costs, caps, final_share=share)
    assert all(0 <= n <= cap for n, cap in zip(plan, caps))
    assert sum(n * c for n, c in zip(plan, costs)) <= seconds + 1e-9


# -- the planner, on a fake clock ------------------------------------------------------------

def simulate(budget: LevelBudget, true_costs: list[float], clock: list[float], warm_up: float = 2.0) -> list[int]:
    """Run the levels as the engine does: each evaluation advances the fake clock by its cost
    (the first of a level ``warm_up`` times as long); returns the evaluations each level spent."""
    spent = []
    for level, cost in enumerate(true_costs):
        if budget.start(level) == 0:
            spent.append(0)
            continue
        evaluations = 0
        while True:
            clock[0] += cost * (warm_up if evaluations == 0 else 1.0)
            evaluations += 1
            if budget.evaluated():
                break
        spent.append(evaluations)
    return spent


def test_first_photo_measures_costs_on_the_first_evaluations_and_keeps_the_working_size_share() -> None:
    clock = [0.0]
    costs = EvaluationCosts()
    budget = LevelBudget(10.0, [HALF, FULL], [60, 60], costs, final_share=0.7, clock=lambda: clock[0])
    coarse, final = simulate(budget, [0.15, 0.6], clock)
    # the coarse level stops near its 3 s; the working size then runs to the deadline
    assert 15 <= coarse <= 21
    assert final >= 10
    assert 10.0 - 0.6 <= clock[0] <= 10.0  # the working size stops when one more evaluation would not fit
    assert costs.seconds[HALF] == pytest.approx(0.15) and costs.seconds[FULL] == pytest.approx(0.6)


def test_a_slow_first_evaluation_does_not_make_the_coarse_level_look_unaffordable() -> None:
    # the first evaluation at a new size takes 10x as long (allocations, kernel choice): judged on it, the
    # coarse level's 3 s would buy 2 evaluations and it would be dropped after one
    clock = [0.0]
    budget = LevelBudget(10.0, [HALF, FULL], [60, 60], EvaluationCosts(), final_share=0.7, min_coarse=8,
                         clock=lambda: clock[0])
    coarse, final = simulate(budget, [0.15, 0.6], clock, warm_up=10.0)
    assert coarse >= 8 and final >= 1


def test_remembered_costs_skip_an_unaffordable_coarse_level_before_it_starts() -> None:
    clock = [0.0]
    costs = EvaluationCosts({HALF: 0.15, FULL: 0.6})
    budget = LevelBudget(2.5, [HALF, FULL], [60, 60], costs, final_share=0.7, min_coarse=8,
                         clock=lambda: clock[0])
    assert simulate(budget, [0.15, 0.6], clock, warm_up=1.0) == [0, 4]  # 0.3 * 2.5 s is only 5 coarse steps
    assert clock[0] <= 2.5


def test_unmeasured_shapes_are_estimated_by_pixel_count() -> None:
    costs = EvaluationCosts({HALF: 0.15})
    assert costs.estimate(FULL) == pytest.approx(0.15 * (135 * 256) / (68 * 128))
    assert EvaluationCosts().estimate(FULL) is None


# -- the engine with a budget ------------------------------------------------------------------

@pytest.fixture(scope="module")
def objective_at():
    features = vgg19_features()
    init_like_torchvision(features, seed=0)
    layers = ("conv1_1", "conv2_1", "conv3_1")
    weights = ObjectiveWeights(1.0, 1e5, 0.0, ("conv2_1",), layers, (1 / 3,) * 3)
    extractor = FeatureExtractor(features.eval(), weights.layers)
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = style_targets(extractor, [style], [1.0], layers)
    built: list[tuple[int, ...]] = []

    def build(level_content: torch.Tensor) -> Objective:
        built.append(tuple(level_content.shape))
        return Objective(extractor, level_content, targets, weights)

    build.built = built  # type: ignore[attr-defined]
    return build


def test_engine_skips_a_coarse_level_the_budget_cannot_afford(objective_at) -> None:
    content = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    objective_at.built.clear()
    # remembered costs (as the worker keeps them between photos): 1 s per evaluation at half size, so the
    # coarse level's 30% of 20 s is 6 evaluations, under the minimum of 8; 10 s at the working size
    costs = EvaluationCosts({(1, 3, 16, 24): 1.0, (1, 3, 32, 48): 10.0})
    settings = EngineSettings(iterations=3, pyramid=(0.5,), pyramid_iterations=(60,), time_budget=20.0,
                              final_share=0.7)
    result = stylize(content, objective_at, settings, min_side=4, costs=costs)
    assert result.level_evaluations == (0, 3)
    assert objective_at.built == [(1, 3, 32, 48)]  # the skipped level built nothing


def test_engine_with_a_generous_budget_spends_the_configured_evaluations(objective_at) -> None:
    content = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    settings = EngineSettings(iterations=4, pyramid=(0.5,), pyramid_iterations=(3,), time_budget=1e6)
    result = stylize(content, objective_at, settings, min_side=4)
    assert result.level_evaluations == (3, 4)
