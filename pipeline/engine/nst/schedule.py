"""Spending a time budget across the pyramid's levels, by their measured cost per evaluation.

Without a time budget every level spends its configured evaluations. With one,
a first-come deadline let the coarse level spend nearly all of it (measured: 56
of 60 evaluations at half size, and ONE at the working size, whose image is the
one saved). Here the time is split instead: the working size gets
``final_share`` of it, the coarse levels the rest (in proportion to their
configured evaluations times their cost), each level at most its configured
evaluations, and time a level cannot use passes to the others. A coarse level
that would get fewer than ``min_coarse`` evaluations is skipped: a few steps at
half size buy less than the same seconds at the working size.

The split itself (:func:`split_budget`) is a pure function of the budget and the
costs, so it is tested without a clock; :class:`LevelBudget` feeds it the costs
measured on each level's first evaluations (or remembered from earlier photos in
:class:`EvaluationCosts`, which the caller may keep between photos).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: The working size's share of a time budget; the coarse levels share the rest. Measured with
#: bench/time_to_quality.py --shares (README "Speed and memory"), budgets of 1/40 to 1/5 of the plain
#: run's time, two runs: 0.7 gave the lowest loss in 5 of 8 cases, within 10% in 2 more, 2x worse once
#: (at 1/40, where no split came near the plain run); 0.5, 0.85 and 1.0 were each 1.5-5x worse somewhere.
FINAL_SHARE = 0.7
#: A coarse level that would get fewer evaluations than this is skipped, its time going to the others:
#: in those runs 2-3 coarse evaluations bought nothing, 13 bought a 2-5x lower loss than none.
MIN_COARSE_EVALUATIONS = 8


def split_budget(
    seconds: float,
    costs: Sequence[float],
    caps: Sequence[int],
    *,
    final_share: float = FINAL_SHARE,
    min_coarse: int = MIN_COARSE_EVALUATIONS,
) -> tuple[int, ...]:
    """Evaluations per level (coarse levels first, the working size last) that fit into ``seconds``.

    ``costs[i]`` is level i's seconds per evaluation, ``caps[i]`` the most evaluations it may spend.
    The working size always gets at least one evaluation (its image is the one saved).
    """
    count = len(costs)
    assert count == len(caps) and count >= 1, "one cost and one cap per level"
    assert all(cost > 0 for cost in costs), "costs are positive seconds"
    last = count - 1
    coarse_time = sum(caps[i] * costs[i] for i in range(last))
    weight = [
        (1.0 - final_share) * caps[i] * costs[i] / coarse_time if coarse_time > 0 else 0.0 for i in range(last)
    ] + [final_share]
    fixed: dict[int, int] = {i: 0 for i in range(count) if caps[i] <= 0}  # level -> evaluations, decided
    while True:
        free = [i for i in range(count) if i not in fixed]
        remaining = max(0.0, seconds - sum(n * costs[i] for i, n in fixed.items()))
        if not free:
            break
        total_weight = sum(weight[i] for i in free)
        if total_weight <= 0:  # only zero-weight levels are left: the time goes to the finest of them
            weight[free[-1]] = 1.0
            continue
        share = {i: remaining * weight[i] / total_weight for i in free}
        capped = [i for i in free if share[i] >= caps[i] * costs[i]]
        if capped:  # they get all they may spend; the rest is split again among the others
            fixed.update({i: caps[i] for i in capped})
            continue
        too_few = [i for i in free if i != last and share[i] / costs[i] < min_coarse]
        if too_few:  # skipping them leaves more time to the others
            fixed.update({i: 0 for i in too_few})
            continue
        fixed.update({i: math.floor(share[i] / costs[i]) for i in free})
    plan = [fixed[i] for i in range(count)]
    plan[last] = max(1, plan[last]) if caps[last] > 0 else 0
    return tuple(plan)


def _pixels(shape: tuple[int, ...]) -> int:
    """Batch × height × width: what an evaluation's cost grows with."""
    return math.prod(shape[:1] + shape[2:])


@dataclass
class EvaluationCosts:
    """Measured seconds per evaluation by image shape (B, C, H, W), on one device and precision.

    The engine reads and updates it; a caller that keeps it between photos (the
    daemon's worker does) plans the next photo's budget with measured costs from
    its first evaluation. A shape not yet measured is estimated from the measured
    shape nearest in pixels, scaled by the pixel count (a convolution's cost grows
    with it).
    """

    seconds: dict[tuple[int, ...], float] = field(default_factory=dict)

    def estimate(self, shape: tuple[int, ...]) -> float | None:
        if shape in self.seconds:
            return self.seconds[shape]
        if not self.seconds:
            return None
        pixels = _pixels(shape)
        nearest = min(self.seconds, key=lambda known: abs(math.log(_pixels(known) / pixels)))
        return self.seconds[nearest] * pixels / _pixels(nearest)

    def record(self, shape: tuple[int, ...], seconds: float) -> None:
        self.seconds[shape] = seconds


class LevelBudget:
    """Tells each pyramid level how many evaluations it may spend within a time budget.

    Call :meth:`start` when a level begins (before building its objective, so that
    counts against the budget), then :meth:`evaluated` after each of its
    evaluations: it returns true when the level should stop. Each answer re-plans
    the remaining levels with the time left and the latest costs. The working size
    stops when one more evaluation would end past the deadline, so the budget is
    an upper bound, not a target overshot by the last evaluation.
    """

    def __init__(
        self,
        seconds: float,
        shapes: Sequence[tuple[int, ...]],
        caps: Sequence[int],
        costs: EvaluationCosts | None = None,
        *,
        final_share: float = FINAL_SHARE,
        min_coarse: int = MIN_COARSE_EVALUATIONS,
        reserve: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``reserve``: evaluations' worth of time to leave at the end (the caller's own final work)."""
        self.reserve = reserve
        self.shapes = list(shapes)
        self.caps = list(caps)
        self.costs = costs if costs is not None else EvaluationCosts()
        self.final_share = final_share
        self.min_coarse = min_coarse
        self.clock = clock
        self.deadline = clock() + seconds
        self._level = -1
        self._level_start = 0.0
        self._stamps: list[float] = []  # end time of each evaluation of the current level
        self.planned: list[int] = list(caps)

    def _cost(self, level: int) -> float | None:
        return self.costs.estimate(self.shapes[level])

    def _plan(self, level: int, seconds: float) -> int | None:
        """Evaluations for ``level`` out of ``seconds`` for it and the levels after it (None: costs unknown)."""
        costs = [self._cost(i) for i in range(level, len(self.shapes))]
        if any(cost is None for cost in costs):
            return None
        plan = split_budget(seconds, costs, self.caps[level:], final_share=self.final_share,  # type: ignore[arg-type]
                            min_coarse=self.min_coarse)
        self.planned[level:] = plan
        return plan[0]

    def start(self, level: int) -> int:
        """Begin ``level``; returns the evaluations it may spend as planned now (0: skip it)."""
        self._level, self._level_start, self._stamps = level, self.clock(), []
        planned = self._plan(level, self.deadline - self._level_start)
        return self.caps[level] if planned is None else planned

    def evaluated(self) -> bool:
        """Record one evaluation of the current level; true when the level should stop."""
        now = self.clock()
        self._stamps.append(now)
        level, done = self._level, len(self._stamps)
        if now >= self.deadline or done >= self.caps[level]:
            return True
        # The first evaluation of a shape pays for warm-up (allocations, kernel choice): the cost is
        # the time per evaluation after it, or the first one's time until there is a second.
        if done >= 2:
            self.costs.record(self.shapes[level], (self._stamps[-1] - self._stamps[0]) / (done - 1))
        elif self.costs.estimate(self.shapes[level]) is None:
            self.costs.record(self.shapes[level], now - self._level_start)  # for the levels after this one
            return False  # a first evaluation's time overstates the cost: decide on this level after the next
        if level == len(self.shapes) - 1:  # the working size runs until another evaluation would not fit
            cost = self.costs.estimate(self.shapes[level])
            return cost is not None and now + cost * (1.0 + self.reserve) > self.deadline
        planned = self._plan(level, self.deadline - self._level_start)
        return planned is not None and done >= planned

    @property
    def total(self) -> int:
        """The evaluations planned over all levels (for progress reports)."""
        return sum(self.planned)
