"""The progressive-distillation target (Salimans & Ho 2022, Algorithm 2).

Grid of a student with N steps on a scheduler of T training steps, in the
DDIM-trailing convention of ``NoiseSchedule``: t_i = i T / N - 1, i = 1..N, and
t_0 = -1 is the clean image. The frozen teacher takes two DDIM steps
t_i -> t_i - T/(2N) -> t_{i-1} (no clipping of x0_hat); the target x~ is the
x0 for which ONE student DDIM step from z_t lands on the teacher's point:

    x~ = (z'' - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)

At the last step (s = -1, sigma_s = 0) this is the teacher's x0_hat at the
mid point, with no special case.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ....diffusion import NoiseSchedule, ddim_step, per_sample, split_prediction


def student_grid(num_train_timesteps: int, student_steps: int, index: Tensor) -> tuple:
    """(t, t_mid, s) for grid indices ``index`` in 1..N (fractional when N does not divide T)."""
    step = num_train_timesteps / student_steps
    t = index.double() * step - 1
    return t, t - step / 2, t - step


@torch.no_grad()
def pd_target(teacher: Callable[[Tensor, Tensor], Tensor], teacher_type: str,
              noise_schedule: NoiseSchedule, z_t: Tensor, t: Tensor, t_mid: Tensor,
              s: Tensor) -> tuple[Tensor, Tensor]:
    """(x~, eps~) for noisy ``z_t`` at ``t``; ``teacher(z, t)`` returns its raw
    prediction of type ``teacher_type``. Arithmetic in fp64."""
    z_t = z_t.double()
    a_t, s_t = noise_schedule.alpha_sigma(t)
    a_m, s_m = noise_schedule.alpha_sigma(t_mid)
    a_s, s_s = noise_schedule.alpha_sigma(s)
    x0, eps = split_prediction(teacher(z_t, t).double(), z_t, a_t, s_t, teacher_type)
    z_mid = ddim_step(x0, eps, a_m, s_m)
    x0, eps = split_prediction(teacher(z_mid, t_mid).double(), z_mid, a_m, s_m, teacher_type)
    z_s = ddim_step(x0, eps, a_s, s_s)
    ratio = per_sample(s_s / s_t, z_t)
    x_target = (z_s - ratio * z_t) / (per_sample(a_s, z_t) - ratio * per_sample(a_t, z_t))
    eps_target = (z_t - per_sample(a_t, z_t) * x_target) / per_sample(s_t, z_t)
    return x_target, eps_target
