"""Build diffusers UNets and schedulers from configs or pretrained weights.

A UNet config is either ``dict(type="UNet2DModel", **diffusers_config)``
(built from scratch) or ``dict(type="pretrained", path=..., subfolder=...)``
(a hub id or a local diffusers folder). Loading failures name the path and
the fix instead of surfacing a bare hub error.
"""
from __future__ import annotations

import copy
import inspect
import os
import os.path as osp

import diffusers
from torch import nn

from diffengine_distill import pipelines, schedulers
from diffengine_distill.registry import MODELS

# Register the diffusers networks so configs can build them by name.
for _name in ("UNet2DModel", "UNet2DConditionModel"):
    MODELS.register_module(name=_name, module=getattr(diffusers, _name), force=True)


def _looks_local(path: str) -> bool:
    return osp.isabs(path) or path.startswith((".", "~")) or osp.exists(path) \
        or path.count("/") != 1


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _check_local(path: str, subfolder: str | None) -> str:
    """``path`` with ``~`` expanded; a local path must be a folder."""
    path = osp.expanduser(str(path))
    where = osp.join(path, subfolder) if subfolder else path
    if _looks_local(path) and not osp.isdir(where):
        raise FileNotFoundError(
            f"Pretrained weights not found: {where!r} is not a directory. Give a "
            f"local diffusers folder (containing config.json and weights) or a "
            f"hub id like 'google/ddpm-cifar10-32'.")
    return path


def load_pretrained(cls, path: str, subfolder: str | None = None, **kwargs):
    """``cls.from_pretrained`` with an error that says what to do."""
    path = _check_local(path, subfolder)
    try:
        return cls.from_pretrained(path, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as err:
        raise OSError(_load_error(path, subfolder, cls.__name__, err)) from err


def load_vae(path: str, class_name: str = "AutoencoderKL", subfolder: str | None = None,
             **kwargs):
    """A diffusers autoencoder (``AutoencoderKL``, ``AutoencoderTiny``, ...)."""
    return load_pretrained(_class_by_name(class_name, "AutoencoderKL"), path,
                           subfolder=subfolder, **kwargs)


def _own_class(name: str | None):
    """This package's schedulers and pipeline (what exports name)."""
    return getattr(schedulers, name or "", None) or getattr(pipelines, name or "", None)


def _class_by_name(name: str, default: str):
    """A diffusers (or diffengine_distill) class by name."""
    cls = getattr(diffusers, name or default, None) or _own_class(name)
    if cls is None:
        raise ValueError(f"Neither diffusers nor diffengine_distill has a class {name!r}.")
    return cls


def _saved_class_name(path: str, subfolder: str | None, config_name: str) -> str | None:
    """The ``_class_name`` a model's own config records: a local diffusers
    folder, or a hub id (through the local Hugging Face cache, offline too)."""
    from diffusers.configuration_utils import ConfigMixin

    class _Reader(ConfigMixin):
        pass

    _Reader.config_name = config_name
    try:
        config = _Reader.load_config(osp.expanduser(path), subfolder=subfolder)
    except (OSError, ValueError) as err:
        raise OSError(_load_error(path, subfolder, config_name, err)) from err
    return config.get("_class_name")


def _load_error(path: str, subfolder: str | None, what: str, err: Exception) -> str:
    where = f"{path!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    if _looks_local(path):
        fix = "Check that the folder holds a saved diffusers model."
    elif _offline():
        fix = (f"HF_HUB_OFFLINE=1 is set, so only the local cache (HF_HUB_CACHE / HF_HOME) "
               f"is searched and {path!r} is not in it: run "
               f"`huggingface-cli download {path}` on a connected machine (same cache), "
               f"or point the config at a local copy of the model.")
    else:
        fix = (f"Check the hub id {path!r} (it may have moved: SD 1.5 is "
               f"'stable-diffusion-v1-5/stable-diffusion-v1-5'), your network and HF_HOME.")
    return f"Could not load {what} from {where}: {err}\n{fix}"


@MODELS.register_module(name="pretrained")
def pretrained_unet(path: str, subfolder: str | None = "unet",
                    class_name: str | None = None, **kwargs) -> nn.Module:
    if subfolder and _looks_local(path) and osp.isdir(path) \
            and not osp.isdir(osp.join(path, subfolder)):
        subfolder = None  # a bare UNet folder rather than a pipeline folder
    path = _check_local(path, subfolder)
    name = class_name or _saved_class_name(path, subfolder, "config.json")
    return load_pretrained(_class_by_name(name, "UNet2DModel"), path, subfolder=subfolder,
                           **kwargs)


def build_unet(cfg: dict | nn.Module) -> nn.Module:
    if isinstance(cfg, nn.Module):
        return cfg
    return MODELS.build(copy.deepcopy(cfg))


def build_scheduler(cfg: dict | object, base_config: dict | None = None):
    """A diffusers scheduler from ``dict(type="DDPMScheduler", **config)``.

    ``dict(type="pretrained", path=..., subfolder="scheduler")`` loads one;
    ``base_config`` (another scheduler's config) supplies unset options.
    """
    if not isinstance(cfg, dict):
        return cfg
    cfg = copy.deepcopy(dict(cfg))
    kind = cfg.pop("type", "DDPMScheduler")
    if isinstance(kind, type):  # a scheduler class itself
        cls, kind = kind, kind.__name__
    elif kind == "pretrained":
        path, subfolder = cfg.pop("path"), cfg.pop("subfolder", "scheduler")
        path = _check_local(path, subfolder)
        name = cfg.pop("class_name", None) or \
            _saved_class_name(path, subfolder, "scheduler_config.json")
        return load_pretrained(_class_by_name(name, "DDPMScheduler"), path,
                               subfolder=subfolder, **cfg)
    else:
        cls = getattr(diffusers, kind, None) or _own_class(kind)
    if cls is None or not hasattr(cls, "from_config"):
        raise ValueError(f"Unknown diffusers scheduler type {kind!r}.")
    # diffusers only warns about unknown keys; a typo must not pass silently.
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(k for k in cfg if k not in known and not k.startswith("_"))
    if unknown:
        raise ValueError(f"{kind} has no option(s) {unknown}; valid: {sorted(known)}.")
    # Options of another scheduler class (DDIM's clip_sample for an SFDScheduler)
    # would be saved into exports and warned about on every load.
    base = {k: v for k, v in dict(base_config or {}).items() if k in known}
    return cls.from_config(base, **cfg)
