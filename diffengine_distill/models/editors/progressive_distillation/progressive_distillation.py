"""Progressive distillation (Salimans & Ho, ICLR 2022) of a diffusers UNet."""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from diffengine_distill.registry import MODELS

from ....diffusion import check_prediction_type, ddim_step, prediction_target, split_prediction
from ...losses import OWN_MSE_WEIGHTING
from ..base import BaseDiffusionModel
from ..lora import AdapterTeacher
from ..sample_rng import batch_rng
from .guidance_embedding import add_guidance_embedding, guidance_scale_embedding
from .pd_target import pd_target, student_grid


@MODELS.register_module()
class ProgressiveDistillation(BaseDiffusionModel):
    """Student with N steps distilled from a frozen teacher with 2N steps.

    ``unet``/``scheduler`` describe the teacher (typically an export:
    ``dict(type="pretrained", path=...)``); the student starts as a copy of
    it. The stage (and so N and the teacher's weights) is switched by
    ``ProgressiveDistillationHook``; both live in the state dict, so a resumed
    run continues mid-stage with the right teacher.

    Classifier-free guidance (text or class-conditional teachers) follows
    Meng et al. (CVPR 2023): a stage 0 first teaches the student the guided
    teacher's output at every t (same step count, one UNet call instead of
    two), then the halving stages distil that guided student. A fixed
    ``guidance_scale`` w is baked in (sample the exports with
    guidance_scale=1); a range (lo, hi) draws w per sample and gives a text
    student a guidance-scale embedding, so the exports sample any w in the
    range with ``pipe(..., guidance_scale=w)`` in one UNet call per step.

    LoRA students (``lora_config``) keep their teacher as a second, frozen
    adapter ("teacher") on the same UNet: zero (the base model) in the first
    stage, the previous student's adapter after each stage.

    Args:
        teacher_steps: sampling steps of the initial teacher (2N of stage 1).
        student_prediction_type: the student's parameterisation; None (default)
            keeps the teacher's, so the student starts exactly as the teacher.
            Another type (e.g. ``v_prediction`` for an ``epsilon`` teacher, as
            the paper's v students) adds a conversion stage 0 that teaches the
            student the teacher's own output in its parameterisation at every t
            (the copied eps weights read as v would not be the teacher).
            ``epsilon`` students need alpha_{T-1} > 0 and amplify their error
            by 1/alpha_{T-1} at the first step of 1-2 step samplers.
        loss: ``DiffusionLoss``; ``truncated_snr`` is the paper's max(x-MSE,
            eps-MSE), ``snr_plus_one`` the v-MSE.
        guidance_scale: CFG scale w of the first teacher (1: none), or a
            range (lo, hi) for a w-conditioned student.
        guidance_embedding_dim: size of that w embedding (diffusers' LCM: 256).
        null_class: the class-conditional teacher's null label (default: the last).
        stage0_clip_x0: clip the teacher's x0_hat to [-c, c] in stage 0's targets
            (pixel teachers: 1, the data range; None for latents). An eps
            teacher's x0_hat = (z - sigma eps_hat) / alpha carries its error
            times 1/alpha at high t (156x at t = T-1 of 1000 linear betas):
            unclipped, those targets dominate the stage's loss, while a DDIM
            trajectory hardly depends on them (a step weights x0_hat by
            alpha_s - sigma_s alpha_t / sigma_t, ~5e-4 there at 128 steps).
        conversion_loss: the loss of a stage 0 that converts the
            parameterisation. Default: the teacher's own training MSE (eps
            teacher: the eps-MSE, weighting ``snr``), which weights each t as
            the teacher was fitted. Under ``truncated_snr`` an eps teacher's x0
            errors at high t (times sigma / alpha) dominate the stage.
    """

    exact_grid = True

    def __init__(self, *args, teacher_steps: int, student_prediction_type: str | None = None,
                 loss: dict | None = None, noise_seed: int = 0,
                 guidance_scale: float | tuple[float, float] = 1.0,
                 guidance_embedding_dim: int = 256, null_class: int | None = None,
                 stage0_clip_x0: float | None = None, conversion_loss: dict | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        T = self.noise_schedule.num_train_timesteps
        if teacher_steps < 2 or teacher_steps % 2:
            raise ValueError(f"teacher_steps={teacher_steps} cannot be halved: use an "
                             "even number (a power of two to reach 1 step).")
        if teacher_steps > T:
            raise ValueError(f"teacher_steps={teacher_steps} exceeds the scheduler's "
                             f"{T} training steps.")
        self.first_teacher_type = self.prediction_type
        student_type = check_prediction_type(student_prediction_type or self.prediction_type)
        alpha_last = float(self.noise_schedule.alpha_sigma(T - 1)[0])
        if student_type == "epsilon" and alpha_last < 1e-3:
            # x0 = (z - sigma eps) / alpha: eps errors grow by 1 / alpha at t = T-1.
            raise ValueError(f"An epsilon student cannot give x0 at t = T-1 on this noise schedule "
                             f"(alpha_T-1 = {alpha_last:.1e}): set model.student_prediction_"
                             "type='v_prediction' (the paper's; adds a conversion stage 0).")
        self.prediction_type = student_type
        self.noise_seed = int(noise_seed)
        if stage0_clip_x0 is not None and not stage0_clip_x0 > 0:
            raise ValueError(f"stage0_clip_x0={stage0_clip_x0} must be a positive data range "
                             "(1 for pixels in [-1, 1]) or None.")
        self.stage0_clip_x0 = stage0_clip_x0
        self.guidance_range = self._check_guidance(guidance_scale)
        self.null_class = self.null_class_label(null_class)
        guided = self.guidance_range != (1.0, 1.0)
        teacher_embeds_w = getattr(self.bare_unet.config, "time_cond_proj_dim", None) is not None
        # Stage 0 (at the teacher's step count): Meng et al.'s guided teacher ->
        # one-call student unless the teacher already is such a student, and/or
        # the teacher's output -> the student's parameterisation.
        converts = student_type != self.first_teacher_type
        self.first_stage = 0 if (guided and not teacher_embeds_w) or converts else 1
        if self.guidance_embedded:
            add_guidance_embedding(self.bare_unet, guidance_embedding_dim)
            self.guidance_embedding_dim = self.bare_unet.config.time_cond_proj_dim
        if self.lora_config is None:
            self.teacher_unet = copy.deepcopy(self.unet).eval().requires_grad_(False)
        else:  # a second adapter, zero (lora_B = 0: exactly the base model) at first
            self.bare_unet.add_adapter(copy.deepcopy(self.lora_config), adapter_name="teacher")
            self.bare_unet.set_adapter("default")
            with torch.no_grad():
                for name, p in self.bare_unet.named_parameters():
                    if ".teacher." in name and "lora_B" in name:
                        p.zero_()
            self.teacher_unet = AdapterTeacher(self, "teacher")
        self.loss = MODELS.build(loss or dict(type="DiffusionLoss", weighting="truncated_snr"))
        if conversion_loss is not None and not converts:
            raise ValueError(f"conversion_loss is the loss of a stage 0 that converts the "
                             f"teacher's {self.first_teacher_type} output into another "
                             "parameterisation; this student keeps it: remove it.")
        self.conversion_loss = MODELS.build(conversion_loss or dict(
            type="DiffusionLoss", weighting=OWN_MSE_WEIGHTING[self.first_teacher_type])) \
            if converts else None
        # Persistent so that checkpoints carry the stage.
        self.register_buffer("stage", torch.tensor(self.first_stage))
        self.register_buffer("student_steps",
                             torch.tensor(teacher_steps // 2 ** self.first_stage))

    def _check_guidance(self, guidance_scale) -> tuple[float, float]:
        lo, hi = (guidance_scale, guidance_scale) if isinstance(guidance_scale, (int, float)) \
            else tuple(guidance_scale)
        if not 1 <= lo <= hi:
            raise ValueError(f"guidance_scale={guidance_scale} must be a CFG scale >= 1 or a "
                             "range (lo, hi) with 1 <= lo <= hi.")
        self.check_guidance_scale(hi, "model.guidance_scale")
        if lo != hi and self.lora_config is not None:
            raise ValueError(
                f"guidance_scale={tuple(guidance_scale)} gives the student a guidance-scale "
                "embedding (time_embedding.cond_proj), which a LoRA export cannot carry: "
                "distil the full UNet (remove model.lora_config) or bake in one fixed "
                "guidance_scale.")
        return float(lo), float(hi)

    @property
    def guidance_embedded(self) -> bool:
        return self.guidance_range[0] != self.guidance_range[1]

    def export_metadata(self) -> dict:
        """How to sample the export: a baked-in w needs no further guidance."""
        lo, hi = self.guidance_range
        if self.guidance_embedded:
            return dict(guidance_scale_range=[lo, hi])
        return dict(guidance_scale=1.0, distilled_guidance_scale=lo) if lo != 1 else {}

    def sample(self, *args, guidance_scale: float | None = None, **kwargs):
        if guidance_scale is None and not self.guidance_embedded and self.text_conditioned:
            guidance_scale = 1.0  # baked in (or none): the pipeline must not add CFG
        return super().sample(*args, guidance_scale=guidance_scale, **kwargs)

    @property
    def teacher_type(self) -> str:
        """After the first stage the teacher is a student: its prediction type."""
        return self.first_teacher_type if int(self.stage) == self.first_stage \
            else self.prediction_type

    @property
    def default_steps(self) -> int:
        return int(self.student_steps)

    def next_stage(self) -> None:
        """The student becomes the teacher and N halves."""
        if int(self.student_steps) == 1:
            raise RuntimeError("Already distilled to 1 step; no further stage.")
        if self.lora_config is None:
            # A sharded student (FullyShardStrategy) holds DTensors: gather them
            # whole (every process calls next_stage) for the unsharded teacher.
            self.teacher_unet.load_state_dict({
                k: v.full_tensor() if hasattr(v, "full_tensor") else v
                for k, v in self.unet.state_dict().items()})
        else:
            params = dict(self.bare_unet.named_parameters())
            with torch.no_grad():
                for name, p in params.items():
                    if ".default." in name:
                        params[name.replace(".default.", ".teacher.")].copy_(p)
        self.stage += 1
        self.student_steps //= 2

    def forward(self, inputs: Tensor, data_samples: dict | None = None, mode: str = "loss"):
        if mode != "loss":
            raise ValueError("ProgressiveDistillation.forward supports mode='loss'.")
        labels = self.check_batch(inputs, data_samples)
        x0 = inputs.float()
        rng = batch_rng(data_samples, x0.shape[0], self.noise_seed, x0.device)
        T, n = self.noise_schedule.num_train_timesteps, int(self.student_steps)
        if int(self.stage) == 0:  # any t: the student must work for every sampler
            t = rng.randint(0, T).double()
        else:
            t, t_mid, s = student_grid(T, n, rng.randint(1, n + 1))
        alpha, sigma = (c.float() for c in self.noise_schedule.alpha_sigma(t))
        z_t = ddim_step(x0, rng.randn(*x0.shape[1:]).to(x0), alpha, sigma)

        lo, hi = self.guidance_range
        w, student_cond = lo, labels
        if self.guidance_embedded:  # w ~ U[lo, hi] per sample
            w = (lo + (hi - lo) * rng.rand()).float()
            student_cond = dict(labels, timestep_cond=guidance_scale_embedding(
                w, self.guidance_embedding_dim).to(x0.device))

        def teacher(z, time):
            z = z.to(x0.dtype)
            if int(self.stage) == 0:
                return self.guided_forward(self.teacher_unet, z, time.float(), labels, w,
                                           self.null_class)
            return self.unet_forward(self.teacher_unet, z, time.float(), student_cond)

        with torch.no_grad():
            if int(self.stage) == 0:
                a_t, s_t = self.noise_schedule.alpha_sigma(t)
                x_target, eps_target = split_prediction(
                    teacher(z_t, t).double(), z_t.double(), a_t, s_t, self.teacher_type)
                if self.stage0_clip_x0 is not None:  # eps follows the clipped x0
                    c = self.stage0_clip_x0
                    x_target, eps_target = split_prediction(
                        x_target.clamp(-c, c), z_t.double(), a_t, s_t, "sample")
            else:
                x_target, eps_target = pd_target(teacher, self.teacher_type, self.noise_schedule,
                                                 z_t, t, t_mid, s)
        target = prediction_target(x_target.float(), eps_target.float(), alpha, sigma,
                                   self.prediction_type)
        pred = self.unet_forward(self.unet, z_t, t.float(), student_cond)
        converting = int(self.stage) == 0 and self.conversion_loss is not None
        loss_fn = self.conversion_loss if converting else self.loss
        loss = loss_fn(pred, target, self.noise_schedule.snr(t), self.prediction_type)
        return dict(loss=loss)
