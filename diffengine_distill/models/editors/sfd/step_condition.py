"""SFD-v's step condition through the UNet's class-embedding table.

diffusers UNets add ``class_embedding(class_labels)`` to the time embedding.
A step-conditioned student gets a table with ``size`` rows per class (size =
largest step count + 1) and looks up row ``class * size + num_steps``: a
learned vector per (class, step count), the same function class as sfd-main's
embedding MLP of the step count over a finite set of counts. The table starts
as the teacher's class rows (zeros for an unconditional teacher), so the
student starts exactly as the teacher, and the export stays a stock diffusers
UNet. Text-to-image pipelines pass no class labels: their exports fold one
step count's row into the time embedding's last bias (``folded_step_condition``),
one stock UNet per step count.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from diffengine_distill.diffusion.sfd_steps import step_labels  # noqa: F401 (re-exported)


def add_step_condition(unet: nn.Module, size: int) -> nn.Module:
    """Give ``unet`` (in place) a class x step-count embedding table."""
    cfg = unet.config
    if getattr(cfg, "class_embed_type", None) is not None:
        raise ValueError(
            f"use_step_condition needs a UNet whose class embedding is a plain table; this "
            f"one has class_embed_type={cfg.class_embed_type!r}.")
    old = getattr(unet, "class_embedding", None)
    num_classes = cfg.num_class_embeds or 1
    dim = unet.time_embedding.linear_2.out_features
    table = nn.Embedding(num_classes * size, dim)
    with torch.no_grad():
        rows = old.weight if old is not None else torch.zeros(1, dim)
        table.weight.copy_(rows.repeat_interleave(size, dim=0))
    unet.class_embedding = table.to(unet.time_embedding.linear_2.weight)
    unet.register_to_config(num_class_embeds=num_classes * size)
    return unet


@contextmanager
def folded_step_condition(unet: nn.Module, row: int):
    """``unet`` (in place, restored on exit) as a stock UNet without a class
    embedding, conditioned on table row ``row``: diffusers adds the class
    embedding to ``time_embedding(t)``, whose last layer is ``linear_2``, so
    the row moves into that layer's bias."""
    table, bias = unet.class_embedding, unet.time_embedding.linear_2.bias
    if getattr(unet.time_embedding, "post_act", None) is not None:
        raise ValueError("Cannot fold the step condition: the time embedding has a "
                         "post-activation after linear_2.")
    saved, size = bias.detach().clone(), unet.config.num_class_embeds
    with torch.no_grad():
        bias.add_(table.weight[row].to(bias))
    unet.class_embedding = None
    unet.register_to_config(num_class_embeds=None)
    try:
        yield unet
    finally:
        with torch.no_grad():
            bias.copy_(saved)
        unet.class_embedding = table
        unet.register_to_config(num_class_embeds=size)
