"""VP noise schedule of any diffusers scheduler, at integer and fractional t.

z_t = alpha_t * x + sigma_t * eps, alpha_t^2 + sigma_t^2 = 1.

Time convention (the one diffusers' DDIM uses with ``set_alpha_to_one``):
t in [0, T-1] are the scheduler's discrete steps and t = -1 is the clean
image (alpha_bar = 1). Fractional t interpolates log(alpha_bar) linearly, so
a grid that does not divide T (e.g. 1000 -> 500 -> 250 -> 125 -> 62.5) is
still well defined; diffusers UNets accept float timesteps.
"""
from __future__ import annotations


import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"Unknown prediction_type {prediction_type!r}; use one of "
            f"{PREDICTION_TYPES} (diffusers' names for eps, v and x0).")
    return prediction_type


def per_sample(coef: Tensor | float, like: Tensor) -> Tensor:
    """(B,) or scalar coefficient -> (B, 1, 1, 1) to multiply images."""
    coef = torch.as_tensor(coef, dtype=like.dtype, device=like.device)
    return coef.reshape(coef.shape + (1,) * (like.ndim - coef.ndim))


def split_prediction(pred: Tensor, sample: Tensor, alpha, sigma,
                     prediction_type: str) -> tuple[Tensor, Tensor]:
    """Model output -> (x0_hat, eps_hat) for the noisy ``sample`` z_t."""
    a, s = per_sample(alpha, sample), per_sample(sigma, sample)
    if prediction_type == "epsilon":
        return (sample - s * pred) / a, pred
    if prediction_type == "v_prediction":
        return a * sample - s * pred, s * sample + a * pred
    if prediction_type == "sample":
        return pred, (sample - a * pred) / s
    check_prediction_type(prediction_type)
    raise AssertionError


def convert_prediction(pred: Tensor, sample: Tensor, alpha, sigma,
                       src: str, dst: str,
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """Convert a prediction among eps / v / x0, computed in ``dtype``.

    Computing in fp32 (or fp64 where alpha is tiny) keeps bf16/fp16 model
    outputs from losing the target's precision.
    """
    check_prediction_type(dst)
    pred, sample = pred.to(dtype), sample.to(dtype)
    alpha = torch.as_tensor(alpha, device=sample.device).to(dtype)
    sigma = torch.as_tensor(sigma, device=sample.device).to(dtype)
    if src == dst:
        return pred
    x0, eps = split_prediction(pred, sample, alpha, sigma, src)
    return prediction_target(x0, eps, alpha, sigma, dst)


def prediction_target(x0: Tensor, eps: Tensor, alpha, sigma,
                      prediction_type: str) -> Tensor:
    """What a model of ``prediction_type`` should output for (x0, eps)."""
    if prediction_type == "sample":
        return x0
    if prediction_type == "epsilon":
        return eps
    check_prediction_type(prediction_type)
    return per_sample(alpha, x0) * eps - per_sample(sigma, x0) * x0


def ddim_step(x0: Tensor, eps: Tensor, alpha_s, sigma_s) -> Tensor:
    """Deterministic DDIM (eta = 0) update: z_s = alpha_s x0 + sigma_s eps."""
    return per_sample(alpha_s, x0) * x0 + per_sample(sigma_s, x0) * eps


class NoiseSchedule:
    """alpha_t, sigma_t and log-SNR of a diffusers scheduler's alphas_cumprod.

    Values are diffusers' own (so an export's DDIM sampler uses exactly the
    same numbers), kept in fp64 for target arithmetic.
    """

    def __init__(self, alphas_cumprod: Tensor):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if ac.numel() < 2 or (ac[1:] > ac[:-1]).any() or (ac < 0).any() or \
                (ac > 1).any() or not (ac > 0).any():
            raise ValueError("alphas_cumprod must be a non-increasing "
                             "sequence of at least two values in (0, 1].")
        # Index 0 is t = -1 (clean). With zero terminal SNR the last entry is
        # log 0 = -inf, so alpha_bar is exactly 0 beyond T-2 (the log-linear limit).
        self.log_alpha_bar = torch.cat([ac.new_zeros(1), ac.log()])
        self.alphas_cumprod = ac
        self.num_train_timesteps = ac.numel()

    @classmethod
    def from_scheduler(cls, scheduler) -> "NoiseSchedule":
        """From a diffusers scheduler (any with ``alphas_cumprod``)."""
        if not hasattr(scheduler, "alphas_cumprod"):
            raise TypeError(
                f"{type(scheduler).__name__} has no alphas_cumprod: use a "
                "discrete VP scheduler (DDPM, DDIM, DPMSolver, Euler, ...).")
        return cls(scheduler.alphas_cumprod)

    def alpha_bar(self, t) -> Tensor:
        """alpha_bar at (possibly fractional) t in [-1, T-1], fp64."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.numel() and (t.min() < -1 or t.max() > self.num_train_timesteps - 1):
            raise ValueError(f"t must lie in [-1, {self.num_train_timesteps - 1}]")
        table = self.log_alpha_bar.to(t.device)
        pos = t + 1
        lo = pos.floor().long().clamp(max=table.numel() - 2)
        frac = pos - lo
        log_ab = table[lo] * (1 - frac) + table[lo + 1] * frac
        # Integer steps return diffusers' value exactly (incl. alpha_bar = 0).
        exact = torch.cat([t.new_ones(1), self.alphas_cumprod.to(t.device)])
        is_int = pos == pos.round()
        return torch.where(is_int, exact[pos.round().long()], log_ab.exp())

    def alpha_sigma(self, t) -> tuple[Tensor, Tensor]:
        ab = self.alpha_bar(t)
        return ab.sqrt(), (1 - ab).clamp_min(0).sqrt()

    def snr(self, t) -> Tensor:
        ab = self.alpha_bar(t)
        return ab / (1 - ab)

    def log_snr(self, t) -> Tensor:
        ab = self.alpha_bar(t)
        return ab.log() - torch.log1p(-ab)

    # -- the EDM (sigma-space) view: sigma = sqrt((1 - alpha_bar) / alpha_bar) --
    def sigma(self, t) -> Tensor:
        """EDM noise level of the VP step t (fp64)."""
        ab = self.alpha_bar(t)
        return ((1 - ab) / ab).sqrt()

    def sigma_range(self) -> tuple[float, float]:
        """The sigmas of t = 0 and t = T - 1 (infinite with zero terminal SNR)."""
        lo, hi = self.sigma(torch.tensor([0.0, self.num_train_timesteps - 1.0]))
        return float(lo), float(hi)

    def timestep(self, sigma) -> Tensor:
        """Inverse of ``sigma``: the fractional t with log alpha_bar interpolated
        linearly, so ``sigma(timestep(s)) == s`` (fp64)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        lo_s, hi_s = self.sigma_range()
        if sigma.numel() and (sigma.min() < lo_s * (1 - 1e-9) or sigma.max() > hi_s * (1 + 1e-9)):
            raise ValueError(f"sigma must lie in the model's range [{lo_s:.6g}, {hi_s:.6g}] "
                             f"(t = 0 .. {self.num_train_timesteps - 1}); got "
                             f"[{float(sigma.min()):.6g}, {float(sigma.max()):.6g}].")
        target = -torch.log1p(sigma.square())  # log alpha_bar, decreasing in t
        neg = -self.log_alpha_bar.to(sigma.device)  # increasing from 0 (t = -1)
        hi = torch.searchsorted(neg, -target).clamp(1, neg.numel() - 1)
        lo = hi - 1
        frac = ((-target - neg[lo]) / (neg[hi] - neg[lo])).nan_to_num(0.0).clamp(0, 1)
        return lo + frac - 1

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.num_train_timesteps})"

