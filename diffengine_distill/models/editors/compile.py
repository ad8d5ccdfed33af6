"""``model=dict(compile=...)``: torch.compile every UNet of a model (student,
teachers, critics) in place, once the Runner has built and wrapped it.

``compile=True`` uses inductor's defaults; a dict is passed to
``torch.compile``: ``dict(mode="reduce-overhead")`` adds CUDA graphs (static
shapes: a fixed batch), ``dict(mode="max-autotune")`` tunes kernels longer.
``nn.Module.compile`` keeps parameter names, so checkpoints and exports are
the same with or without it.
"""
from __future__ import annotations

from diffusers import UNet2DConditionModel, UNet2DModel
from torch import nn

UNET_CLASSES = (UNet2DModel, UNet2DConditionModel)


def compile_options(option) -> dict | None:
    """``False``/``None``: off; ``True``: inductor's defaults; a dict: torch.compile's keywords."""
    if option is None or option is False:
        return None
    if option is True:
        return {}
    if isinstance(option, dict):
        return dict(option)
    raise TypeError(f"model.compile must be True, False or a dict of torch.compile options "
                    f"(e.g. dict(mode='reduce-overhead')), got {option!r}")


def compile_unets(model: nn.Module, options: dict) -> int:
    """Compile each UNet in ``model`` not compiled yet; returns how many were."""
    count = 0
    for module in model.modules():
        if isinstance(module, UNET_CLASSES) and module._compiled_call_impl is None:
            module.compile(**options)
            count += 1
    return count
