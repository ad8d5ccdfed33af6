"""Sample any diffusers pipeline by seed: the training-time grids, the tools
and the benchmarks all sample exports through this one loop."""
from __future__ import annotations

import inspect

import torch
from tqdm import tqdm


def takes_eta(pipe) -> bool:
    """Whether the pipeline's sampler has DDIM's eta (DDPMPipeline has none)."""
    return "eta" in inspect.signature(pipe.__call__).parameters


def pipeline_classes(pipe) -> int | None:
    """Number of classes a pipeline is conditioned on (None: unconditional)."""
    if hasattr(pipe, "num_classes"):
        return pipe.num_classes
    return getattr(pipe.unet.config, "num_class_embeds", None)


@torch.no_grad()
def generate(pipe, seeds, num_inference_steps: int, labels=None, batch_size: int = 64,
             eta: float = 0.0, progress: bool = True, prompts=None,
             guidance_scale: float | None = None, output_type: str = "pt") -> torch.Tensor:
    """Images in [-1, 1], one generator per seed (image i is reproducible alone).

    Text-to-image pipelines take ``prompts`` (one per seed, or one for all;
    default "") and ``guidance_scale`` (default: the pipeline's);
    ``output_type="latent"`` returns their latents instead of images.
    """
    seeds = [int(s) for s in seeds]
    text = hasattr(pipe, "tokenizer")
    if text:
        prompts = [""] if prompts is None else [prompts] if isinstance(prompts, str) \
            else list(prompts)
        prompts = (prompts * len(seeds))[:len(seeds)] if len(prompts) == 1 else prompts
    conditional = not text and pipeline_classes(pipe) is not None
    eta_option = takes_eta(pipe)
    if eta and not eta_option:
        raise ValueError(f"eta={eta} is for DDIM samplers; {type(pipe).__name__} takes no eta.")
    if conditional and labels is None:
        labels = [s % 10 for s in seeds]
    out = []
    for start in tqdm(range(0, len(seeds), batch_size), disable=not progress,
                      desc=f"sampling {num_inference_steps} steps", unit="batch"):
        chunk = seeds[start:start + batch_size]
        gens = [torch.Generator("cpu").manual_seed(s) for s in chunk]
        kwargs = dict(generator=gens, num_inference_steps=num_inference_steps,
                      output_type=output_type)
        if eta_option:
            kwargs["eta"] = eta
        if text:
            kwargs["prompt"] = prompts[start:start + batch_size]
            if guidance_scale is not None:
                kwargs["guidance_scale"] = guidance_scale
        elif conditional:
            kwargs["class_labels"] = labels[start:start + batch_size]
        else:
            kwargs["batch_size"] = len(chunk)
        images = pipe(**kwargs).images.float().cpu()
        out.append(images if output_type == "latent" else images * 2 - 1)
    return torch.cat(out)
