"""The logic of ``tools/make_pairs.py``: a teacher's deterministic ODE samples
with the noise that made them, in resumable shards (DMD's regression set).

Text-to-image teachers give latents (the UNet's space) of their guided ODE,
one prompt per seed; the prompts travel in each shard's metadata."""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp

import torch
from tqdm import tqdm

from diffengine_distill.datasets.noise import read_prompts
from diffengine_distill.datasets.pairs import PAIRS_META
from diffengine_distill.models.text_conditioning import DTYPES

from .cli import SOLVERS, UsageError, pairs_parser, user_errors
from .inference import check_steps, export_metadata, find_export, generate, load_pipeline


def ode_scheduler(scheduler, solver: str):
    """A deterministic ODE solver on the teacher's noise schedule, ending at x0."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler
    if solver == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(
            scheduler.config, algorithm_type="dpmsolver++", solver_order=2,
            lower_order_final=True, final_sigmas_type="zero", timestep_spacing="trailing")
    if solver == "ddim":
        return DDIMScheduler.from_config(scheduler.config, timestep_spacing="trailing",
                                         set_alpha_to_one=True, clip_sample=False)
    if solver == "pndm":  # Stable Diffusion's own PLMS sampler (DMD's SD pairs)
        return PNDMScheduler.from_config(scheduler.config, skip_prk_steps=True)
    raise UsageError(f"Unknown solver {solver!r}; use one of {SOLVERS}.")


def pair_labels(seeds, num_classes: int | None) -> list[int] | None:
    return None if not num_classes else [s % num_classes for s in seeds]


def make_pairs(teacher: str, out: str, seeds, num_steps: int = 64, solver: str = "dpmpp",
               shard_size: int = 1000, num_classes: int | None = None, batch_size: int = 64,
               device: str = "cpu", progress: bool = True, prompts=None,
               guidance_scale: float | None = None,
               torch_dtype: torch.dtype = torch.float32) -> dict:
    """Write ``out/shard_<k>.safetensors`` for consecutive chunks of ``seeds``.

    Shards already written with the same settings are kept, so a killed run
    continues where it stopped; each shard is written to a temp file and
    renamed. Noise of seed s is the pipeline's own draw (a CPU generator
    seeded with s), so the pairs reproduce ``generate``. A text-to-image
    teacher (an export, a local diffusers folder or a hub id) needs
    ``prompts`` (a list or a file, one per line; seed s gets prompt s mod
    their number) and samples with CFG at ``guidance_scale``.
    """
    from safetensors.torch import save_file
    seeds = [int(s) for s in seeds]
    if not seeds or min(shard_size, num_steps, batch_size) < 1:
        raise UsageError("Need at least one seed, and shard_size, num_steps and batch_size "
                         ">= 1.")
    if num_classes is not None and num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes}")
    pipe = load_pipeline(teacher, device=device, torch_dtype=torch_dtype)
    text = hasattr(pipe, "tokenizer")
    folder = find_export(teacher) if osp.isdir(osp.expanduser(teacher)) else teacher
    if text:
        pipe, num_classes, prompts = _text_teacher(pipe, solver, num_classes, prompts,
                                                   guidance_scale)
    else:
        pipe, num_classes = _class_teacher(pipe, folder, solver, num_classes, prompts,
                                           guidance_scale)
    check_steps(pipe, num_steps)
    settings = dict(teacher=osp.abspath(folder) if osp.isdir(folder) else folder, solver=solver,
                    num_steps=num_steps, shard_size=shard_size, num_classes=num_classes,
                    shape=[pipe.unet.config.in_channels, *_size(pipe.unet.config.sample_size)])
    if text:
        settings.update(guidance_scale=guidance_scale, prompts_sha1=hashlib.sha1(
            "\n".join(prompts).encode()).hexdigest())
    os.makedirs(out, exist_ok=True)
    meta_file = osp.join(out, PAIRS_META)
    meta = dict(settings, shards=[], seeds=[])
    if osp.isfile(meta_file):
        with open(meta_file) as f:
            old = json.load(f)
        changed = [k for k in settings if old.get(k) != settings[k]]
        if changed:
            raise UsageError(f"{out!r} holds pairs made with other settings ({changed}): "
                             "use another --out, or delete the folder to start over.")
        meta = old
    chunks = [seeds[i:i + shard_size] for i in range(0, len(seeds), shard_size)]
    bar = tqdm(total=len(seeds), disable=not progress, desc="pairs", unit="img")
    for chunk in chunks:
        name = f"shard_{chunk[0]:08d}.safetensors"
        path = osp.join(out, name)
        if name in meta["shards"] and _intact(path, len(chunk)):
            bar.update(len(chunk))
            continue
        labels = pair_labels(chunk, num_classes)
        texts = [prompts[s % len(prompts)] for s in chunk] if text else None
        images = generate(pipe, chunk, num_steps, labels=labels, batch_size=batch_size,
                          progress=False, prompts=texts, guidance_scale=guidance_scale,
                          output_type="latent" if text else "pt")
        shape = (1, *settings["shape"])
        noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                           for s in chunk])
        tensors = dict(noise=noise.contiguous(), images=images.float().contiguous(),
                       seeds=torch.tensor(chunk))
        if labels is not None:
            tensors["labels"] = torch.tensor(labels)
        metadata = dict(prompts=json.dumps(texts)) if text else None
        save_file(tensors, path + ".tmp", metadata=metadata)
        os.replace(path + ".tmp", path)
        if name not in meta["shards"]:
            meta["shards"].append(name)
            meta["seeds"].append([chunk[0], chunk[-1]])
        _write_json(meta, meta_file)
        bar.update(len(chunk))
    bar.close()
    return meta


def _class_teacher(pipe, folder: str, solver: str, num_classes, prompts, guidance_scale):
    """A class-conditional or unconditional teacher's ODE pipeline and its classes."""
    from diffengine_distill.pipelines import SamplerPipeline
    if prompts is not None or guidance_scale is not None:
        raise UsageError(f"--prompts and --guidance-scale are for text-to-image teachers; "
                         f"{folder!r} is not one: leave them out.")
    classes = getattr(pipe.unet.config, "num_class_embeds", None)
    if num_classes is None and classes:
        # A teacher trained for CFG reserves its last class as the null label.
        num_classes = export_metadata(folder).get("null_class") or classes
    if num_classes and not classes:
        raise UsageError(f"num_classes={num_classes} but the teacher at {folder!r} is "
                         "unconditional: leave --num-classes out.")
    pipe = SamplerPipeline(unet=pipe.unet, scheduler=ode_scheduler(pipe.scheduler, solver))
    pipe.set_progress_bar_config(disable=True)
    return pipe, num_classes


def _text_teacher(pipe, solver: str, num_classes, prompts, guidance_scale):
    """A text-to-image pipeline on the ODE solver, its (None) classes and prompts."""
    if num_classes:
        raise UsageError("--num-classes is for class-conditional teachers; this one is "
                         "text-to-image: give --prompts instead.")
    if prompts is None or guidance_scale is None:
        raise UsageError("A text-to-image teacher needs --prompts (a file, one prompt per "
                         "line) and --guidance-scale (DMD's SD pairs: 3, the real score's).")
    pipe.scheduler = ode_scheduler(pipe.scheduler, solver)
    return pipe, None, read_prompts(prompts)


def _size(size) -> list[int]:
    return [size, size] if isinstance(size, int) else list(size)


def _intact(path: str, count: int) -> bool:
    try:
        from safetensors.torch import load_file  # reads it all: a broken file fails
        return osp.isfile(path) and len(load_file(path)["noise"]) == count
    except Exception:  # noqa: BLE001 (a truncated file fails in several ways)
        return False


def _write_json(obj, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def main(argv=None):
    args = pairs_parser().parse_args(argv)
    with user_errors("make_pairs.py"):
        meta = make_pairs(args.teacher, args.out, args.seeds, args.steps, args.solver,
                          args.shard_size, args.num_classes, args.batch_size, args.device,
                          prompts=args.prompts, guidance_scale=args.guidance_scale,
                          torch_dtype=DTYPES[args.dtype])
    print(f"{sum(b - a + 1 for a, b in meta['seeds'])} pairs in {len(meta['shards'])} "
          f"shard(s) at {args.out}")
