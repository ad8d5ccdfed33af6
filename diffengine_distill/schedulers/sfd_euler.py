"""The sampler of an SFD student: Euler steps in sigma-space on the trained
grid, optionally with SFD's analytical first step (AFS, no network call).

``num_inference_steps`` counts network evaluations (NFE): the grid has
NFE + 1 (+1 with AFS) timestamps, as in sfd-main (num_steps = 4 with AFS is
2 NFE). The sample lives in sigma-space (``scale_model_input`` gives the UNet
its VP input) and ends at sigma_min.

AFS multiplies the start by a constant (d = x / sqrt(1 + sigma_max^2), no
network call), so it is folded into ``init_noise_sigma``: ``timesteps`` hold
only the steps that need the network, and diffusers' own pipelines (which
call the UNet for every entry, e.g. ``StableDiffusionPipeline``) cost NFE
UNet calls, not NFE + 1.
"""
from __future__ import annotations

import warnings

import torch
from diffusers import DDPMScheduler, SchedulerMixin  # noqa: F401 (diffusers' loader)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from diffengine_distill.diffusion import (NoiseSchedule, afs_step, denoised, euler_step,
                                          model_input, sampling_sigmas)
from diffengine_distill.diffusion.sfd_steps import nfe, step_labels, timestamps


class SFDScheduler(SchedulerMixin, ConfigMixin):
    """Euler (+AFS) on the trained step schedule: a polynomial / logsnr /
    time_uniform / discrete sigma grid (``schedule_type``, ``schedule_rho``).

    The noise schedule options are DDPMScheduler's (they define the VP model's
    alpha_bar); the rest are the SFD run's: ``num_steps`` timestamps it was
    trained for, or for a step-conditioned (SFD-v) student ``step_range`` of
    allowed timestamps and ``step_condition_size`` rows per class in its
    class-embedding table (see ``models.editors.sfd.step_condition``).
    """

    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear", trained_betas=None,
                 rescale_betas_zero_snr: bool = False, prediction_type: str = "epsilon",
                 sigma_min: float = 0.002, sigma_max: float = 80.0,
                 schedule_type: str = "polynomial", schedule_rho: float = 7.0,
                 afs: bool = True, num_steps: int = 4, step_range=None,
                 step_condition_size: int | None = None, num_classes: int | None = None):
        vp = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start,
                           beta_end=beta_end, beta_schedule=beta_schedule,
                           trained_betas=trained_betas,
                           rescale_betas_zero_snr=rescale_betas_zero_snr)
        self.alphas_cumprod = vp.alphas_cumprod
        self.noise_schedule = NoiseSchedule(self.alphas_cumprod)
        self.set_timesteps(self.nfe(num_steps))

    # -- NFE <-> timestamps ----------------------------------------------------
    def nfe(self, num_steps: int) -> int:
        return nfe(num_steps, self.config.afs)

    def num_steps_for(self, num_inference_steps: int | None) -> int:
        cfg = self.config
        if num_inference_steps is None:
            return cfg.num_steps
        num_steps = timestamps(num_inference_steps, cfg.afs)
        if cfg.step_range is not None:
            lo, hi = cfg.step_range
            if not lo <= num_steps <= hi:
                raise ValueError(
                    f"This SFD-v student was trained for {self.nfe(lo)}..{self.nfe(hi)} "
                    f"network evaluations; got num_inference_steps={num_inference_steps}.")
        elif num_steps != cfg.num_steps:
            warnings.warn(f"This SFD student was trained for {self.nfe(cfg.num_steps)} "
                          f"network evaluations; sampling with {num_inference_steps}.")
        return num_steps

    def set_timesteps(self, num_inference_steps: int | None = None, device=None):
        self.num_steps = self.num_steps_for(num_inference_steps)
        self.num_inference_steps = self.nfe(self.num_steps)
        cfg = self.config
        self.sigmas = sampling_sigmas(self.num_steps, cfg.sigma_min, cfg.sigma_max,
                                      cfg.schedule_type, cfg.schedule_rho, self.noise_schedule)
        # One entry per network step (AFS's interval is in init_noise_sigma);
        # the UNet's (fractional) timestep at its start.
        self._first = int(cfg.afs)
        network_sigmas = self.sigmas[self._first:-1]
        self.timesteps = self.noise_schedule.timestep(network_sigmas).float().to(device)
        self._step_index = 0

    @property
    def init_noise_sigma(self) -> float:
        """sigma_max, times AFS's factor when the first step is analytical."""
        start = torch.ones((), dtype=torch.float64) * self.sigmas[0]
        if self.config.afs:
            start = afs_step(start, self.sigmas[0], self.sigmas[1])
        return float(start)

    def needs_model_output(self, step_index: int) -> bool:
        """Every entry of ``timesteps`` is a network step (AFS is folded in)."""
        return True

    def condition_labels(self, class_labels, batch_size: int, device=None):
        """The UNet's class_labels: the class, or class x step count for SFD-v."""
        size = self.config.step_condition_size
        if size is None:
            return class_labels
        return step_labels(class_labels, self.num_steps, size, batch_size, device)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return model_input(sample, self.sigmas[self._first + self._step_index])

    def step(self, model_output, timestep, sample: torch.Tensor, return_dict: bool = True,
             **kwargs):
        i = self._first + self._step_index
        if model_output is None:
            raise ValueError(f"Step {self._step_index} needs the model's output.")
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        x0 = denoised(model_output, sample, sigma, self.config.prediction_type)
        prev = euler_step(sample, x0, sigma, sigma_next)
        self._step_index += 1
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def __len__(self):
        return self.config.num_train_timesteps
