"""A DDIMPipeline that keeps its scheduler and takes class labels.

diffusers' DDIMPipeline converts any scheduler to DDIMScheduler and has no
class labels; exports of class-conditional UNets and of samplers diffusers
lacks (fractional DDIM grids) use this instead.
"""
from __future__ import annotations

import inspect

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


class SamplerPipeline(DiffusionPipeline):
    """``SamplerPipeline.from_pretrained(folder)(batch_size=16, num_inference_steps=4)``;
    class-conditional UNets take ``class_labels=[...]`` instead of ``batch_size``."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, class_labels=None, generator=None,
                 num_inference_steps: int = 50, eta: float = 0.0, output_type: str = "pil",
                 return_dict: bool = True):
        conditional = getattr(self.unet.config, "num_class_embeds", None) is not None
        if conditional and class_labels is None:
            raise ValueError("This UNet is class-conditional: pass class_labels=[...].")
        kwargs = {}
        if class_labels is not None:
            labels = torch.as_tensor(class_labels, device=self._execution_device).long().flatten()
            kwargs["class_labels"], batch_size = labels, len(labels)
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (batch_size, self.unet.config.in_channels, *size)
        image = randn_tensor(shape, generator=generator, device=self._execution_device,
                             dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps)
        extra = {"eta": eta} if "eta" in inspect.signature(self.scheduler.step).parameters else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            out = self.unet(image, t, **kwargs).sample
            image = self.scheduler.step(out, t, image, generator=generator, **extra).prev_sample
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        return ImagePipelineOutput(images=image) if return_dict else (image,)
