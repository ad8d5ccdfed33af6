"""LoRA students: PEFT adapters on a frozen UNet (or text encoder), their
export as PEFT folders, and the frozen teacher that shares the base weights."""
from __future__ import annotations

import os.path as osp

from torch import nn


def add_lora(unet, options: dict, key: str = "lora_config"):
    """Freeze ``unet`` (or a text encoder) and add PEFT LoRA adapters
    ("default") to it; ``options``: LoraConfig's, or diffengine's
    ``dict(type="LoRA", ...)``; ``key`` names the config key in errors."""
    from peft import LoraConfig

    from .teacher.diffengine_compat import lora_options
    config = LoraConfig(**lora_options(options, key))
    unet.requires_grad_(False)
    try:
        unet.add_adapter(config)
    except ValueError as err:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in unet.named_modules()
                        if isinstance(m, (nn.Linear, nn.Conv2d))})
        raise ValueError(f"LoRA target_modules={options.get('target_modules')} not found in "
                         f"{type(unet).__name__} ({err}); its Linear/Conv2d module names "
                         f"end in {names}.") from err
    return config


def save_peft_folder(module, folder: str) -> dict:
    """``module``'s "default" adapter as ``PeftModel.save_pretrained`` writes
    it (adapter_config.json, adapter_model.safetensors with PeftModel's key
    names), for ``PeftModel.from_pretrained(module, folder)``; returns the
    adapter's state dict."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file
    state = {k: v.detach().cpu().contiguous()
             for k, v in get_peft_model_state_dict(module).items()}
    module.peft_config["default"].save_pretrained(folder)
    # PeftModel's own key names: the adapter name is implied ("default").
    save_file({f"base_model.model.{k}": v for k, v in state.items()},
              osp.join(folder, "adapter_model.safetensors"))
    return state


class AdapterTeacher:
    """The frozen teacher of a LoRA student: the student's own UNet with its
    adapters off (``adapter=None``) or with a frozen adapter of its own
    active, for the call only, so the base weights exist once."""

    def __init__(self, model, adapter: str | None = None):
        self.model = model
        self.adapter = adapter

    @property
    def config(self):
        return self.model.bare_unet.config

    def __call__(self, *args, **kwargs):
        unet = self.model.bare_unet
        if self.adapter is None:
            unet.disable_adapters()
            try:
                return unet(*args, **kwargs)
            finally:
                unet.enable_adapters()
        from peft.tuners.tuners_utils import BaseTunerLayer
        layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
        for layer in layers:  # inference_mode: requires_grad stays off
            layer.set_adapter(self.adapter, inference_mode=True)
        try:
            return unet(*args, **kwargs)
        finally:
            for layer in layers:  # the student's adapter, trainable again
                layer.set_adapter("default")
