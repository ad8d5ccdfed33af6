"""DDIM on the trailing grid t_i = i T / N - 1 even when N does not divide T.

diffusers' DDIMScheduler steps from t to t - T // N, so a 16-step sampler on a
1000-step schedule is not the grid a progressive-distillation student was
trained on (62.5-step spacing). This scheduler samples exactly that grid, with
alpha_bar interpolated like ``NoiseSchedule``; where N divides T it is
DDIMScheduler itself.
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler
# diffusers' from_pretrained finds the loading base class by name in the
# module that model_index.json records, i.e. this one.
from diffusers import SchedulerMixin  # noqa: F401
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput

from diffengine_distill.diffusion import NoiseSchedule, ddim_step, split_prediction


class GridDDIMScheduler(DDIMScheduler):
    """Deterministic DDIM (eta = 0) on fractional trailing grids."""

    def set_timesteps(self, num_inference_steps: int, device=None):
        T = self.config.num_train_timesteps
        self.num_inference_steps = num_inference_steps
        if T % num_inference_steps == 0:
            return super().set_timesteps(num_inference_steps, device)
        grid = torch.arange(num_inference_steps, 0, -1, dtype=torch.float64)
        self.timesteps = (grid * T / num_inference_steps - 1).float().to(device)

    def step(self, model_output, timestep, sample, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator=None, return_dict: bool = True,
             **kwargs):
        """As DDIMScheduler.step: with ``clip_sample``, eps_hat is recomputed from
        the clipped x0_hat only when ``use_clipped_model_output`` is set."""
        T, n = self.config.num_train_timesteps, self.num_inference_steps
        if T % n == 0:
            return super().step(model_output, timestep, sample, eta=eta,
                                use_clipped_model_output=use_clipped_model_output,
                                generator=generator, return_dict=return_dict, **kwargs)
        if eta:
            raise ValueError("GridDDIMScheduler samples fractional grids deterministically "
                             "(eta = 0) only.")
        noise_schedule = NoiseSchedule(self.alphas_cumprod)
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(1)
        (a_t, s_t) = noise_schedule.alpha_sigma(t)
        (a_s, s_s) = noise_schedule.alpha_sigma(t - T / n)
        x0, eps = split_prediction(model_output.double(), sample.double(), a_t, s_t,
                                   self.config.prediction_type)
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
            if use_clipped_model_output:
                eps = (sample.double() - a_t * x0) / s_t
        prev = ddim_step(x0, eps, a_s, s_s).to(sample.dtype)
        if not return_dict:
            return (prev, x0.to(sample.dtype))
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0.to(sample.dtype))
