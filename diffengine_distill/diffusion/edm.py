"""The EDM (sigma-space) view of a VP diffusers model, as SFD works in it.

x = x_vp * sqrt(1 + sigma^2) with sigma = sqrt((1 - alpha_bar) / alpha_bar):
the probability-flow ODE becomes dx/dsigma = (x - D(x; sigma)) / sigma, where
the denoiser D is the model's x0 estimate at the VP step t(sigma) (fractional
t interpolates log alpha_bar, see ``NoiseSchedule.timestep``).

The functions below are shared by training (the SFD student's steps) and the
exported ``SFDScheduler``, so a reloaded export samples exactly as trained.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .noise_schedule import NoiseSchedule, per_sample, split_prediction

# sfd-main's step schedules (its key: schedule_type), see sampling_sigmas.
STEP_SCHEDULE_TYPES = ("polynomial", "logsnr", "time_uniform", "discrete")


def vp_scale(sigma) -> Tensor:
    """alpha = 1 / sqrt(1 + sigma^2): EDM x -> the UNet's VP input."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return (1 + sigma.square()).rsqrt()


def model_input(x: Tensor, sigma) -> Tensor:
    return x * per_sample(vp_scale(sigma), x)


def denoised(output: Tensor, x: Tensor, sigma, prediction_type: str) -> Tensor:
    """D(x; sigma) from the UNet's output on ``model_input(x, sigma)``."""
    alpha = vp_scale(sigma)
    x0, _ = split_prediction(output.to(x.dtype), model_input(x, sigma), alpha,
                             torch.as_tensor(sigma, dtype=torch.float64) * alpha,
                             prediction_type)
    return x0


def euler_step(x: Tensor, x0: Tensor, sigma, sigma_next) -> Tensor:
    """x + (sigma_next - sigma) (x - D) / sigma."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    ratio = per_sample(torch.as_tensor(sigma_next, dtype=torch.float64) / sigma, x)
    return ratio * x + (1 - ratio) * x0


def afs_step(x: Tensor, sigma, sigma_next) -> Tensor:
    """SFD's analytical first step: d = x / sqrt(1 + sigma^2), no network call."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    h = per_sample((torch.as_tensor(sigma_next, dtype=torch.float64) - sigma) * vp_scale(sigma), x)
    return x + h * x


def sampling_sigmas(num_steps: int, sigma_min: float, sigma_max: float,
                    schedule_type: str = "polynomial", schedule_rho: float = 7.0,
                    noise_schedule: NoiseSchedule | None = None) -> Tensor:
    """The step schedule: the ``num_steps`` sigmas a sampler visits, from
    sigma_max down to sigma_min (fp64), as sfd-main's ``get_schedule``
    (``schedule_type`` and ``schedule_rho`` are its names). Every family is a
    function of i / (num_steps - 1), so a grid with (M + 1)(n - 1) + 1 points
    holds the n-point grid at every (M + 1)-th entry.

    polynomial: EDM's rho-spacing; logsnr: uniform in log sigma; time_uniform:
    uniform in the time of a VP-SDE fitted to [sigma_min, sigma_max];
    discrete: uniform in the model's own t^(1/rho) (rho = 1: uniform t).
    """
    if schedule_type not in STEP_SCHEDULE_TYPES:
        raise ValueError(f"Unknown schedule_type {schedule_type!r}; use one of "
                         f"{STEP_SCHEDULE_TYPES}.")
    if num_steps < 2:
        raise ValueError(f"num_steps={num_steps}: a step schedule needs at least 2 timestamps.")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"Need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
    u = torch.arange(num_steps, dtype=torch.float64) / (num_steps - 1)
    if schedule_type == "polynomial":
        inv = 1 / schedule_rho
        return (sigma_max ** inv + u * (sigma_min ** inv - sigma_max ** inv)) ** schedule_rho
    if schedule_type == "logsnr":
        return torch.exp(math.log(sigma_max) + u * (math.log(sigma_min) - math.log(sigma_max)))
    if schedule_type == "time_uniform":
        eps = 1e-3  # the VP-SDE's smallest time, as in DPM-Solver
        log_max, log_min = math.log1p(sigma_max ** 2), math.log1p(sigma_min ** 2)
        beta_d = 2 * (log_min / eps - log_max) / (eps - 1)
        beta_min = log_max - 0.5 * beta_d
        t = (1 + u * (eps ** (1 / schedule_rho) - 1)) ** schedule_rho
        return torch.expm1(0.5 * beta_d * t.square() + beta_min * t).sqrt()
    if noise_schedule is None:
        raise ValueError("schedule_type='discrete' needs the model's NoiseSchedule.")
    inv = 1 / schedule_rho
    t_max, t_min = (float(noise_schedule.timestep(s)) for s in (sigma_max, sigma_min))
    t = (t_max ** inv + u * (t_min ** inv - t_max ** inv)) ** schedule_rho
    return noise_schedule.sigma(t)
