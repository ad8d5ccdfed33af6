"""The logic of ``tools/sample.py``."""
from __future__ import annotations

import os
import os.path as osp

from .cli import UsageError, sample_parser, strip_parser, user_errors


def parse_args(argv=None):
    return sample_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with user_errors("sample.py"):
        return sample(args)


def sample(args):
    from diffengine_distill.utils import make_grid, save_image, to_uint8

    from .inference import (check_steps, default_steps, find_export, generate, is_local,
                            load_pipeline, pipeline_classes)
    local = is_local(args.path)
    folder = find_export(args.path) if local else args.path
    pipe = load_pipeline(folder, device=args.device, clip_sample=args.clip_sample,
                         exact_grid=args.exact_grid)
    steps = args.steps or default_steps(pipe, folder if local else None)
    check_steps(pipe, steps)
    seeds = args.seeds or list(range(args.num_images))
    labels = None
    if args.labels:
        classes = pipeline_classes(pipe)
        if classes is None:
            raise UsageError(f"--labels given but {args.path!r} is not class-conditional")
        if max(args.labels) >= classes:
            raise UsageError(f"--labels must be below the model's {classes} classes, "
                             f"got {max(args.labels)}")
        labels = (args.labels * len(seeds))[:len(seeds)]
    images = generate(pipe, seeds, steps, labels=labels, batch_size=args.batch_size,
                      eta=args.eta)
    out = args.out or osp.join(folder if local else ".", f"samples_{steps}steps")
    os.makedirs(out, exist_ok=True)
    if images.shape[1] > 4:  # no PNG mode: the raw array (seeds in order)
        import numpy as np
        np.save(osp.join(out, "images.npy"), images.numpy())
        print(f"{len(seeds)} images of {images.shape[1]} channels at {steps} steps from "
              f"{folder} -> {osp.join(out, 'images.npy')} (values in [-1, 1])")
        return images
    for seed, img in zip(seeds, to_uint8(images)):
        save_image(img, osp.join(out, f"{seed:06d}.png"))
    grid = save_image(make_grid(images), osp.join(out, "grid.png"), args.scale)
    print(f"{len(seeds)} images at {steps} steps from {folder} -> {out} (grid: {grid})")
    return images


def strip_main(argv=None):
    """Rows of images from several pipelines for the same seeds (tools/strip.py)."""
    args = strip_parser().parse_args(argv)
    with user_errors("strip.py"):
        return strip(args)


def parse_row(row: str) -> tuple[str, str, int]:
    """'LABEL=PATH@STEPS' -> (label, path, steps)."""
    label, _, spec = row.partition("=")
    path, _, steps = spec.rpartition("@")
    if not (label and path and steps.isdigit() and int(steps) > 0):
        raise UsageError(f"row {row!r} is not LABEL=PATH@STEPS with STEPS a positive integer")
    return label, path, int(steps)


def strip(args):
    import numpy as np
    import torch

    from diffengine_distill.utils import make_grid, save_image

    from .inference import check_steps, generate, image_shape, load_pipeline
    rows = [parse_row(row) for row in args.rows]  # all checked before any sampling
    grids, shape = [], None
    for label, path, steps in rows:
        pipe = load_pipeline(path, clip_sample=args.clip_sample, exact_grid=args.exact_grid)
        check_steps(pipe, steps)
        if shape is not None and image_shape(pipe)[1:] != shape:
            raise UsageError(f"row {label!r} makes {image_shape(pipe)[1:]} images, the first "
                             f"row {shape}: a strip needs one image size")
        shape = image_shape(pipe)[1:]
        images = generate(pipe, args.seeds, steps, progress=False)
        grids.append(make_grid(images, nrow=len(args.seeds)))
        print(f"row {len(grids)}: {label} ({path} at {steps} steps)")
    image = np.concatenate(grids, axis=0)
    save_image(image, args.out, args.scale)
    print(f"strip -> {args.out}")
    return torch.from_numpy(image)
