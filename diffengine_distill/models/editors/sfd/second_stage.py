"""SFD's second stage: a 1-NFE student of a first-stage SFD / SFD-v export."""
from __future__ import annotations

import torch
from mmengine.logging import print_log
from torch import Tensor

from diffengine_distill.registry import MODELS

from ...builders import load_vae
from ...perceptual import build_lpips, lpips_distance
from ..base import BaseDiffusionModel
from .sfd import SFD

LAST_STEP_LOSSES = ("lpips", "lpips_decoded", "l1")
# The first stage's options that its export fixes (step schedule, sigma
# interval, step condition) or that an Euler teacher does not use. Configs
# that inherit a first-stage config carry them; they are ignored here.
FIRST_STAGE_KEYS = ("sampler_tea", "max_order", "predict_x0", "lower_order_final",
                    "thresholding", "schedule_type", "schedule_rho", "sigma_min", "sigma_max",
                    "use_step_condition", "step_range", "is_second_stage")


def check_last_step_loss(name: str | None, latent: bool) -> str:
    """The second stage's last-step loss; None picks sfd-main's choice:
    LPIPS in pixel space, L1 for latent teachers."""
    if name is None:
        return "l1" if latent else "lpips"
    if name not in LAST_STEP_LOSSES:
        raise ValueError(f"last_step_loss must be one of {LAST_STEP_LOSSES}, got {name!r}.")
    if name == "lpips" and latent:
        raise ValueError("last_step_loss='lpips' compares images, but this teacher samples "
                         "VAE latents: use 'l1' (sfd-main's choice for latent teachers) "
                         "or 'lpips_decoded' (LPIPS of the VAE-decoded images).")
    if name == "lpips_decoded" and not latent:
        raise ValueError("last_step_loss='lpips_decoded' is for latent teachers; this "
                         "one samples pixels: use 'lpips'.")
    return name


@MODELS.register_module()
class SFDSecondStage(SFD):
    """sfd-main's second stage: distil a first-stage SFD / SFD-v export to 1 NFE.

    ``unet`` and ``scheduler`` point at the first stage's export folder. As
    sfd-main, the teacher is that model's Euler sampler (with its AFS) on
    (M + 1)(num_steps - 1) + 1 timestamps of its step schedule and sigma
    interval, conditioned on that step count when it is an SFD-v model; the
    student starts as its copy and trains as a first-stage SFD student.

    Args:
        num_steps, M, afs, step_seed, global_batch: as ``SFD`` (defaults:
            sfd-main's second stage, 3 timestamps = 1 NFE with AFS, M = 2).
        last_step_loss: ``"lpips"`` (default for pixel teachers, as sfd-main)
            adds the last step's LPIPS to every element of its L1 tensor,
            i.e. with weight C*H*W against the summed L1 (needs the ``lpips``
            package and its weights locally); ``"l1"`` (default for latent
            teachers, as sfd-main) is L1 alone; ``"lpips_decoded"`` (latent
            teachers) takes LPIPS of VAE-decoded images, same weight (latent
            C*H*W).
        lpips_vae: ``"lpips_decoded"``'s decoder (``load_vae`` options, e.g. a
            tiny VAE); None: the data preprocessor's VAE.
        The first-stage options in ``FIRST_STAGE_KEYS`` are ignored.
    """

    def __init__(self, *args, num_steps: int = 3, M: int = 2, afs: bool = True,
                 last_step_loss: str | None = None, lpips_vae: dict | None = None,
                 step_seed: int = 0, global_batch: int | None = None, **kwargs):
        ignored = [key for key in FIRST_STAGE_KEYS if key in kwargs]
        for key in ignored:
            kwargs.pop(key)
        # Not SFD.__init__: every teacher option comes from the first stage's export.
        BaseDiffusionModel.__init__(self, *args, **kwargs)
        first = self._first_stage_config()
        if ignored:
            print_log(f"SFDSecondStage ignores {', '.join(ignored)}: its Euler teacher "
                      "takes the step schedule, sigma interval, AFS and step condition from "
                      "the first stage's export.", logger="current")
        self._init_student(num_steps, M, afs, step_seed, global_batch)
        self._num_classes = first.num_classes
        self.teacher_afs = bool(first.afs)
        self.solver = dict(solver="euler")
        self._init_step_schedule(first.schedule_type, first.schedule_rho,
                                 first.sigma_min, first.sigma_max)
        # The student copies the teacher's step-count table, if it has one.
        self.step_condition_size = first.step_condition_size
        self._init_step_condition(self.step_condition_size is not None)
        if self.text_conditioned and first.step_range is not None:
            raise ValueError("A text-to-image SFD-v export is one stock UNet per step count "
                             "(the table is folded in): point the second stage at a per-NFE "
                             "SFD export instead.")
        self.step_range = None
        self._check_steps()
        self.last_step_loss = check_last_step_loss(last_step_loss, self.latent)
        # Plain attributes, not submodules: frozen weights stay out of checkpoints.
        lpips = decoder = None
        if self.last_step_loss != "l1":
            lpips = build_lpips("last_step_loss",
                                "model.last_step_loss='l1' (L1 alone on the last step)")
        if self.last_step_loss == "lpips_decoded":
            decoder = load_vae(**lpips_vae) if lpips_vae else self.data_preprocessor.vae
            decoder.eval().requires_grad_(False)
        object.__setattr__(self, "lpips", lpips)
        object.__setattr__(self, "lpips_decoder", decoder)
        self.teacher_unet = self.frozen_teacher()
        # Persistent, as the first stage's (checkpoints have the same keys).
        self.register_buffer("iteration", torch.tensor(0))

    def _first_stage_config(self):
        if type(self.scheduler).__name__ != "SFDScheduler":
            raise ValueError(
                "SFDSecondStage distils a first-stage SFD/SFD-v export: point "
                "model.unet and model.scheduler at its folder (work_dirs/<sfd run>/step<N>); "
                f"this teacher's scheduler is {type(self.scheduler).__name__}.")
        return self.scheduler.config

    @property
    def latent(self) -> bool:
        """Samples are VAE latents (the SD data preprocessor), not pixels."""
        return hasattr(self.data_preprocessor, "vae")

    def _check_steps(self) -> None:
        super()._check_steps()
        if self.step_condition_size is not None:
            teacher_steps = self.teacher_points(self.num_steps)[0]
            if max(teacher_steps, self.num_steps) >= self.step_condition_size:
                raise ValueError(
                    f"The first-stage SFD-v table holds step counts below "
                    f"{self.step_condition_size}; the teacher needs {teacher_steps}: lower M.")

    def teacher_step_condition(self, points: int) -> int | None:
        """An SFD-v teacher is conditioned on the count of its own timestamps."""
        return points if self.use_step_condition else None

    def step_loss(self, x: Tensor, target: Tensor, last: bool) -> Tensor:
        """The summed L1 of ``SFD``; on the last step sfd-main adds the
        batch-mean LPIPS to every element of the L1 tensor before summing, so
        it weighs C*H*W times a pixel's L1."""
        loss = super().step_loss(x, target, last)
        if last and self.lpips is not None:
            loss = loss + x[0].numel() * self.perceptual(x, target).mean()
        return loss

    def perceptual(self, x: Tensor, target: Tensor) -> Tensor:
        """Per-sample LPIPS at 224 px, of the decoded images for latent teachers."""
        if self.lpips_decoder is None:
            return lpips_distance(self.lpips, x, target)
        vae = self.lpips_decoder.to(x.device)

        def decode(latents):  # sigma-space sample at sigma_min ~ the latent itself
            return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.float()
        with torch.no_grad():
            target = decode(target)
        return lpips_distance(self.lpips, decode(x), target)
