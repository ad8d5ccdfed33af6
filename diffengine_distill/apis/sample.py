"""The logic of ``tools/sample.py``."""
from __future__ import annotations

import argparse
import os
import os.path as osp

from diffengine_distill.utils import make_grid, save_image, to_uint8

from .inference import (CLIP_CHOICES, export_metadata, find_export, generate, load_pipeline,
                        parse_seeds)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Sample images from an exported pipeline.")
    p.add_argument("path", help="export folder (with model_index.json) or a work dir "
                   "(its newest export is used)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: the export's trained number)")
    p.add_argument("--seeds", default=None, help="e.g. 0-99 or 1,5,9 (default: 0..num-images-1)")
    p.add_argument("--num-images", type=int, default=64)
    p.add_argument("--labels", default=None, help="class labels for class-conditional "
                   "models, e.g. 0-9 (default: seed %% 10)")
    p.add_argument("--out", default=None, help="output folder (default: <export>/samples_<steps>)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 DDPM-like")
    p.add_argument("--clip-sample", choices=CLIP_CHOICES, default="export",
                   help="clip x0_hat to [-1, 1] at every step (on/off), or as exported")
    p.add_argument("--clipped-sampling", "--clipped_sampling", dest="clip_sample",
                   action="store_const", const="on", help="same as --clip-sample on")
    p.add_argument("--device", default="cpu")
    p.add_argument("--scale", type=int, default=4, help="enlarge the grid by this factor")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    folder = find_export(args.path)
    pipe = load_pipeline(folder, device=args.device, clip_sample=args.clip_sample)
    steps = args.steps or export_metadata(folder).get("num_inference_steps") or 50
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.num_images))
    labels = None
    if args.labels:
        labels = parse_seeds(args.labels)
        labels = (labels * len(seeds))[:len(seeds)]
    images = generate(pipe, seeds, steps, labels=labels, batch_size=args.batch_size,
                      eta=args.eta)
    out = args.out or osp.join(folder, f"samples_{steps}steps")
    os.makedirs(out, exist_ok=True)
    for seed, img in zip(seeds, to_uint8(images)):
        save_image(img, osp.join(out, f"{seed:06d}.png"))
    grid = save_image(make_grid(images), osp.join(out, "grid.png"), args.scale)
    print(f"{len(seeds)} images at {steps} steps from {folder} -> {out} (grid: {grid})")
    return images


def strip_main(argv=None):
    """Rows of images from several exports for the same seeds (tools/strip.py)."""
    import numpy as np
    import torch
    p = argparse.ArgumentParser(description="Compare exports side by side, same seeds.")
    p.add_argument("rows", nargs="+", help="LABEL=PATH@STEPS, one per row")
    p.add_argument("--seeds", default="0-11")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--clip-sample", choices=CLIP_CHOICES, default="export")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    grids = []
    for row in args.rows:
        label, _, spec = row.rpartition("=")
        path, _, steps = spec.rpartition("@")
        if not (label and path and steps.isdigit()):
            raise ValueError(f"Row {row!r} is not LABEL=PATH@STEPS.")
        pipe = load_pipeline(path, clip_sample=args.clip_sample)
        images = generate(pipe, seeds, int(steps), progress=False)
        grids.append(make_grid(images, nrow=len(seeds)))
        print(f"row {len(grids)}: {label} ({path} at {steps} steps)")
    strip = np.concatenate(grids, axis=0)
    save_image(strip, args.out, args.scale)
    print(f"strip -> {args.out}")
    return torch.from_numpy(strip)
