"""L-BFGS with a strong Wolfe line search on one tensor, the algorithm of ``torch.optim.LBFGS``.

Why not ``torch.optim.LBFGS`` itself: constructing any ``torch.optim`` optimiser
imports ``torch._dynamo`` (its ``add_param_group`` is wrapped to disable the
compiler), which costs as much as importing torch again — 1.5 s to 8 s on the
two-core CPU this project is measured on, all of it before the first
evaluation. This is the same step (Nocedal & Wright 2006, Algorithm 7.4, the
two-loop recursion; Algorithms 3.5/3.6, the strong Wolfe line search, taken
from ``torch.optim.lbfgs._strong_wolfe``) on a single tensor, without the
optimiser machinery; ``tests/test_engine.py`` checks it takes the same steps
as ``torch.optim.LBFGS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lbfgs import _strong_wolfe

#: Evaluate at the tensor's current value: returns the loss and the gradient (same shape).
Evaluate = Callable[[], tuple[float, torch.Tensor]]


@torch.no_grad()
def minimize(
    x: torch.Tensor,
    evaluate: Evaluate,
    max_evals: int,
    *,
    history_size: int = 100,
    lr: float = 1.0,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    first_step: float | None = None,
    normalize: bool = False,
) -> None:
    """Minimise ``evaluate`` over ``x`` in place, with at most about ``max_evals`` evaluations.

    ``evaluate`` is called with gradients enabled and must read ``x`` as it is
    at the call; it may raise to end the run early (``x`` then holds the last
    point evaluated or the line search's start). Mirrors one
    ``torch.optim.LBFGS(max_iter=max_eval=max_evals, line_search_fn="strong_wolfe").step``.

    ``first_step`` (None: torch's ``min(1, 1/|g|₁)``) sets the first line search's
    trial step so that no element of ``x`` moves by more than it. torch's guess knows
    nothing of the problem's scale; on images in [0, 1] it moved pixels by 0.0004–0.001
    where the accepted first step moved them by 0.04–0.08, so the line search spent
    3–4 evaluations just growing the step, at every pyramid level.

    ``normalize`` divides the loss and gradient by the first loss, so the line search
    works with numbers near 1. The style objective's losses reach 1e11 and its gradients
    1e9: the strong Wolfe line search's cubic interpolation squares differences of
    slopes of about 1e20, which overflows float32 (1e40 > 3e38), makes the next trial
    step NaN and every evaluation after it NaN (seen at 320 px on a dusk photo: the
    level stalled after 3 useful evaluations). L-BFGS's steps do not depend on the
    loss's scale; only the absolute tolerances become relative to the first loss.
    """
    scale = 1.0

    def flat_evaluate() -> tuple[float, torch.Tensor]:
        with torch.enable_grad():
            loss, grad = evaluate()
        return float(loss) * scale, grad.reshape(-1).mul(scale)

    def directional_evaluate(start: torch.Tensor, t: float, d: torch.Tensor) -> tuple[float, torch.Tensor]:
        x.view(-1).add_(d, alpha=t)
        loss, grad = flat_evaluate()
        x.view(-1).copy_(start)
        return loss, grad

    loss, flat_grad = flat_evaluate()
    evals = 1
    if normalize and math.isfinite(loss) and loss != 0.0:
        scale = 1.0 / abs(loss)
        loss, flat_grad = loss * scale, flat_grad.mul_(scale)
    if flat_grad.abs().max() <= tolerance_grad:
        return
    old_dirs: list[torch.Tensor] = []
    old_stps: list[torch.Tensor] = []
    ro: list[torch.Tensor] = []
    al: list[torch.Tensor | None] = [None] * history_size
    h_diag: torch.Tensor | float = 1
    d = flat_grad.neg()
    t: torch.Tensor | float = 0.0
    prev_flat_grad: torch.Tensor | None = None
    iteration = 0
    while iteration < max_evals:
        iteration += 1
        if iteration > 1:  # update the curvature memory with the last step, then the two-loop recursion
            y = flat_grad.sub(prev_flat_grad)
            s = d.mul(t)
            ys = y.dot(s)
            if ys > 1e-10:
                if len(old_dirs) == history_size:
                    old_dirs.pop(0)
                    old_stps.pop(0)
                    ro.pop(0)
                old_dirs.append(y)
                old_stps.append(s)
                ro.append(1.0 / ys)
                h_diag = ys / y.dot(y)
            q = flat_grad.neg()
            for i in range(len(old_dirs) - 1, -1, -1):
                al[i] = old_stps[i].dot(q) * ro[i]
                q.add_(old_dirs[i], alpha=-al[i])
            d = r = torch.mul(q, h_diag)
            for i in range(len(old_dirs)):
                be_i = old_dirs[i].dot(r) * ro[i]
                r.add_(old_stps[i], alpha=al[i] - be_i)
        if prev_flat_grad is None:
            prev_flat_grad = flat_grad.clone(memory_format=torch.contiguous_format)
        else:
            prev_flat_grad.copy_(flat_grad)
        prev_loss = loss
        if iteration > 1:
            t = lr
        elif first_step is not None:
            t = first_step / float(d.abs().max())
        else:
            t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr
        gtd = flat_grad.dot(d)
        if gtd > -tolerance_change:
            break
        start = x.detach().reshape(-1).clone()
        loss, flat_grad, t, ls_evals = _strong_wolfe(
            directional_evaluate, start, t, d, loss, flat_grad, gtd, max_ls=max_evals - evals
        )
        evals += ls_evals
        if not (math.isfinite(loss) and math.isfinite(float(t))):
            break  # a non-finite step: stay at the last finite point (the caller keeps the best one anyway)
        x.view(-1).add_(d, alpha=t)
        if iteration == max_evals or evals >= max_evals:
            break
        if flat_grad.abs().max() <= tolerance_grad:
            break
        if d.mul(t).abs().max() <= tolerance_change:
            break
        if abs(loss - prev_loss) < tolerance_change:
            break
