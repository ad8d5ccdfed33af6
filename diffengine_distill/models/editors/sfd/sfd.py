"""Simple and Fast Distillation (Zhou, Chen et al., NeurIPS 2024) of a diffusers UNet."""
from __future__ import annotations

import os.path as osp

import torch
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from torch import Tensor

from diffengine_distill.registry import MODELS

from ...builders import build_scheduler
from ....diffusion import (STEP_SCHEDULE_TYPES, afs_step, denoised, euler_step, model_input,
                          sampling_sigmas)
from ....diffusion.sfd_steps import nfe, timestamps
from ....diffusion.solvers import check_solver, solve
from ..base import BaseDiffusionModel
from .step_condition import add_step_condition, folded_step_condition, step_labels

# sfd-main's sigma interval: (0.006, 80) for EDM and LDM models, sigma_min 0.1
# for Stable Diffusion; sigma_max is capped at the model's sigma(t = T-1)
# (14.6 for SD 1.5), as sfd-main's LDM wrapper.
SFD_SIGMA_MIN, SD_SIGMA_MIN, SFD_SIGMA_MAX = 0.006, 0.1, 80.0


def refuse_second_stage_keys(kwargs: dict) -> None:
    """Configs written when the second stage was a flag of SFD: drop their
    first-stage values (is_second_stage=False, last_step_loss=None) and point
    those that ask for the second stage to its own model."""
    for key in ("is_second_stage", "last_step_loss", "lpips_vae"):
        value = kwargs.pop(key, None)
        if value:
            raise ValueError(
                f"model.{key}={value!r} is a second-stage option, and the second stage is "
                "its own model: set model.type='SFDSecondStage' (and drop is_second_stage) "
                "to distil a first-stage SFD/SFD-v export to 1 NFE.")


@MODELS.register_module()
class SFD(BaseDiffusionModel):
    """A student that follows a teacher ODE solver's trajectory with Euler steps.

    The arguments after the UNet/scheduler ones are sfd-main's, with its
    defaults and meaning (``num_steps`` counts timestamps: 4 with AFS is 2 NFE).
    The student starts as a copy of the teacher (``unet``); each iteration the
    teacher solves the interval on (M + 1)(num_steps - 1) + 1 timestamps with
    ``sampler_tea`` and every (M + 1)-th state is a target. The student takes
    one Euler step per interval from its own previous, detached output, and
    the optimizer steps after every student step (num_steps - 1, minus one
    with AFS, updates per batch): see ``train_step``.

    The second stage (a 1-NFE student of a first-stage export) is
    ``SFDSecondStage``.

    Args:
        num_steps, M, afs, sampler_tea, max_order, predict_x0,
        lower_order_final, schedule_type, schedule_rho, use_step_condition:
            as in sfd-main's README table (``schedule_type``/``schedule_rho``:
            the step schedule, see docs/methods.md).
        sigma_min, sigma_max: the sampled sigma interval; None takes sfd-main's,
            clipped to the model's range (sigma of t = 0 .. T-1): sigma_min 0.1
            for text-to-image (SD-class) teachers, else 0.006; sigma_max 80.
        thresholding: DPM-Solver++ teacher's dynamic thresholding of x0
            (sfd-main always applies it; turn it off for latent models).
        step_range: SFD-v's range of num_steps drawn per iteration (sfd-main
            draws 4..7, i.e. 2..5 NFE with AFS).
        step_seed: seeds SFD-v's step-count draws, which are a function of
            (step_seed, iteration) so every process and a resumed run agree.
        global_batch: trajectories per iteration over all processes, the
            number the config's total_kimg was divided by. The first
            iteration logs processes x per-process batch and, when this is
            set, fails unless they multiply to it (mmengine's batch_size is
            per process: ``--gpus 8`` would multiply the batch by 8).
    """

    def __init__(self, *args, num_steps: int = 4, M: int = 3, afs: bool = True,
                 sampler_tea: str = "dpmpp", max_order: int | None = None,
                 predict_x0: bool = True, lower_order_final: bool = True,
                 schedule_type: str = "polynomial", schedule_rho: float = 7.0,
                 use_step_condition: bool = False,
                 sigma_min: float | None = None, sigma_max: float | None = None,
                 thresholding: bool = True, step_range: tuple[int, int] = (4, 7),
                 step_seed: int = 0, global_batch: int | None = None, **kwargs):
        refuse_second_stage_keys(kwargs)
        super().__init__(*args, **kwargs)
        self._init_student(num_steps, M, afs, step_seed, global_batch)
        self._num_classes = super().num_classes
        self.teacher_afs = False  # the teacher solves from sigma_max with its own steps
        self.solver = dict(solver=sampler_tea, max_order=check_solver(sampler_tea, max_order),
                           predict_x0=bool(predict_x0), lower_order_final=bool(lower_order_final),
                           thresholding=bool(thresholding))
        self._init_step_schedule(schedule_type, schedule_rho, sigma_min, sigma_max)
        self._init_step_condition(use_step_condition)
        self.step_range = tuple(int(n) for n in step_range) if self.use_step_condition else None
        self._check_steps()
        self.teacher_unet = self.frozen_teacher()
        if self.use_step_condition:
            # Room for the second stage's teacher count, (M + 1)(3 - 1) + 1 = 7 by default.
            self.step_condition_size = max(self.step_range[1], 7) + 1
            add_step_condition(self.unet, self.step_condition_size)
        else:
            self.step_condition_size = None
        # Persistent: SFD-v's draws depend on it, so a resumed run draws the same.
        self.register_buffer("iteration", torch.tensor(0))

    def _init_student(self, num_steps, M, afs, step_seed, global_batch) -> None:
        self.num_steps, self.M, self.afs = int(num_steps), int(M), bool(afs)
        self.step_seed = int(step_seed)
        self.global_batch = None if global_batch is None else int(global_batch)
        self._batch_checked = False

    def _init_step_schedule(self, schedule_type, schedule_rho, sigma_min, sigma_max) -> None:
        if schedule_type not in STEP_SCHEDULE_TYPES:
            raise ValueError(f"Unknown schedule_type {schedule_type!r}; use one of "
                             f"{STEP_SCHEDULE_TYPES}.")
        self.schedule_type, self.schedule_rho = schedule_type, float(schedule_rho)
        self.sigma_min, self.sigma_max = self._sigma_interval(sigma_min, sigma_max)

    def _init_step_condition(self, use_step_condition) -> None:
        self.use_step_condition = bool(use_step_condition)
        if self.use_step_condition and self.text_conditioned and self.lora_config is not None:
            raise ValueError("SFD-v's step-count table is a new layer that a LoRA export "
                             "cannot carry: train a full-UNet student (lora_config=None) or "
                             "per-NFE SFD students (use_step_condition=False).")

    # -- configuration checks ------------------------------------------------
    def _sigma_interval(self, sigma_min, sigma_max) -> tuple[float, float]:
        lo, hi = self.noise_schedule.sigma_range()
        default_min = SD_SIGMA_MIN if self.text_conditioned else SFD_SIGMA_MIN
        sigma_min = max(default_min, lo) if sigma_min is None else float(sigma_min)
        sigma_max = min(SFD_SIGMA_MAX, hi) if sigma_max is None else float(sigma_max)
        if not lo * (1 - 1e-9) <= sigma_min < sigma_max <= hi * (1 + 1e-9):
            raise ValueError(
                f"sigma_min={sigma_min:.6g}, sigma_max={sigma_max:.6g} must satisfy "
                f"{lo:.6g} <= sigma_min < sigma_max <= {hi:.6g}, the sigmas of this model's "
                "t = 0 and t = T-1; leave them None for EDM's (0.002, 80) within that range.")
        return sigma_min, sigma_max

    def _check_steps(self) -> None:
        counts = range(self.step_range[0], self.step_range[1] + 1) if self.step_range \
            else [self.num_steps]
        if self.step_range and (self.step_range[0] > self.step_range[1]):
            raise ValueError(f"step_range={self.step_range} must be (low, high) with low <= high.")
        least = 3 if self.afs else 2
        for n in counts:
            if n < least:
                raise ValueError(
                    f"num_steps={n} leaves no network step" + (" after AFS" if self.afs else "")
                    + f": num_steps counts timestamps, use >= {least} ({least} = 1 NFE).")
        if self.M < 0:
            raise ValueError(f"M={self.M} must be >= 0 (teacher steps inserted per interval).")

    # -- grids and networks ----------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        return self._num_classes

    def sigmas(self, num_steps: int) -> Tensor:
        """The step schedule's ``num_steps`` sigmas, sigma_max to sigma_min."""
        return sampling_sigmas(num_steps, self.sigma_min, self.sigma_max, self.schedule_type,
                               self.schedule_rho, self.noise_schedule)

    def teacher_points(self, num_steps: int, M: int | None = None) -> tuple[int, int]:
        """(timestamps of the teacher's grid, stride between student points)."""
        M = self.M if M is None else M
        return (M + 1) * (num_steps - 1) + 1, M + 1

    def denoise(self, unet, x: Tensor, sigma, labels: Tensor | None,
                step_condition: int | None) -> Tensor:
        """D(x; sigma) of ``unet`` (x in sigma-space)."""
        if step_condition is not None:
            text = isinstance(labels, dict)
            rows = step_labels(None if text else labels, step_condition,
                               self.step_condition_size, x.shape[0], x.device)
            labels = dict(labels, class_labels=rows) if text else rows
        t = self.noise_schedule.timestep(sigma).float()
        out = self.unet_forward(unet, model_input(x, sigma), t, labels)
        return denoised(out, x, sigma, self.prediction_type)

    def _condition(self, num_steps: int) -> int | None:
        return num_steps if self.use_step_condition else None

    def teacher_step_condition(self, points: int) -> int | None:
        """The teacher's step-count condition: none, it is the plain teacher."""
        return None

    @torch.no_grad()
    def teacher_targets(self, noise: Tensor, labels, num_steps: int, M: int) -> Tensor:
        """The teacher's states at the student's timestamps 1..num_steps-1."""
        points, stride = self.teacher_points(num_steps, M)
        sig = self.sigmas(points)
        condition = self.teacher_step_condition(points)

        def teacher(x, sigma):
            return self.denoise(self.teacher_unet, x, sigma, labels, condition)
        trajectory = solve(teacher, noise * sig[0].to(noise.dtype), sig, afs=self.teacher_afs,
                           **self.solver)
        return trajectory[stride::stride]

    def student_step(self, x: Tensor, i: int, sig: Tensor, labels, num_steps: int) -> Tensor:
        """One student interval, sigma_i -> sigma_{i+1} (AFS on the first)."""
        if self.afs and i == 0:
            return afs_step(x, sig[0], sig[1])
        x0 = self.denoise(self.unet, x, sig[i], labels, self._condition(num_steps))
        return euler_step(x, x0, sig[i], sig[i + 1])

    @torch.no_grad()
    def student_sample(self, noise: Tensor, labels=None, num_steps: int | None = None) -> Tensor:
        """The training-time sampler: the student's steps from noise to sigma_min."""
        num_steps = num_steps or self.num_steps
        sig = self.sigmas(num_steps)
        x = noise * sig[0].to(noise.dtype)
        for i in range(num_steps - 1):
            x = self.student_step(x, i, sig, labels, num_steps)
        return x

    def draw_num_steps(self) -> tuple[int, int]:
        """(num_steps, M) of this iteration: fixed, or SFD-v's uniform draw."""
        if self.step_range is None:
            return self.num_steps, self.M
        gen = torch.Generator().manual_seed(self.step_seed * 1_000_003 + int(self.iteration))
        n = int(torch.randint(self.step_range[0], self.step_range[1] + 1, (), generator=gen))
        return n, (2 if n == 3 else self.M)

    # -- training --------------------------------------------------------------
    def step_loss(self, x: Tensor, target: Tensor, last: bool) -> Tensor:
        """L1 summed over pixels, mean over the batch (``last``: the final
        student step, which the second stage weighs differently)."""
        return (x - target).abs().flatten(1).sum(1).mean()

    def train_step(self, data, optim_wrapper) -> dict:
        data = self.data_preprocessor(data, True)
        noise = data["inputs"]
        labels = self.check_batch(noise, data["data_samples"])
        if not self._batch_checked:
            self.check_global_batch(noise.shape[0])
        num_steps, M = self.draw_num_steps()
        with optim_wrapper.optim_context(self):  # the teacher in bf16 too under --amp
            targets = self.teacher_targets(noise, labels, num_steps, M)
        sig = self.sigmas(num_steps)
        x = noise * sig[0].to(noise.dtype)
        losses = []
        for i in range(num_steps - 1):
            if self.afs and i == 0:  # analytical: no network call, nothing to learn
                x = self.student_step(x, i, sig, labels, num_steps)
                continue
            with optim_wrapper.optim_context(self):
                x_next = self.student_step(x, i, sig, labels, num_steps)
                loss = self.step_loss(x_next, targets[i], last=i == num_steps - 2)
            optim_wrapper.backward(loss)
            self.clean_gradients(optim_wrapper)
            optim_wrapper.step()
            optim_wrapper.zero_grad()
            losses.append(loss.detach())
            if getattr(optim_wrapper, "last_update_skipped", False):
                break  # a non-finite state poisons the rest of this trajectory
            x = x_next.detach()
        self.iteration += 1
        return dict(loss=torch.stack(losses).mean(), updates=torch.tensor(float(len(losses))),
                    nfe=torch.tensor(float(self.nfe(num_steps))))

    def check_global_batch(self, per_process: int) -> None:
        world = get_world_size()
        total = world * per_process
        print_log(f"SFD: {world} process(es) x {per_process} trajectories = global batch "
                  f"{total} per iteration.", logger="current")
        if self.global_batch is not None and total != self.global_batch:
            raise ValueError(
                f"This config counts total_kimg in global batches of {self.global_batch}, but "
                f"{world} process(es) x train_dataloader.batch_size={per_process} = {total}: "
                f"set train_dataloader.batch_size={self.global_batch // world} (or "
                f"model.global_batch={total} to train on {total} trajectories per iteration).")
        self._batch_checked = True

    def clean_gradients(self, optim_wrapper) -> None:
        """sfd-main's nan_to_num of the gradients (a bad batch must not poison
        Adam). sfd-main has no loss scaler; under --amp the gradients are
        still scaled here, and clamping an overflow to 1e5 would hide it from
        the GradScaler, which then neither skips the step nor lowers its
        scale: leave non-finite gradients to the scaler, which does both."""
        scaler = getattr(optim_wrapper, "loss_scaler", None)
        if scaler is not None and scaler.is_enabled():
            return
        for p in self.unet.parameters():
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)

    def forward(self, inputs: Tensor, data_samples: dict | None = None, mode: str = "loss"):
        raise NotImplementedError("SFD updates inside train_step (one optimizer step per "
                                  "student step); call train_step.")

    # -- export ------------------------------------------------------------------
    @property
    def default_steps(self) -> int:
        return self.nfe(self.num_steps)

    @property
    def folds_step_condition(self) -> bool:
        """Text-to-image SFD-v: pipelines pass no class labels, so exports and
        grids fold the step count's row into the UNet (``folded_step_condition``)."""
        return self.use_step_condition and self.text_conditioned

    def sample(self, seeds, num_inference_steps: int, **kwargs) -> Tensor:
        if not self.folds_step_condition:
            return super().sample(seeds, num_inference_steps, **kwargs)
        with folded_step_condition(self.bare_unet, timestamps(num_inference_steps, self.afs)):
            return super().sample(seeds, num_inference_steps, **kwargs)

    def save_export(self, folder: str, unet=None) -> None:
        """Text-to-image SFD-v: the pipeline at ``default_steps`` plus one stock
        UNet per other NFE of the step range in ``unet_nfe<k>/`` (load it as
        ``pipe.unet`` and sample with ``num_inference_steps=k``)."""
        if not self.folds_step_condition:
            return super().save_export(folder, unet)
        unet = self.bare_unet if unet is None else unet
        with folded_step_condition(unet, self.num_steps):
            super().save_export(folder, unet)
        for num_steps in range(self.step_range[0], self.step_range[1] + 1):
            if num_steps != self.num_steps:
                with folded_step_condition(unet, num_steps):
                    unet.save_pretrained(osp.join(folder, f"unet_nfe{self.nfe(num_steps)}"))

    def nfe(self, num_steps: int) -> int:
        return nfe(num_steps, self.afs)

    def export_scheduler(self):
        from diffengine_distill.schedulers import SFDScheduler
        return build_scheduler(dict(
            type=SFDScheduler, prediction_type=self.prediction_type,
            sigma_min=self.sigma_min, sigma_max=self.sigma_max,
            schedule_type=self.schedule_type, schedule_rho=self.schedule_rho,
            afs=self.afs, num_steps=self.num_steps,
            step_range=list(self.step_range) if self.step_range else None,
            step_condition_size=None if self.folds_step_condition else self.step_condition_size,
            num_classes=self._num_classes),
            base_config=self.scheduler.config)

