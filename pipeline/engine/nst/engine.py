"""Optimise an image under the Gatys objective: tensors in, tensor out.

The image's pixels are the parameters (Gatys et al. 2016, sec. 2), optimised
with L-BFGS as in the paper (:mod:`pipeline.engine.nst.lbfgs`, torch's step without
torch.optim's import cost). L-BFGS needs a line search here: without one it
stalls on this objective's loss scale, with ``strong_wolfe`` it converges
(measured in the seed project). ``iterations`` is a budget of objective
evaluations (forward + backward passes), since that is what costs time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.errors import Cancelled
from pipeline.engine.nst.lbfgs import minimize
from pipeline.engine.nst.objective import LossTerms, Objective
from pipeline.engine.nst.schedule import FINAL_SHARE, EvaluationCosts, LevelBudget


@dataclass(frozen=True)
class EngineSettings:
    """How to optimise; the objective's weights live in :class:`~pipeline.engine.nst.objective.ObjectiveWeights`."""

    iterations: int = 300  # objective evaluations (forward + backward passes) at the working size
    init: Literal["content", "noise"] = "content"  # start from the photo, or seeded uniform noise
    seed: int = 0  # seeds the noise init; with it, same input + device give the same output
    history_size: int = 100  # L-BFGS memory: more curvature pairs, fewer wasted evaluations
    # The first line search's trial step moves no pixel by more than this (None: torch's min(1, 1/|g|_1),
    # which moved pixels by 0.0004-0.001 and cost 3-4 evaluations per level growing the step; 0.05 gave
    # a 1.6-2.2x lower loss after 10 evaluations at 128 px, measured over 0.02-0.2 on two styles).
    first_step: float | None = 0.05
    # Coarse-to-fine: fractions of the working size to optimise first, each warm-starting the next
    # (the working size itself is always the last level); and each coarse level's evaluation budget.
    pyramid: tuple[float, ...] = ()
    pyramid_iterations: tuple[int, ...] = ()
    # Stop a level early once the loss improved by less than this fraction over the last `window`
    # evaluations (0 disables): late L-BFGS evaluations buy little visible change.
    tolerance: float = 0.0
    window: int = 20
    # Seconds for the whole optimisation, split across the levels by their measured cost per evaluation
    # (see pipeline.engine.nst.schedule); the working size gets `final_share` of it. Each level still spends at
    # most its budget above; the best image so far is kept.
    time_budget: float | None = None
    final_share: float = FINAL_SHARE
    # How pixels are kept displayable. "none" optimises raw pixels (as the paper) and clamps at the
    # end; L-BFGS then pushes many far outside [0, 1], and the saved (clamped) image scores far worse
    # than the optimiser believed. "clamp" scores the clamped image (zero gradient outside), "ste"
    # the clamped image with a pass-through gradient, "sigmoid" optimises logits of the pixels.
    box: Literal["none", "clamp", "ste", "sigmoid"] = "none"

    def __post_init__(self) -> None:
        assert len(self.pyramid) == len(self.pyramid_iterations), "one budget per coarse level"
        assert all(0 < scale < 1 for scale in self.pyramid), "coarse levels are fractions of the working size"


@dataclass(frozen=True)
class Progress:
    """Sent to the progress callback after every evaluation."""

    evaluation: int  # counted over all levels
    budget: int  # all levels' budgets together
    loss: LossTerms  # at the current level
    level: int = 0  # the pyramid level running (0 = the coarsest that runs)
    levels: int = 1  # how many levels run for this photo (coarse levels too small for it are skipped)


@dataclass
class StylizeResult:
    """The best image found (clamped to [0, 1]) and the objective at the start and at that image."""

    image: torch.Tensor
    initial: LossTerms  # at the working size, at the initial image
    final: LossTerms  # at the working size, at the returned image (before clamping)
    evaluations: int  # over all levels
    level_evaluations: tuple[int, ...] = ()


class _StopLevel(Exception):
    """Raised inside the L-BFGS closure when a level has converged or the time budget is spent."""


@dataclass
class _Tracker:
    """Remembers the first and the best evaluated point: L-BFGS's last step need not be its best."""

    evaluations: int = 0
    initial: LossTerms | None = None
    best: LossTerms | None = None
    best_image: torch.Tensor | None = None
    history: list[float] = field(default_factory=list)

    def record(self, terms: LossTerms, image: torch.Tensor) -> None:
        self.evaluations += 1
        self.history.append(terms.total)
        if self.initial is None:
            self.initial = terms
        if self.best is None or terms.total < self.best.total:
            self.best = terms
            self.best_image = image.detach().clone()

    def converged(self, tolerance: float, window: int) -> bool:
        """Relative improvement of the best loss over the last ``window`` evaluations below ``tolerance``."""
        if tolerance <= 0 or len(self.history) <= window:
            return False
        before = min(self.history[:-window])
        now = min(self.history)
        return before - now < tolerance * abs(before)


def initial_image(content: torch.Tensor, init: str, seed: int) -> torch.Tensor:
    """The starting point: a copy of the photo, or uniform noise from ``seed``."""
    if init == "content":
        return content.detach().clone()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(content.shape, generator=generator, dtype=content.dtype).to(content.device)


_LOGIT_EPS = 1e-3


def _to_parameter(image: torch.Tensor, box: str) -> torch.Tensor:
    return torch.logit(image.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)) if box == "sigmoid" else image


def _to_image(parameter: torch.Tensor, box: str) -> torch.Tensor:
    """The image the objective scores, from the optimised parameter (see ``EngineSettings.box``)."""
    if box == "sigmoid":
        return torch.sigmoid(parameter)
    if box == "clamp":
        return parameter.clamp(0.0, 1.0)
    if box == "ste":  # clamped value, identity gradient
        return parameter + (parameter.clamp(0.0, 1.0) - parameter).detach()
    return parameter


def optimize(
    objective: Objective,
    start: torch.Tensor,
    budget: int,
    *,
    history_size: int = 100,
    first_step: float | None = None,
    tolerance: float = 0.0,
    window: int = 20,
    deadline: float | None = None,
    box: str = "none",
    on_evaluation: Callable[[LossTerms], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    end_level: Callable[[], bool] | None = None,
) -> _Tracker:
    """Run L-BFGS (strong Wolfe line search, :mod:`pipeline.engine.nst.lbfgs`) on the pixels of ``start`` for at
    most ``budget`` evaluations.

    Returns the tracker holding the best evaluated image. ``should_stop`` is
    polled after each evaluation; when it returns true the run raises
    :class:`~pipeline.errors.Cancelled`. ``end_level`` is also called after each
    evaluation; when it returns true the run ends there (a time budget's plan).
    """
    x = _to_parameter(start.detach().clone(), box).contiguous().requires_grad_(True)
    tracker = _Tracker()

    def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
        x.grad = None
        image = _to_image(x, box)
        content_term, style_term, tv_term = objective.terms(image)
        total = content_term + style_term + tv_term
        total.backward()
        terms = LossTerms(*(float(t.detach()) for t in (content_term, style_term, tv_term, total)))
        tracker.record(terms, image)
        if on_evaluation is not None:
            on_evaluation(terms)
        if should_stop is not None and should_stop():
            raise Cancelled("stopped before the style transfer finished")
        out_of_budget = tracker.evaluations >= budget  # L-BFGS checks its own budget only between steps
        planned_end = end_level is not None and end_level()
        if out_of_budget or planned_end or tracker.converged(tolerance, window) or (
            deadline is not None and time.monotonic() >= deadline
        ):
            raise _StopLevel
        assert x.grad is not None
        return total.detach(), x.grad

    try:
        minimize(x, evaluate, budget, history_size=history_size, first_step=first_step, normalize=True)
    except _StopLevel:
        pass
    assert tracker.best_image is not None
    return tracker


def _level_shape(content: torch.Tensor, scale: float) -> tuple[int, int]:
    height, width = content.shape[-2:]
    return max(1, round(height * scale)), max(1, round(width * scale))


def resample(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, 3, H, W) image: antialiased when shrinking, bicubic when enlarging; clamped to [0, 1]."""
    if tuple(image.shape[-2:]) == shape:
        return image
    shrinking = shape[0] < image.shape[-2]
    resized = F.interpolate(image, size=shape, mode="bilinear" if shrinking else "bicubic", antialias=shrinking,
                            align_corners=False)
    return resized.clamp(0.0, 1.0)


def resample_residual(residual: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Upsample a signed difference image (no clamping: it is not an image)."""
    return F.interpolate(residual, size=shape, mode="bicubic", align_corners=False)


def stylize(
    content: torch.Tensor,
    objective_at: Callable[[torch.Tensor], Objective],
    settings: EngineSettings,
    *,
    min_side: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    costs: EvaluationCosts | None = None,
    start: torch.Tensor | None = None,
) -> StylizeResult:
    """Stylise ``content`` (B, 3, H, W) in [0, 1] at its own size, coarse-to-fine per ``settings``.

    ``objective_at(level_content)`` builds the objective for one level (the
    caller owns the style targets and their cache). Coarse levels whose short
    side would fall below ``min_side`` (what the deepest layer needs) are skipped.
    With ``settings.time_budget``, ``costs`` holds the seconds per evaluation
    measured so far (the caller may keep it between photos, so the next one is
    planned with known costs from its start); the engine updates it.

    ``start`` (same shape as ``content``) is where the optimisation begins instead
    of ``settings.init``: a fast preset's network output (``engine: fast+refine``).
    It is already a stylised image at the working size, so the coarse levels,
    whose job is to find one, are skipped.
    """
    levels = [
        (scale, budget) for scale, budget in zip(settings.pyramid, settings.pyramid_iterations, strict=True)
        if min(_level_shape(content, scale)) >= min_side and start is None
    ] + [(1.0, settings.iterations)]
    shapes = [(*content.shape[:2], *_level_shape(content, scale)) for scale, _ in levels]
    # reserve: with several levels, the loss at the initial image is evaluated at the end (a forward pass)
    plan = LevelBudget(settings.time_budget, shapes, [budget for _, budget in levels], costs,
                       final_share=settings.final_share, reserve=0.4 if len(levels) > 1 else 0.0,
                       ) if settings.time_budget else None
    done = 0
    x: torch.Tensor | None = None
    spent: list[int] = []
    tracker: _Tracker | None = None
    objective: Objective | None = None
    previous: tuple[torch.Tensor, torch.Tensor] | None = None  # (level content, level result)
    for level, (scale, budget) in enumerate(levels):
        if plan is not None and plan.start(level) == 0:
            spent.append(0)  # the time budget is better spent at the later levels
            continue
        shape = _level_shape(content, scale)
        level_content = resample(content, shape)
        objective = objective_at(level_content)
        if previous is None:
            first = initial_image(level_content, settings.init, settings.seed) if start is None else start
        else:
            # Warm start: the photo at this level plus the coarse level's change, upsampled. Upsampling
            # the coarse result itself would blur away the photo's fine detail (and its content loss).
            coarse_content, coarse_result = previous
            first = (level_content + resample_residual(coarse_result - coarse_content, shape)).clamp(0.0, 1.0)

        def report(terms: LossTerms, level: int = level) -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                total = plan.total if plan is not None else sum(budget for _, budget in levels)
                on_progress(Progress(done, max(total, done), terms, level, len(levels)))

        tracker = optimize(
            objective, first, budget, history_size=settings.history_size, first_step=settings.first_step,
            tolerance=settings.tolerance, window=settings.window, box=settings.box, on_evaluation=report,
            should_stop=should_stop, end_level=plan.evaluated if plan is not None else None,
        )
        spent.append(tracker.evaluations)
        if plan is not None:
            plan.planned[level] = tracker.evaluations  # what it spent, for the progress total
        x = tracker.best_image
        previous = (level_content, x)
    assert tracker is not None and tracker.best is not None and x is not None and objective is not None
    initial = objective.evaluate(initial_image(content, settings.init, settings.seed)) if sum(
        1 for n in spent if n) > 1 else tracker.initial
    assert initial is not None
    return StylizeResult(image=x.clamp(0.0, 1.0), initial=initial, final=tracker.best, evaluations=sum(spent),
                         level_evaluations=tuple(spent))
