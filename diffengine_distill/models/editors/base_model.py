"""One key for the base model / teacher: the UNet, noise schedule and data
preprocessor configs take ``model.base_model`` unless given a path."""
from __future__ import annotations

import logging

from torch import nn


def config_from_base(cfg, base_model, default: dict, key: str):
    """``cfg`` with the base model as its path where it is a pretrained
    config without one (``None``: ``default`` from the base model)."""
    if cfg is None:
        cfg = dict(default)
    if isinstance(cfg, dict) and cfg.get("type", "pretrained") == "pretrained" \
            and not cfg.get("path"):
        if base_model is None:
            raise ValueError(f"model.{key} has no path: set model.base_model (a hub id or "
                             f"local diffusers folder) or model.{key}.path.")
        cfg = dict(default, **{k: v for k, v in cfg.items() if v is not None},
                   path=base_model)
    elif isinstance(cfg, dict) and base_model is not None and \
            cfg.get("path") not in (None, base_model):
        from mmengine.logging import print_log
        print_log(f"model.{key}.path={cfg['path']!r} overrides model.base_model="
                  f"{base_model!r} for the {key}.", logger="current", level=logging.WARNING)
    return cfg


def preprocessor_from_base(cfg, base_model):
    """The data preprocessor: a base model with text encoders gets the
    ``StableDiffusionDataPreprocessor`` of that model unless one is given."""
    if isinstance(cfg, nn.Module) or base_model is None:
        return cfg
    cfg = dict(cfg or {})
    if "type" not in cfg:
        from ..text_conditioning import _has_subfolder
        text = _has_subfolder(base_model, "text_encoder")
        cfg["type"] = "StableDiffusionDataPreprocessor" if text else \
            "DiffusionDataPreprocessor"
    if cfg["type"] == "StableDiffusionDataPreprocessor" and not cfg.get("model"):
        cfg["model"] = base_model
    return cfg
