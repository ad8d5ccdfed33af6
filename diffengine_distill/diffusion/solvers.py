"""EDM sigma-space ODE solvers, used as teacher solvers for SFD distillation.

All solvers integrate the probability-flow ODE in its variance-exploding form

    dx/dsigma = (x - D(x; sigma)) / sigma,

where D is the denoiser (x0 estimate). They follow the maths of the SFD
reference (zju-pi/diff-sampler, ``sfd-main/solvers.py`` / ``solver_utils.py``):

* ``euler``  first order, 1 evaluation per interval (= DDIM).
* ``heun``   EDM's Heun, 2 evaluations per interval (also on the last one).
* ``dpm``    single-step DPM-Solver-2 (r = 0.5, geometric midpoint), 2 evaluations.
* ``dpmpp``  multistep DPM-Solver++ in lambda = -log(sigma), orders 1..3.
* ``ipndm``  improved PNDM (Adams-Bashforth on dx/dsigma), orders 1..4.

AFS (analytical first step) replaces the first evaluation by the slope
x / sqrt(1 + sigma^2), i.e. it assumes x / sigma is still almost pure noise.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

SOLVERS = ("euler", "heun", "dpm", "dpmpp", "ipndm")
MAX_ORDER = {"dpmpp": 3, "ipndm": 4}

_TWO_EVALS = ("heun", "dpm")   # solvers with a corrector evaluation per interval
_DPM_R = 0.5                   # DPM-Solver-2 midpoint position in log-sigma
_THRESHOLD_Q = 0.995           # quantile of |D| used by dynamic thresholding
# Adams-Bashforth weights for iPNDM: (numerators, newest slope first), denominator.
_AB = {1: ((1,), 1), 2: ((3, -1), 2), 3: ((23, -16, 5), 12), 4: ((55, -59, 37, -9), 24)}

Denoiser = Callable[[Tensor, Tensor], Tensor]


def check_solver(solver: str, max_order: int | None = None) -> int | None:
    """Validate a solver name and its max_order; return the effective max_order.

    euler/heun/dpm have a fixed order: they return None and ignore max_order
    (as the reference does). dpmpp/ipndm default to their highest order.
    """
    if solver not in SOLVERS:
        raise ValueError(f"Unknown solver {solver!r}; use one of {SOLVERS}.")
    if solver not in MAX_ORDER:
        return None
    top = MAX_ORDER[solver]
    if max_order is None:
        return top
    try:
        ok = not isinstance(max_order, bool) and int(max_order) == max_order
    except (TypeError, ValueError):
        ok = False
    if not ok or not 1 <= max_order <= top:
        raise ValueError(f"max_order={max_order!r} is out of range for {solver}: "
                         f"use an integer in 1..{top}.")
    return int(max_order)


def solver_nfe(solver: str, num_steps: int, afs: bool = False) -> int:
    """Denoiser calls of one trajectory over `num_steps` timestamps."""
    check_solver(solver)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    intervals = num_steps - 1
    per_interval = 2 if solver in _TWO_EVALS else 1
    return per_interval * intervals - int(bool(afs) and intervals > 0)


def _row_quantile(a: Tensor, q: float) -> Tensor:
    """Linear-interpolated q-quantile of each row of a 2-D tensor.

    torch.quantile refuses inputs above 2**24 elements, kthvalue does not.
    """
    pos = q * (a.shape[1] - 1)
    lo = math.floor(pos)
    low = a.kthvalue(lo + 1, dim=1).values
    if lo + 1 >= a.shape[1] or pos == lo:
        return low
    high = a.kthvalue(lo + 2, dim=1).values
    return low + (pos - lo) * (high - low)


def _dynamic_threshold(x0: Tensor) -> Tensor:
    """Per sample: s = max(q_0.995(|x0|), 1); return clamp(x0, -s, s) / s."""
    s = _row_quantile(x0.abs().reshape(x0.shape[0], -1), _THRESHOLD_Q).clamp_min(1.0)
    s = s.reshape(-1, *([1] * (x0.dim() - 1)))
    return torch.clamp(x0, -s, s) / s


def _afs_slope(x: Tensor, sigma: Tensor) -> Tensor:
    # At large sigma x ~ sigma * noise, so x / sqrt(1 + sigma^2) approximates the noise.
    return x / torch.sqrt(1 + sigma ** 2)


def _dpmpp_update(x: Tensor, models: list[Tensor], sigmas: list[Tensor], sigma_next: Tensor,
                  order: int, predict_x0: bool) -> Tensor:
    """One multistep DPM-Solver++ step from sigmas[-1] to sigma_next.

    `models` holds data predictions D (predict_x0) or VE noise slopes
    d = (x - D) / sigma; the last `order` entries are used.
    """
    s0, m0 = sigmas[-1], models[-1]
    lam0 = -torch.log(s0)
    h = -torch.log(sigma_next) - lam0
    if predict_x0:
        phi1 = torch.expm1(-h)
        phi2 = phi1 / h + 1
        x_next = (sigma_next / s0) * x - phi1 * m0
    else:
        phi1 = torch.expm1(h)
        phi2 = phi1 / h - 1
        x_next = x - sigma_next * phi1 * m0
    if order == 1:
        return x_next
    # Divided differences of the model output in lambda, scaled by h.
    lam1 = -torch.log(sigmas[-2])
    r0 = (lam0 - lam1) / h
    d1_0 = (m0 - models[-2]) / r0
    scale = 1 if predict_x0 else sigma_next
    if order == 2:
        return x_next - 0.5 * scale * phi1 * d1_0
    lam2 = -torch.log(sigmas[-3])
    r1 = (lam1 - lam2) / h
    d1_1 = (models[-2] - models[-3]) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)   # ~ h^2 m''/2
    # Kept as in sfd-main (and DPM-Solver / diffusers): the d2 term gets phi3,
    # half of its Taylor weight, so the local error is O(h^3) and the scheme is
    # second order overall (tests pin this); it still beats order 2 in practice.
    phi3 = phi2 / h - 0.5
    if predict_x0:
        return x_next + phi2 * d1 - phi3 * d2
    return x_next - sigma_next * (phi2 * d1 + phi3 * d2)


def _dpmpp_order(i: int, max_order: int, num_steps: int, lower_order_final: bool) -> int:
    # Warm up from order 1; optionally drop the order again on the last intervals
    # (the final one is always first order then), as the reference does.
    if not lower_order_final:
        return min(max_order, i + 1)
    return i + 1 if i + 1 < max_order else min(max_order, num_steps - (i + 1))


def _ipndm_slope(d: Tensor, history: list[Tensor], order: int) -> Tensor:
    """Adams-Bashforth combination of the current slope and the last order-1 ones."""
    weights, denom = _AB[order]
    slopes = [d] + history[::-1]
    return sum(w * s for w, s in zip(weights, slopes)) / denom


def _check_sigmas(sigmas: Tensor) -> None:
    if sigmas.dim() != 1 or sigmas.numel() < 1:
        raise ValueError(f"sigmas must be a non-empty 1-D tensor, got shape {tuple(sigmas.shape)}.")
    if not bool((sigmas > 0).all()) or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be strictly decreasing and > 0 (no final sigma = 0).")


def solve(denoise: Denoiser, x: Tensor, sigmas: Tensor, solver: str = "dpmpp",
          max_order: int | None = None, predict_x0: bool = True,
          lower_order_final: bool = True, thresholding: bool = False,
          afs: bool = False) -> Tensor:
    """Integrate the PF-ODE from sigmas[0] to sigmas[-1]; return the trajectory.

    denoise(x, sigma) -> D(x; sigma), with sigma a 0-dim tensor of sigmas' dtype.
    x is the sample at sigmas[0] (already scaled: x = sigmas[0] * noise).
    Returns shape (len(sigmas), *x.shape) with trajectory[0] == x. Not wrapped
    in no_grad: teacher callers should do that themselves.
    """
    max_order = check_solver(solver, max_order)
    _check_sigmas(sigmas)
    sig = sigmas.to(device=x.device, dtype=x.dtype)   # update arithmetic in x's dtype
    sig_model = sigmas.to(device=x.device)            # what the denoiser is given
    num_steps = sig.numel()

    def slope(x_: Tensor, s: Tensor, s_model: Tensor) -> tuple[Tensor, Tensor]:
        denoised = denoise(x_, s_model).to(x_.dtype)
        return denoised, (x_ - denoised) / s

    trajectory = [x]
    models, model_sigmas = [], []   # dpmpp buffer (D or d) and the sigmas they came from
    history = []                    # ipndm: previous slopes, oldest first
    for i in range(num_steps - 1):
        s, s_next = sig[i], sig[i + 1]
        if afs and i == 0:
            d = _afs_slope(x, s)
            denoised = x - s * d
        else:
            denoised, d = slope(x, s, sig_model[i])

        if solver == "euler":
            x = x + (s_next - s) * d
        elif solver == "heun":
            x_pred = x + (s_next - s) * d
            _, d_pred = slope(x_pred, s_next, sig_model[i + 1])
            x = x + (s_next - s) * (0.5 * d + 0.5 * d_pred)
        elif solver == "dpm":
            s_mid = s_next ** _DPM_R * s ** (1 - _DPM_R)
            x_mid = x + (s_mid - s) * d
            _, d_mid = slope(x_mid, s_mid, s_mid.to(sigmas.dtype))
            x = x + (s_next - s) * (d_mid / (2 * _DPM_R) + (1 - 1 / (2 * _DPM_R)) * d)
        elif solver == "dpmpp":
            if predict_x0:
                models.append(_dynamic_threshold(denoised) if thresholding else denoised)
            else:
                models.append(d)
            model_sigmas.append(s)
            order = _dpmpp_order(i, max_order, num_steps, lower_order_final)
            x = _dpmpp_update(x, models, model_sigmas, s_next, order, predict_x0)
            models, model_sigmas = models[-max_order:], model_sigmas[-max_order:]
        else:  # ipndm
            order = min(max_order, i + 1)
            x = x + (s_next - s) * _ipndm_slope(d, history, order)
            history.append(d)
            history = history[-(max_order - 1):] if max_order > 1 else []
        trajectory.append(x)
    return torch.stack(trajectory)
