"""DDIMPipeline for class-conditional ``UNet2DModel`` s (diffusers has none)."""
from __future__ import annotations

import inspect

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


class ClassConditionalPipeline(DiffusionPipeline):
    """Sample ``class_labels`` with any diffusers scheduler.

    Loads with ``ClassConditionalPipeline.from_pretrained(folder)`` or
    ``DiffusionPipeline.from_pretrained(folder, custom_pipeline=...)``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, class_labels, generator=None, num_inference_steps: int = 50,
                 eta: float = 0.0, output_type: str = "pil", return_dict: bool = True):
        labels = torch.as_tensor(class_labels, device=self._execution_device).long().flatten()
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (len(labels), self.unet.config.in_channels, *size)
        image = randn_tensor(shape, generator=generator, device=self._execution_device,
                             dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps)
        extra = {"eta": eta} if "eta" in inspect.signature(self.scheduler.step).parameters else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            out = self.unet(image, t, class_labels=labels).sample
            image = self.scheduler.step(out, t, image, generator=generator, **extra).prev_sample
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return ImagePipelineOutput(images=image) if return_dict else (image,)
        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
        if output_type == "pil":
            image = self.numpy_to_pil(image)
        return ImagePipelineOutput(images=image) if return_dict else (image,)
