"""Optimise an image under the Gatys objective: tensors in, tensor out.

The image's pixels are the parameters (Gatys et al. 2016, sec. 2), optimised
with L-BFGS as in the paper. L-BFGS needs a line search here: without one it
stalls on this objective's loss scale, with ``strong_wolfe`` it converges
(measured in the seed project). ``iterations`` is a budget of objective
evaluations (forward + backward passes), since that is what costs time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from pipeline.errors import Cancelled
from pipeline.nst.objective import LossTerms, Objective


@dataclass(frozen=True)
class EngineSettings:
    """How to optimise; the objective's weights live in :class:`~pipeline.nst.objective.ObjectiveWeights`."""

    iterations: int = 300  # objective evaluations (forward + backward passes) to spend
    init: Literal["content", "noise"] = "content"  # start from the photo, or seeded uniform noise
    seed: int = 0  # seeds the noise init; with it, same input + device give the same output
    history_size: int = 100  # L-BFGS memory: more curvature pairs, fewer wasted evaluations


@dataclass(frozen=True)
class Progress:
    """Sent to the progress callback after every evaluation."""

    evaluation: int
    budget: int
    loss: LossTerms


@dataclass
class StylizeResult:
    """The best image found (clamped to [0, 1]) and the objective at the start and at that image."""

    image: torch.Tensor
    initial: LossTerms
    final: LossTerms
    evaluations: int


@dataclass
class _Tracker:
    """Remembers the first and the best evaluated point: L-BFGS's last step need not be its best."""

    evaluations: int = 0
    initial: LossTerms | None = None
    best: LossTerms | None = None
    best_image: torch.Tensor | None = None

    def record(self, terms: LossTerms, image: torch.Tensor) -> None:
        self.evaluations += 1
        if self.initial is None:
            self.initial = terms
        if self.best is None or terms.total < self.best.total:
            self.best = terms
            self.best_image = image.detach().clone()


def initial_image(content: torch.Tensor, init: str, seed: int) -> torch.Tensor:
    """The starting point: a copy of the photo, or uniform noise from ``seed``."""
    if init == "content":
        return content.detach().clone()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(content.shape, generator=generator, dtype=content.dtype).to(content.device)


def stylize(
    content: torch.Tensor,
    objective: Objective,
    settings: EngineSettings,
    *,
    start: torch.Tensor | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> StylizeResult:
    """Minimise ``objective`` over the pixels of an image shaped like ``content`` (B, 3, H, W) in [0, 1].

    ``start`` overrides the initial image (a warm start from a coarser result).
    ``should_stop`` is polled after each evaluation; when it returns true the run
    raises :class:`~pipeline.errors.Cancelled`.
    """
    x0 = start.detach().clone() if start is not None else initial_image(content, settings.init, settings.seed)
    x = x0.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=settings.iterations,
        max_eval=settings.iterations,
        history_size=settings.history_size,
        line_search_fn="strong_wolfe",
    )
    tracker = _Tracker()

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        content_term, style_term, tv_term = objective.terms(x)
        total = content_term + style_term + tv_term
        total.backward()
        terms = LossTerms(*(float(t.detach()) for t in (content_term, style_term, tv_term, total)))
        tracker.record(terms, x)
        if on_progress is not None:
            on_progress(Progress(tracker.evaluations, settings.iterations, terms))
        if should_stop is not None and should_stop():
            raise Cancelled("stopped before the style transfer finished")
        return total

    optimizer.step(closure)
    assert tracker.best_image is not None and tracker.initial is not None and tracker.best is not None
    return StylizeResult(
        image=tracker.best_image.clamp(0.0, 1.0),
        initial=tracker.initial,
        final=tracker.best,
        evaluations=tracker.evaluations,
    )
