"""A DDIMPipeline that keeps its scheduler and takes class labels.

diffusers' DDIMPipeline converts any scheduler to DDIMScheduler and has no
class labels; exports of class-conditional UNets and of samplers diffusers
lacks (fractional DDIM grids, SFD's sigma-space Euler) use this instead. It
follows diffusers' scheduler protocol (``init_noise_sigma``,
``scale_model_input``, ``step``) plus two optional scheduler hooks:
``needs_model_output(i)`` (False skips the UNet, e.g. SFD's analytical first
step) and ``condition_labels`` (class labels the UNet sees, e.g. class x step
count for SFD-v).
"""
from __future__ import annotations

import functools
import inspect

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


@functools.lru_cache(maxsize=None)
def _step_options(scheduler_class) -> frozenset:
    return frozenset(inspect.signature(scheduler_class.step).parameters)


class SamplerPipeline(DiffusionPipeline):
    """``SamplerPipeline.from_pretrained(folder)(batch_size=16, num_inference_steps=4)``;
    class-conditional UNets take ``class_labels=[...]`` instead of ``batch_size``."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def num_classes(self) -> int | None:
        """Classes the caller chooses from (None: unconditional)."""
        if getattr(self.scheduler.config, "step_condition_size", None):
            return self.scheduler.config.num_classes
        return getattr(self.unet.config, "num_class_embeds", None)

    def _device_and_dtype(self) -> tuple[torch.device, torch.dtype]:
        """Where the UNet runs and its dtype, read off its first parameter:
        diffusers' ``_execution_device`` and ``unet.dtype`` walk every module,
        milliseconds per call that a 1-4 step sampler on a GPU would notice.
        Offloaded UNets (accelerate hooks, meta weights) keep diffusers' lookup."""
        param = next(self.unet.parameters())
        if hasattr(self.unet, "_hf_hook") or param.device.type == "meta":
            return self._execution_device, self.unet.dtype
        return param.device, param.dtype

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, class_labels=None, generator=None,
                 num_inference_steps: int | None = None, eta: float = 0.0,
                 use_clipped_model_output: bool | None = None,
                 output_type: str = "pil", return_dict: bool = True):
        """``num_inference_steps`` defaults to the scheduler's trained number
        (SFD: network evaluations), else 50. ``eta`` and
        ``use_clipped_model_output`` go to DDIM schedulers, as in DDIMPipeline."""
        device, dtype = self._device_and_dtype()
        if self.num_classes is not None and class_labels is None:
            raise ValueError("This UNet is class-conditional: pass class_labels=[...].")
        if class_labels is not None:
            class_labels = torch.as_tensor(class_labels, device=device).long().flatten()
            batch_size = len(class_labels)
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (batch_size, self.unet.config.in_channels, *size)
        image = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if num_inference_steps is None and not hasattr(self.scheduler, "needs_model_output"):
            num_inference_steps = 50
        self.scheduler.set_timesteps(num_inference_steps)
        image = image * self.scheduler.init_noise_sigma
        labels = class_labels
        if hasattr(self.scheduler, "condition_labels"):
            labels = self.scheduler.condition_labels(class_labels, batch_size, device)
        kwargs = {} if labels is None else dict(class_labels=labels)
        options = _step_options(type(self.scheduler))
        extra = {"eta": eta} if "eta" in options else {}
        if use_clipped_model_output is not None and "use_clipped_model_output" in options:
            extra["use_clipped_model_output"] = use_clipped_model_output
        needs_model = getattr(self.scheduler, "needs_model_output", lambda i: True)
        timesteps = self.scheduler.timesteps
        if not getattr(self, "_progress_bar_config", {}).get("disable", False):
            timesteps = self.progress_bar(timesteps)
        for i, t in enumerate(timesteps):
            out = None
            if needs_model(i):
                out = self.unet(self.scheduler.scale_model_input(image, t), t, **kwargs).sample
            image = self.scheduler.step(out, t, image, generator=generator, **extra).prev_sample
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        return ImagePipelineOutput(images=image) if return_dict else (image,)
