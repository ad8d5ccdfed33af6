"""Progressive distillation (Salimans & Ho, ICLR 2022) of a diffusers UNet."""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from diffengine_distill.registry import MODELS

from ...diffusion import check_prediction_type, ddim_step, prediction_target
from ..base import BaseDiffusionModel
from ..sample_rng import batch_rng
from .pd_target import pd_target, student_grid


@MODELS.register_module()
class ProgressiveDistillation(BaseDiffusionModel):
    """Student with N steps distilled from a frozen teacher with 2N steps.

    ``unet``/``scheduler`` describe the teacher (typically an export:
    ``dict(type="pretrained", path=...)``); the student starts as a copy of
    it. The stage (and so N and the teacher's weights) is switched by
    ``ProgressiveDistillationHook``; both live in the state dict, so a resumed
    run continues mid-stage with the right teacher.

    Args:
        teacher_steps: sampling steps of the initial teacher (2N of stage 1).
        student_prediction_type: the student's parameterisation, ``v_prediction``
            (default) or ``sample``; an ``epsilon`` teacher is read through the
            shared conversion helper. eps students are unstable at few steps.
        loss: ``DiffusionLoss``; ``truncated_snr`` is the paper's max(x-MSE,
            eps-MSE), ``snr_plus_one`` the v-MSE.
    """

    exact_grid = True

    def __init__(self, *args, teacher_steps: int, student_prediction_type: str = "v_prediction",
                 loss: dict | None = None, noise_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        T = self.schedule.num_train_timesteps
        if teacher_steps < 2 or teacher_steps % 2:
            raise ValueError(f"teacher_steps={teacher_steps} cannot be halved: use an "
                             "even number (a power of two to reach 1 step).")
        if teacher_steps > T:
            raise ValueError(f"teacher_steps={teacher_steps} exceeds the scheduler's "
                             f"{T} training steps.")
        if check_prediction_type(student_prediction_type) == "epsilon":
            raise ValueError("An epsilon student cannot produce x0 at the last step "
                             "(sigma -> 0 is fine, but alpha -> 0 is not); use "
                             "'v_prediction' or 'sample' as in the paper.")
        self.teacher_type = self.prediction_type
        self.prediction_type = student_prediction_type
        if self.lora_config is not None:
            raise ValueError("LoRA students are not supported by progressive distillation "
                             "yet (each stage's teacher is the previous student): distil the "
                             "full UNet (remove model.lora_config).")
        self.noise_seed = int(noise_seed)
        self.teacher_unet = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.loss = MODELS.build(loss or dict(type="DiffusionLoss", weighting="truncated_snr"))
        # Persistent so that checkpoints carry the stage.
        self.register_buffer("stage", torch.tensor(1))
        self.register_buffer("student_steps", torch.tensor(teacher_steps // 2))

    @property
    def default_steps(self) -> int:
        return int(self.student_steps)

    def next_stage(self) -> None:
        """The student becomes the teacher and N halves."""
        if int(self.student_steps) == 1:
            raise RuntimeError("Already distilled to 1 step; no further stage.")
        self.teacher_unet.load_state_dict(self.unet.state_dict())
        self.stage += 1
        self.student_steps //= 2

    def forward(self, inputs: Tensor, data_samples: dict | None = None, mode: str = "loss"):
        if mode != "loss":
            raise ValueError("ProgressiveDistillation.forward supports mode='loss'.")
        labels = self.check_batch(inputs, data_samples)
        x0 = inputs.float()
        n = int(self.student_steps)
        rng = batch_rng(data_samples, x0.shape[0], self.noise_seed, x0.device)
        index = rng.randint(1, n + 1)
        t, t_mid, s = student_grid(self.schedule.num_train_timesteps, n, index)
        alpha, sigma = (c.float() for c in self.schedule.alpha_sigma(t))
        z_t = ddim_step(x0, rng.randn(*x0.shape[1:]).to(x0), alpha, sigma)

        def teacher(z, time):
            return self.unet_forward(self.teacher_unet, z.to(x0.dtype), time.float(), labels)

        x_target, eps_target = pd_target(teacher, self.teacher_type, self.schedule,
                                         z_t, t, t_mid, s)
        target = prediction_target(x_target.float(), eps_target.float(), alpha, sigma,
                                   self.prediction_type)
        pred = self.unet_forward(self.unet, z_t, t.float(), labels)
        loss = self.loss(pred, target, self.schedule.snr(t), self.prediction_type)
        return dict(loss=loss)
