"""What every method shares: a UNet, its noise schedule, sampling, export."""
from __future__ import annotations

import contextlib
import copy

import torch
from diffusers import DDIMPipeline
from mmengine.model import BaseModel, is_model_wrapper
from torch import Tensor, nn

from diffengine_distill.pipelines import SamplerPipeline
from diffengine_distill.registry import MODELS

from ..builders import build_scheduler, build_unet
from .attention import set_attention
from .base_model import config_from_base, preprocessor_from_base
from .compile import compile_options, compile_unets
from .conditioning import cat_conditions, unet_kwargs
from .lora import AdapterTeacher, add_lora, save_peft_folder
from .state_dict_hooks import (add_wrapper_keys, drop_frozen_unet, drop_wrapper_keys,
                               ignore_missing_frozen_unet)
from ...diffusion import NoiseSchedule, check_prediction_type, per_sample

# The exported sampler: DDIM whose last step returns x0_hat (alpha_bar = 1)
# and whose N-step grid starts at T-1 (trailing), pinned in every export
# because diffusers' defaults differ between schedulers.
DEFAULT_SAMPLER = dict(type="DDIMScheduler", timestep_spacing="trailing",
                       set_alpha_to_one=True, clip_sample=False, steps_offset=0)


class BaseDiffusionModel(BaseModel):
    """A diffusers UNet + scheduler pair that knows how to sample and export.

    Subclasses trained for one step count (distilled students) set
    ``exact_grid``: their export then samples the trailing grid i T / N - 1
    exactly, also when N does not divide T.

    Args:
        base_model: the base model / teacher, a hub id or a local diffusers
            folder: the UNet, the scheduler's noise schedule and (text-to-image
            folders) the VAE and text encoders load from it unless ``unet``,
            ``scheduler`` or ``data_preprocessor`` give their own ``path`` /
            ``model``. ``--cfg-options model.base_model=...`` changes them all.
        unet: UNet config (see ``models.builders``) or module; default
            ``dict(type="pretrained", path=base_model, subfolder="unet")``.
        scheduler: diffusers scheduler config defining the noise schedule;
            default the base model's, as a DDPMScheduler.
        prediction_type: overrides the scheduler's (epsilon | v_prediction |
            sample); it is written into every export.
        sampler: DDIM options of the in-training sampler and of the export.
        data_preprocessor: defaults to ``DiffusionDataPreprocessor``;
            ``StableDiffusionDataPreprocessor`` for latent text-to-image models.
        lora_config: PEFT ``LoraConfig`` options: train LoRA adapters on the
            frozen UNet instead of the UNet itself.
        gradient_checkpointing: diffusers' activation checkpointing of the
            trained UNet (memory for compute).
        attention: ``sdpa`` (default), ``xformers`` or ``eager`` kernels.
        compile: ``True`` or torch.compile options (``dict(mode=
            "reduce-overhead")``: CUDA graphs): every UNet of the model is
            compiled once the Runner has built it (``editors/compile.py``).
        **diffengine_keys: diffengine's ``model``, ``vae_model``,
            ``unet_lora_config``, ``enable_xformers`` (see
            docs/diffengine_compat.md); its other keys fail with the key to use.
    """

    exact_grid = False

    def __init__(self, unet=None, scheduler: dict | None = None,
                 prediction_type: str | None = None, sampler: dict | None = None,
                 data_preprocessor: dict | None = None, lora_config: dict | None = None,
                 gradient_checkpointing: bool = False, attention: str = "sdpa",
                 init_cfg: dict | None = None, base_model: str | None = None,
                 compile: bool | dict = False, **diffengine_keys):
        from .teacher.diffengine_compat import translate_keys
        base_model, lora_config, data_preprocessor, attention = translate_keys(
            type(self).__name__, diffengine_keys, base_model, lora_config,
            data_preprocessor, attention)
        unet = config_from_base(unet, base_model, dict(type="pretrained", subfolder="unet"), "unet")
        scheduler = config_from_base(scheduler, base_model,
                               dict(type="pretrained", class_name="DDPMScheduler"),
                               "scheduler")
        data_preprocessor = preprocessor_from_base(data_preprocessor, base_model)
        # Built from our registry so the model also builds outside a Runner.
        if not isinstance(data_preprocessor, nn.Module):
            data_preprocessor = MODELS.build(
                data_preprocessor or dict(type="DiffusionDataPreprocessor"))
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.base_model = base_model
        self.unet = build_unet(unet)
        if hasattr(self.data_preprocessor, "check_unet"):
            self.data_preprocessor.check_unet(self.unet)
        if gradient_checkpointing:  # recompute activations in backward: less memory
            self.unet.enable_gradient_checkpointing()
        set_attention(self.unet, attention)
        self.lora_config = None
        if lora_config:
            self.lora_config = add_lora(self.unet, lora_config)
            # The frozen base UNet reloads from its path: checkpoints keep the adapters.
            self._register_state_dict_hook(drop_frozen_unet)
            self.register_load_state_dict_post_hook(ignore_missing_frozen_unet)
        scheduler = build_scheduler(scheduler)
        if prediction_type is not None:
            scheduler = scheduler.from_config(
                scheduler.config, prediction_type=check_prediction_type(prediction_type))
        self.prediction_type = check_prediction_type(scheduler.config.prediction_type)
        self.scheduler = scheduler
        self.noise_schedule = NoiseSchedule.from_scheduler(scheduler)
        self.sampler_cfg = {**DEFAULT_SAMPLER, **(sampler or {})}
        self.compile_options = compile_options(compile)
        # Checkpoints keep the same keys whether or not DDP wraps a sub-network
        # (MMSeparateDistributedDataParallel), so runs resume across process counts.
        self._register_state_dict_hook(drop_wrapper_keys)
        self._register_load_state_dict_pre_hook(add_wrapper_keys, with_module=True)

    def compile_networks(self) -> int:
        """torch.compile every UNet (student, teachers, critic) when
        ``compile`` asks for it; called once the whole model is built."""
        if self.compile_options is None:
            return 0
        return compile_unets(self, self.compile_options)

    def frozen_teacher(self):
        """A distillation method's teacher: a frozen copy of the UNet, or for a
        LoRA student the UNet itself with its adapters disabled."""
        if self.lora_config is None:
            return copy.deepcopy(self.unet).eval().requires_grad_(False)
        return AdapterTeacher(self)

    # -- conditioning --------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        cfg = self.bare_unet.config
        if getattr(cfg, "class_embed_type", None) is None and \
                getattr(cfg, "num_class_embeds", None) is None:
            return None
        return cfg.num_class_embeds

    @property
    def text_conditioned(self) -> bool:
        return hasattr(self.data_preprocessor, "encode_text")

    def null_condition(self, cond, null_class: int | None = None):
        """The unconditional input of classifier-free guidance: the empty
        prompt (text) or the null class label."""
        if isinstance(cond, dict):
            added = cond.get("added_cond_kwargs")
            n = cond["encoder_hidden_states"].shape[0]
            return self.data_preprocessor.encode_empty(
                n, None if added is None else added["time_ids"])
        return torch.full_like(cond, null_class)

    def null_class_label(self, null_class: int | None = None) -> int | None:
        """CFG's null label of a class-conditional teacher (default: its last class)."""
        if self.num_classes is None:
            return None
        return self.num_classes - 1 if null_class is None else int(null_class)

    def check_guidance_scale(self, guidance_scale, key: str) -> None:
        """Classifier-free guidance needs a conditional teacher."""
        if guidance_scale != 1 and self.num_classes is None and not self.text_conditioned:
            raise ValueError(f"{key}={guidance_scale} needs a class-conditional teacher "
                             "with a null class or a text-to-image teacher; this teacher is "
                             f"unconditional: set {key}=1.")

    def guided_forward(self, unet, z: Tensor, t: Tensor, cond, guidance_scale,
                       null_class: int | None = None) -> Tensor:
        """Classifier-free guidance, uncond + w (cond - uncond), on the raw output
        (affine in it, so the same in eps, v and x0); ``guidance_scale`` is a
        number or one per sample."""
        if not torch.is_tensor(guidance_scale) and guidance_scale == 1:
            return self.unet_forward(unet, z, t, cond)
        t = torch.as_tensor(t, device=z.device)
        t = t.expand(z.shape[0]) if t.ndim == 0 else t
        null = self.null_condition(cond, null_class)
        out = self.unet_forward(unet, torch.cat([z, z]), torch.cat([t, t]),
                                cat_conditions([cond, null]))
        cond_out, uncond_out = out.chunk(2)
        return uncond_out + per_sample(guidance_scale, z).to(out) * (cond_out - uncond_out)

    @property
    def bare_unet(self):
        """The UNet itself, also when DDP wraps it (MMSeparateDistributedDataParallel)."""
        return self.unet.module if is_model_wrapper(self.unet) else self.unet

    def check_batch(self, inputs: Tensor, data_samples: dict | None):
        """Fail early on data the UNet cannot take; return its conditioning:
        class labels, a dict of UNet keyword arguments (text), or None."""
        channels = self.bare_unet.config.in_channels
        if inputs.shape[1] != channels:
            fix = "color_type='grayscale'" if channels == 1 else "color_type='rgb'"
            raise ValueError(
                f"The data has {inputs.shape[1]} channel(s) but the UNet takes {channels}: "
                f"load images with LoadImage({fix}) or use a UNet with "
                f"in_channels={inputs.shape[1]}.")
        if (data_samples or {}).get("cond") is not None:
            return data_samples["cond"]
        labels = (data_samples or {}).get("labels")
        if self.num_classes is None:
            return None
        if labels is None:
            raise ValueError(
                "This UNet is class-conditional (num_class_embeds="
                f"{self.num_classes}) but the data has no labels: use a labelled "
                "dataset (class sub-folders) or an unconditional UNet.")
        return labels

    def unet_forward(self, unet, z: Tensor, t: Tensor, labels) -> Tensor:
        """``labels``: class labels, a dict of keyword arguments (text), or None."""
        t = torch.as_tensor(t, device=z.device)
        kwargs = unet_kwargs(labels)
        return unet(z, t.expand(z.shape[0]) if t.ndim == 0 else t, **kwargs).sample

    # -- sampling and export -----------------------------------------------
    @property
    def default_steps(self) -> int:
        """Sampling steps of grids and exports (a student's trained number)."""
        return self.sampler_cfg.get("num_inference_steps", 50)

    def export_scheduler(self):
        """The training schedule with the sampler's options pinned.

        With ``exact_grid``, a step count that does not divide T (fractional
        trailing DDIM) needs ``GridDDIMScheduler``; elsewhere stock DDIM.
        """
        cfg = {k: v for k, v in self.sampler_cfg.items() if k != "num_inference_steps"}
        if self.exact_grid and cfg["type"] == "DDIMScheduler" and \
                self.noise_schedule.num_train_timesteps % self.default_steps:
            from diffengine_distill.schedulers import GridDDIMScheduler
            cfg = dict(cfg, type=GridDDIMScheduler)
        return build_scheduler(dict(cfg, prediction_type=self.prediction_type),
                               base_config=self.scheduler.config)

    def lora_text_encoders(self) -> dict:
        """Text encoders trained with LoRA, by the export subfolder diffengine's
        PeftSaveHook uses: ``text_encoder`` (SD) or ``text_encoder_one`` /
        ``text_encoder_two`` (SDXL); empty when the text encoders are frozen."""
        if getattr(self, "text_encoder_lora_config", None) is None:
            return {}
        encoders = list(self.data_preprocessor.text_encoders)
        names = ["text_encoder"] if len(encoders) == 1 else \
            ["text_encoder_one", "text_encoder_two"]
        return dict(zip(names, encoders))

    def save_lora(self, folder: str, unet=None) -> None:
        """LoRA students: ``folder/unet`` as a PEFT adapter (for
        ``PeftModel.from_pretrained(pipe.unet, folder/"unet")``), the same for
        LoRA-trained text encoders (``folder/text_encoder`` or
        ``text_encoder_one`` / ``text_encoder_two``), diffusers'
        ``pytorch_lora_weights.safetensors`` with every adapter's config as
        metadata (for ``pipe.load_lora_weights``: lora_alpha survives) and the
        sampler in ``folder/scheduler``. ``unet``: whose adapter ("default";
        e.g. an EMA copy's), by default this model's."""
        import os.path as osp

        from diffusers.utils import convert_state_dict_to_diffusers
        unet = self.bare_unet if unet is None else unet
        adapters = dict(unet=unet, **self.lora_text_encoders())
        states = {name: save_peft_folder(module, osp.join(folder, name))
                  for name, module in adapters.items()}
        save_lora_weights = getattr(type(self.build_pipeline()), "save_lora_weights", None)
        if save_lora_weights is not None:  # text-to-image pipelines have LoRA loaders
            # diffusers' names: text_encoder, text_encoder_2.
            prefixes = dict(unet="unet", text_encoder="text_encoder",
                            text_encoder_one="text_encoder", text_encoder_two="text_encoder_2")
            kwargs = {}
            for name, module in adapters.items():
                prefix = prefixes[name]
                kwargs[f"{prefix}_lora_layers"] = convert_state_dict_to_diffusers(states[name])
                # Without it load_lora_weights rebuilds the adapter with alpha = r.
                kwargs[f"{prefix}_lora_adapter_metadata"] = \
                    module.peft_config["default"].to_dict()
            save_lora_weights(folder, safe_serialization=True, **kwargs)
        self.export_scheduler().save_pretrained(osp.join(folder, "scheduler"))

    def save_export(self, folder: str, unet=None) -> None:
        """What an export folder holds (``unet`` in place of this model's):
        a LoRA student's adapters, else the whole pipeline."""
        if self.lora_config is not None:
            self.save_lora(folder, unet)
        else:
            pipe = self.build_pipeline(unet)
            # One dtype for the whole folder: frozen parts kept in bf16/fp16 for
            # training (data_preprocessor.dtype) are saved in the UNet's, else a
            # stock from_pretrained would mix dtypes.
            frozen = {m: m.dtype for m in pipe.components.values()
                      if isinstance(m, nn.Module) and m.dtype != pipe.unet.dtype}
            for module in frozen:
                module.to(pipe.unet.dtype)
            try:
                pipe.save_pretrained(folder, safe_serialization=True)
            finally:
                for module, dtype in frozen.items():
                    module.to(dtype)

    def export_metadata(self) -> dict:
        """Extra facts an export records in ``diffengine_distill.json``."""
        return {}

    def build_pipeline(self, unet=None):
        """The diffusers pipeline an export holds (shares this model's UNet):
        a stock DDIMPipeline where diffusers can reproduce the sampler."""
        unet = self.bare_unet if unet is None else unet
        scheduler = self.export_scheduler()
        if hasattr(self.data_preprocessor, "pipeline"):  # text-to-image
            pipe = self.data_preprocessor.pipeline(unet, scheduler)
            pipe.set_progress_bar_config(disable=True)
            return pipe
        stock = self.num_classes is None and type(scheduler).__name__ == "DDIMScheduler"
        pipe = (DDIMPipeline if stock else SamplerPipeline)(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def sample(self, seeds, num_inference_steps: int, labels=None, prompts=None,
               guidance_scale: float | None = None) -> Tensor:
        """Images in [-1, 1] through the export's own pipeline and sampler
        (``prompts`` and CFG ``guidance_scale`` for text-to-image models)."""
        from diffengine_distill.pipelines.generate import generate
        unet = self.bare_unet
        was_training = unet.training
        unet.eval()
        # Frozen text encoders / VAE kept in bf16 or fp16 (data_preprocessor.dtype)
        # beside a fp32 UNet: the pipeline mixes them, so sample under autocast
        # (training casts the conditioning to fp32 itself).
        frozen = getattr(getattr(self.data_preprocessor, "vae", None), "dtype", unet.dtype)
        mixed = torch.autocast(unet.device.type, dtype=frozen) if frozen != unet.dtype \
            else contextlib.nullcontext()
        try:
            with mixed:
                return generate(self.build_pipeline(), seeds, num_inference_steps,
                                labels=labels, prompts=prompts,
                                guidance_scale=guidance_scale, progress=False)
        finally:
            unet.train(was_training)

    def val_step(self, data) -> list[dict]:
        data = self.data_preprocessor(data, False)
        n = data["inputs"].shape[0]
        labels = data["data_samples"]["labels"]
        images = self.sample(range(n), self.default_steps,
                             labels=None if labels is None else labels.tolist())
        return [dict(pred_img=img, gt_img=gt) for img, gt in zip(images, data["inputs"])]

    test_step = val_step
