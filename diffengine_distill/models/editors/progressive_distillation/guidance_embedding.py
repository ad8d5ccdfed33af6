"""A guidance-scale input for w-conditioned students (Meng et al., CVPR 2023).

diffusers' text-to-image pipelines already feed such UNets: when
``unet.config.time_cond_proj_dim`` is set they skip classifier-free guidance
and pass ``timestep_cond`` = a sinusoidal embedding of (guidance_scale - 1),
which ``time_embedding.cond_proj`` adds to the time embedding. A student
trained on that same embedding therefore exports as a stock UNet that
``StableDiffusionPipeline(..., guidance_scale=w)`` samples without CFG.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def guidance_scale_embedding(guidance_scale: Tensor, dim: int) -> Tensor:
    """(B, dim) sinusoidal embedding of w - 1, as the pipelines compute it (fp32)."""
    w = (torch.as_tensor(guidance_scale, dtype=torch.float32) - 1) * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device)
                      * (-math.log(10000.0) / (half - 1)))
    angles = w.reshape(-1, 1) * freqs
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return nn.functional.pad(emb, (0, dim % 2))


def add_guidance_embedding(unet: nn.Module, dim: int) -> nn.Module:
    """Give a ``UNet2DConditionModel`` (in place) a zero-initialised
    ``time_embedding.cond_proj``: its output is unchanged until trained."""
    if not hasattr(unet.config, "time_cond_proj_dim"):
        raise ValueError(f"A guidance-scale embedding needs a UNet2DConditionModel "
                         f"(time_cond_proj_dim); {type(unet).__name__} has none: use a "
                         "fixed model.guidance_scale instead.")
    if unet.config.time_cond_proj_dim is not None:
        return unet  # already w-conditioned (a previous student)
    linear_1 = unet.time_embedding.linear_1
    proj = nn.Linear(dim, linear_1.in_features, bias=False)
    nn.init.zeros_(proj.weight)
    unet.time_embedding.cond_proj = proj.to(linear_1.weight)
    unet.register_to_config(time_cond_proj_dim=dim)
    return unet
