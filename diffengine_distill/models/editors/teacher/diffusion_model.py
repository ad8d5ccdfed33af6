"""Train a diffusers UNet as a diffusion model (the teachers of every method)."""
from __future__ import annotations

import torch
from torch import Tensor

from diffengine_distill.registry import MODELS

from ....diffusion import ddim_step, prediction_target
from ..base import BaseDiffusionModel
from ..lora import add_lora
from .diffengine_compat import translate_loss
from ..sample_rng import batch_rng


@MODELS.register_module()
class DiffusionModel(BaseDiffusionModel):
    """DDPM-style training with eps / v / x0 targets.

    Args:
        loss: a ``DiffusionLoss`` config (weighting of the MSE).
        continuous_time: draw fractional t in [0, T-1] instead of integers, so
            the model is also accurate on the fractional grids of progressive
            distillation; integer-t sampling is unchanged.
        class_dropout_prob: with a class-conditional UNet, replace the label by
            the null class ``num_class_embeds - 1`` with this probability
            (classifier-free guidance); 0 disables it.
        noise_seed: seeds the per-sample draws (noise, t, label dropout) of
            batches that carry dataset indices (see ``sample_rng``).
        text_encoder_lora_config: LoRA options (as ``lora_config``) for the
            text encoder(s), trained with the UNet's adapters; exports carry
            them (PEFT folders and ``pytorch_lora_weights.safetensors``).
        finetune_text_encoder: diffengine's switch; only with
            ``text_encoder_lora_config`` (full text-encoder training is not
            supported).
        Other arguments: see ``BaseDiffusionModel``.
    """

    def __init__(self, *args, loss: dict | None = None, continuous_time: bool = False,
                 class_dropout_prob: float = 0.0, noise_seed: int = 0,
                 text_encoder_lora_config: dict | None = None,
                 finetune_text_encoder: bool | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_text_encoder_lora(text_encoder_lora_config, finetune_text_encoder)
        self.loss = MODELS.build(translate_loss(loss) or dict(type="DiffusionLoss"))
        self.continuous_time = continuous_time
        if class_dropout_prob and self.num_classes is None:
            raise ValueError("class_dropout_prob needs a class-conditional UNet.")
        self.class_dropout_prob = class_dropout_prob
        self.noise_seed = int(noise_seed)

    def add_text_encoder_lora(self, options: dict | None, finetune: bool | None) -> None:
        self.text_encoder_lora_config = None
        if finetune and not options:
            raise ValueError("model.finetune_text_encoder=True trains the text encoders in "
                             "full, which is not supported: set model.text_encoder_lora_config="
                             "dict(type='LoRA', r=8, lora_alpha=8, target_modules=['q_proj', "
                             "'k_proj', 'v_proj', 'out_proj']).")
        if not options:
            return
        if finetune is False:
            raise ValueError("model.text_encoder_lora_config is set but "
                             "model.finetune_text_encoder=False: remove one of them.")
        if not self.text_conditioned:
            raise ValueError("model.text_encoder_lora_config needs a text-to-image model "
                             "(StableDiffusionDataPreprocessor).")
        if self.lora_config is None:
            raise ValueError("model.text_encoder_lora_config needs model.lora_config (LoRA "
                             "on the UNet): exports of a fully trained UNet carry no "
                             "text-encoder adapters.")
        self.text_encoder_lora_config = [
            add_lora(encoder, options, "text_encoder_lora_config")
            for encoder in self.data_preprocessor.text_encoders]
        # Trained weights in fp32 also beside bf16 / fp16 frozen encoders.
        for name, param in self.data_preprocessor.text_encoders.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()

    def export_metadata(self) -> dict:
        # The label trained as "no class": CFG and tools/make_pairs.py need it.
        return dict(null_class=self.num_classes - 1) if self.class_dropout_prob else {}

    def sample_timesteps(self, rng) -> Tensor:
        T = self.noise_schedule.num_train_timesteps
        if self.continuous_time:
            return rng.rand() * (T - 1)
        return rng.randint(0, T)

    def forward(self, inputs: Tensor, data_samples: dict | None = None,
                mode: str = "loss"):
        if mode != "loss":
            raise ValueError(f"{type(self).__name__}.forward supports mode='loss'; "
                             "use sample() or val_step() to generate.")
        labels = self.check_batch(inputs, data_samples)
        x0 = inputs.float()
        rng = batch_rng(data_samples, x0.shape[0], self.noise_seed, x0.device)
        if isinstance(labels, Tensor) and self.class_dropout_prob > 0:
            drop = rng.rand() < self.class_dropout_prob
            labels = labels.masked_fill(drop, self.num_classes - 1)
        t = self.sample_timesteps(rng)
        noise = rng.randn(*x0.shape[1:]).to(x0)
        alpha, sigma = (c.float() for c in self.noise_schedule.alpha_sigma(t))
        z = ddim_step(x0, noise, alpha, sigma)  # forward diffusion is a DDIM step
        t_in = t.float() if self.continuous_time else t
        pred = self.unet_forward(self.unet, z, t_in, labels)
        target = prediction_target(x0, noise, alpha, sigma, self.prediction_type)
        loss = self.loss(pred, target, self.noise_schedule.snr(t), self.prediction_type)
        return dict(loss=loss)


class _DiffengineEditor(DiffusionModel):
    """diffengine's model types: a ``DiffusionModel`` whose base model (its
    ``model=`` key) defaults to diffengine's."""

    default_base_model: str = ""

    def __init__(self, *args, model: str | None = None, base_model: str | None = None,
                 **kwargs):
        if model is None and base_model is None:
            model = self.default_base_model
        super().__init__(*args, model=model, base_model=base_model, **kwargs)


@MODELS.register_module()
class StableDiffusion(_DiffengineEditor):
    # diffengine's runwayml/stable-diffusion-v1-5 was removed from the hub.
    default_base_model = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@MODELS.register_module()
class StableDiffusionXL(_DiffengineEditor):
    default_base_model = "stabilityai/stable-diffusion-xl-base-1.0"
