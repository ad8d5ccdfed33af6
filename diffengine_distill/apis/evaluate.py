"""The logic of ``tools/evaluate.py``: sample pipelines, score them, write a table.

Metrics per (pipeline, steps):
- ``psnr_vs_reference``: paired fidelity, PSNR of each image against the
  reference sampler's image from the same seed (e.g. the teacher at 1000
  steps). It measures distillation directly, for any image shape.
- ``fd`` (digits FD): Fréchet distance to the real digits in the feature space
  of a small digits classifier the package trains deterministically and
  caches; only for digits-shaped models (1 channel, square, >= 8 px).
- ``class_acc``: for class-conditional digits models, how often the
  classifier recognises the requested class.
- ``inception_fd``: Inception FID, only with ``--inception-weights`` (the
  NVlabs TorchScript file, SHA-256 checked); against the real digits for
  digits models, else against the reference sampler's images.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import time

from .cli import UsageError, evaluate_parser, steps_list, user_errors


def parse_args(argv=None):
    return evaluate_parser().parse_args(argv)


def parse_model(spec: str) -> tuple[str, str, list[int] | None]:
    """'[NAME=]PATH[@S1,S2]' -> (name, pipeline folder or hub id, steps or None)."""
    from .inference import find_export, is_local
    name, steps = None, None
    if "=" in spec and not osp.exists(spec):
        name, spec = spec.split("=", 1)
        if not name:
            raise UsageError(f"empty NAME in {name}={spec!r}: write NAME=PATH")
    if "@" in spec and not osp.exists(spec):
        spec, _, tail = spec.rpartition("@")
        try:
            steps = steps_list(tail)
        except argparse.ArgumentTypeError as err:
            raise UsageError(f"steps of {spec!r} after '@': {err}") from None
    folder = find_export(spec) if is_local(spec) else spec
    return name or osp.basename(osp.normpath(folder)), folder, steps


def is_digits_shaped(shape) -> bool:
    """Images the digits classifier reads: (1, R, R) with R >= 8."""
    channels, height, width = shape
    return channels == 1 and height == width and height >= 8


def evaluate(paths, steps=None, seeds=range(512), reference=None, reference_steps=None,
             inception_weights=None, batch_size=256, device="cpu",
             clip_sample="export", inception_sha256=None, exact_grid=False) -> list[dict]:
    import torch

    from diffengine_distill.datasets.digits import load_digits_uint8
    from diffengine_distill.evaluation import (INCEPTION_SHA256, check_inception_weights,
                                               class_accuracy, classifier_features,
                                               frechet_distance, get_digits_classifier,
                                               inception_features, psnr)

    from .inference import (check_steps, default_steps, generate, image_shape, is_local,
                            load_pipeline, pipeline_classes)
    seeds = list(seeds)
    if len(seeds) < 2:
        raise UsageError(f"{len(seeds)} seed(s): evaluation needs at least 2 images "
                         "(Fréchet distances fit a covariance)")
    if batch_size < 1:
        raise UsageError(f"batch size must be a positive integer, got {batch_size}")
    sha256 = inception_sha256 or INCEPTION_SHA256
    if inception_weights is not None:
        try:  # before any sampling: a wrong file should not cost an evaluation
            check_inception_weights(inception_weights, sha256)
        except ValueError as err:
            raise UsageError(str(err)) from None
    models = [parse_model(p) for p in paths]
    names = [name for name, _, _ in models]
    if len(set(names)) != len(names):
        raise UsageError(f"two pipelines are named {max(names, key=names.count)!r}: name "
                         "them NAME=PATH (one PATH@S1,S2 evaluates several step counts)")
    def load(folder):
        return load_pipeline(folder, device, clip_sample=clip_sample, exact_grid=exact_grid)
    pipes = {name: load(folder) for name, folder, _ in models}
    ref_name, ref_folder, ref_own = parse_model(reference) if reference else models[0]
    ref_pipe = pipes.get(ref_name) or load(ref_folder)
    pipes.setdefault(ref_name, ref_pipe)

    def steps_of(name, folder, own):
        return own or steps or [default_steps(pipes[name], folder if is_local(folder) else None)]

    ref_steps = reference_steps or max(steps_of(ref_name, ref_folder, ref_own))
    shape = image_shape(ref_pipe)
    for name, pipe in pipes.items():
        if image_shape(pipe) != shape:
            raise UsageError(f"{name!r} makes {image_shape(pipe)} images, the reference "
                             f"{ref_name!r} {shape}: paired PSNR needs one image shape")
    check_steps(ref_pipe, ref_steps)
    for name, folder, own in models:
        for n_steps in steps_of(name, folder, own):
            check_steps(pipes[name], n_steps)
    if inception_weights is not None and shape[0] not in (1, 3):
        raise UsageError(f"Inception FID reads grayscale or RGB images; these have "
                         f"{shape[0]} channels: leave --inception-weights out")

    def run(pipe, n_steps):
        start = time.perf_counter()
        images = generate(pipe, seeds, n_steps, batch_size=batch_size)
        return images, time.perf_counter() - start

    ref_images, ref_seconds = run(ref_pipe, ref_steps)
    digits = is_digits_shaped(shape)
    classifier = clf_acc = real_feats = None
    if digits:
        classifier, clf_acc = get_digits_classifier(shape[1])
        real = torch.from_numpy(load_digits_uint8(shape[1])[0]).float()[:, None] / 127.5 - 1
        real_feats = classifier_features(real, classifier)
    real_incep = incep_against = None
    if inception_weights is not None:
        incep_against = "real digits" if digits else f"{ref_name}@{ref_steps}"
        real_incep = inception_features(real if digits else ref_images, inception_weights,
                                        device, sha256=sha256)

    rows = []
    for name, folder, own in models:
        pipe = pipes[name]
        conditional = pipeline_classes(pipe) is not None
        for n_steps in steps_of(name, folder, own):
            images, seconds = ((ref_images, ref_seconds)
                               if (name, n_steps) == (ref_name, ref_steps)
                               else run(pipe, n_steps))
            row = dict(model=name, steps=n_steps, num_images=len(seeds))
            if digits:
                row["fd"] = frechet_distance(classifier_features(images, classifier),
                                             real_feats)
            row.update(psnr_vs_reference=float(psnr(images, ref_images).mean()),
                       reference=f"{ref_name}@{ref_steps}",
                       seconds_per_image=seconds / len(seeds))
            if digits and conditional:
                labels = torch.tensor([s % 10 for s in seeds])
                row["class_acc"] = class_accuracy(images, labels, classifier)
            if real_incep is not None:
                row["inception_fd"] = frechet_distance(
                    inception_features(images, inception_weights, device, sha256=sha256),
                    real_incep)
                row["inception_fd_against"] = incep_against
            if digits:
                row["classifier_test_acc"] = clf_acc
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    return " | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in row.items())


def markdown_table(rows: list[dict]) -> str:
    cols = [c for c in ("model", "steps", "fd", "class_acc", "psnr_vs_reference",
                        "inception_fd", "seconds_per_image") if any(c in r for r in rows)]
    incep = rows[0].get("inception_fd_against")
    head = {"fd": "digits FD ↓", "class_acc": "class acc ↑", "psnr_vs_reference":
            f"PSNR vs {rows[0]['reference']} (dB) ↑",
            "inception_fd": f"Inception FID vs {incep} ↓",
            "seconds_per_image": "s / image (CPU)"}
    lines = ["| " + " | ".join(head.get(c, c) for c in cols) + " |",
             "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("—" if v is None else f"{v:.3g}" if c == "seconds_per_image"
                         else f"{v:.2f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], out: str, command: str | None = None) -> None:
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(dict(command=command, rows=rows), f, indent=2)
    table = markdown_table(rows)
    note = f"{rows[0]['num_images']} images per row.\n"
    if "classifier_test_acc" in rows[0]:
        note = f"Digits classifier test accuracy: {rows[0]['classifier_test_acc']:.3f}. " + note
    with open(out + ".md", "w") as f:
        f.write((f"`{command}`\n\n" if command else "") + table + "\n" + note)
    print(table + note)


def main(argv=None):
    import sys
    args = parse_args(argv)
    with user_errors("evaluate.py"):
        rows = evaluate(args.paths, args.steps, args.seeds, args.reference,
                        args.reference_steps, args.inception_weights, args.batch_size,
                        args.device, args.clip_sample, exact_grid=args.exact_grid)
        write_results(rows, args.out, "python tools/evaluate.py " + " ".join(
            argv if argv is not None else sys.argv[1:]))
    return rows
