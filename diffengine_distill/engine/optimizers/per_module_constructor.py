"""One optimizer per named sub-network (DMD's generator and critic)."""
from __future__ import annotations

import copy

from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapperDict
from torch import nn

from diffengine_distill.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PerModuleOptimWrapperConstructor:
    """``optim_wrapper=dict(constructor="PerModuleOptimWrapperConstructor",
    generator=dict(type=..., optimizer=...), critic=dict(...))`` builds an
    ``OptimWrapperDict`` with one wrapper per key, over the parameters of the
    model attribute of that name."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        if paramwise_cfg:
            raise ValueError("Give paramwise_cfg inside each named optimizer's dict.")
        self.cfgs = copy.deepcopy(dict(optim_wrapper_cfg))

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        model = model.module if is_model_wrapper(model) else model
        wrappers = {}
        for name, cfg in self.cfgs.items():
            module = getattr(model, name, None)
            if not isinstance(module, nn.Module):
                names = [n for n, _ in model.named_children()]
                raise ValueError(f"optim_wrapper.{name}: {type(model).__name__} has no "
                                 f"sub-network {name!r} to optimise (it has {names}).")
            cfg = dict(cfg)
            wrappers[name] = DefaultOptimWrapperConstructor(
                cfg, cfg.pop("paramwise_cfg", None))(module)
        return OptimWrapperDict(**wrappers)
