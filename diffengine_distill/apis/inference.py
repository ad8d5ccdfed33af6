"""Load exported pipelines and sample from them (tools/sample.py, evaluate.py)."""
from __future__ import annotations

import copy
import glob
import inspect
import json
import os.path as osp
import re

import torch

from diffengine_distill.pipelines.generate import generate as generate_images
from diffengine_distill.pipelines.generate import pipeline_classes, takes_eta  # noqa: F401

from .cli import CLIP_CHOICES, UsageError, parse_seeds  # noqa: F401 (parse_seeds: re-export)


def find_export(path: str) -> str:
    """An export folder itself, or the newest export inside a work dir."""
    path = osp.expanduser(path)
    if osp.isfile(osp.join(path, "model_index.json")):
        return path
    if not osp.isdir(path):
        raise FileNotFoundError(f"{path!r} is neither an exported pipeline folder nor a work dir.")
    exports = [osp.dirname(p) for p in glob.glob(osp.join(path, "*", "model_index.json"))]
    if not exports:
        raise FileNotFoundError(
            f"No export in {path!r}: an exported folder holds model_index.json "
            "(written by DiffusersExportHook). Was training run to an export interval?")

    def order(folder):  # numbers in the name (step<N>, stage_<k>_<N>steps), then age
        nums = [int(n) for n in re.findall(r"\d+", osp.basename(folder))]
        return (osp.getmtime(folder), nums)
    return max(exports, key=order)


def is_local(path: str) -> bool:
    """A local folder (or meant as one), not a hub id like ``org/name``: a
    mistyped ``work_dirs/name`` must say "not found", not ask the hub."""
    from diffengine_distill.models.builders import _looks_local
    path = osp.expanduser(path)
    return _looks_local(path) or osp.isdir(path.split("/")[0])


def export_metadata(folder: str) -> dict:
    meta = osp.join(folder, "diffengine_distill.json")
    if osp.isfile(meta):
        with open(meta) as f:
            return json.load(f)
    return {}


def load_pipeline(path: str, device: str | torch.device = "cpu",
                  torch_dtype: torch.dtype = torch.float32, clip_sample: str = "export",
                  exact_grid: bool = False):
    """A diffusers pipeline from an export folder, a work dir or a hub id.

    ``exact_grid`` samples a DDIM scheduler on the trailing grid
    t_i = i T / N - 1 for every N (``GridDDIMScheduler``, as fractional-grid
    exports do). diffusers' DDIMScheduler steps from t to t - T // N instead,
    so where N does not divide T (64 steps of 1000) each step ends off the
    next timestep.

    ``clip_sample`` on/off overrides the export's x0 clipping. Note that
    diffusers' DDIM clips x0_hat but keeps the unclipped eps_hat, which over
    hundreds of steps leaves speckles; the unclipped ODE has none.
    ``recompute`` clips x0_hat and takes eps_hat from it, (z - alpha x0)/sigma,
    at every DDIM step: the clipped ODE that the progressive distillation
    paper samples with (diffusers' ``use_clipped_model_output=True``).
    """
    from diffusers import DDIMScheduler, DiffusionPipeline

    import diffengine_distill
    from diffengine_distill.models.builders import load_pretrained
    from diffengine_distill.schedulers import GridDDIMScheduler
    check_device(device)
    if not is_local(path):  # a hub id (base models, stock pipelines)
        pipe = load_pretrained(DiffusionPipeline, path, dtype=torch_dtype).to(device)
    else:
        folder = find_export(path)
        with open(osp.join(folder, "model_index.json")) as f:
            name = json.load(f).get("_class_name")
        cls = getattr(diffengine_distill, str(name), None) or DiffusionPipeline
        pipe = cls.from_pretrained(folder, dtype=torch_dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    if exact_grid and isinstance(pipe.scheduler, DDIMScheduler):
        pipe.scheduler = GridDDIMScheduler.from_config(pipe.scheduler.config)
    if clip_sample not in CLIP_CHOICES:
        raise ValueError(f"clip_sample must be one of {CLIP_CHOICES}, got {clip_sample!r}")
    if clip_sample != "export":
        pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config,
                                                    clip_sample=clip_sample != "off")
    if clip_sample == "recompute":
        recompute_clipped_eps(pipe.scheduler)
    return pipe


def recompute_clipped_eps(scheduler) -> None:
    """Make a DDIM scheduler take eps_hat from the clipped x0_hat at every step,
    whatever the pipeline passes. Other schedulers step from x0_hat alone
    (DDPM's posterior mean, LCM), so clipping is already consistent there."""
    step = scheduler.step
    if "use_clipped_model_output" not in inspect.signature(step).parameters:
        return

    def step_with_clipped_eps(*args, **kwargs):
        kwargs["use_clipped_model_output"] = True
        return step(*args, **kwargs)
    scheduler.step = step_with_clipped_eps


def generate(pipe, seeds, num_inference_steps: int, eta: float = 0.0, **kwargs):
    """``diffengine_distill.pipelines.generate`` with a user error (one line in
    the tools) for an ``eta`` the pipeline does not take."""
    if eta and not takes_eta(pipe):
        raise UsageError(f"eta={eta} is for DDIM samplers; {type(pipe).__name__} takes no "
                         "eta: leave --eta out")
    return generate_images(pipe, seeds, num_inference_steps, eta=eta, **kwargs)


def check_device(device) -> torch.device:
    """``device`` as a torch device, or a one-line error when it is not usable here."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UsageError(f"--device {device!r} is not a device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device} but CUDA is not available here: use --device cpu")
    return device


def image_shape(pipe) -> tuple[int, int, int]:
    """(channels, height, width) of the images a pixel pipeline makes."""
    config = pipe.unet.config
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return config.in_channels, height, width


def default_steps(pipe, folder: str | None = None) -> int:
    """An export's trained step count, else the pipeline's own default
    (DDPMPipeline: 1000, DDIMPipeline: 50), else 50."""
    trained = export_metadata(folder).get("num_inference_steps") if folder else None
    default = inspect.signature(pipe.__call__).parameters.get("num_inference_steps")
    default = getattr(default, "default", None)
    return trained or (default if isinstance(default, int) else 50)


def check_steps(pipe, num_inference_steps: int) -> None:
    """Refuse step counts the pipeline's scheduler cannot sample with."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
            or num_inference_steps < 1:
        raise UsageError(f"steps must be a positive integer, got {num_inference_steps!r}")
    try:  # on a copy: set_timesteps changes the scheduler's state
        copy.deepcopy(pipe.scheduler).set_timesteps(num_inference_steps)
    except ValueError as err:
        raise UsageError(f"{num_inference_steps} steps: {err}") from None
