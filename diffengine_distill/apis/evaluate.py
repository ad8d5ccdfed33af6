"""The logic of ``tools/evaluate.py``: sample exports, score them, write a table.

Metrics per (export, steps):
- ``fd``: Fréchet distance to the real digits in the feature space of a small
  digits classifier the package trains deterministically and caches.
- ``class_acc``: for class-conditional exports, how often the classifier
  recognises the requested class.
- ``psnr``: paired fidelity, PSNR of each image against the reference
  export's image from the same seed (e.g. the teacher at 1000 steps). It
  measures distillation directly, without any feature extractor.
- ``inception_fd``: Inception FID, only with ``--inception-weights``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import time

import torch

from .inference import (CLIP_CHOICES, export_metadata, find_export, generate, load_pipeline,
                        parse_seeds, pipeline_classes)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate exported pipelines on digits.")
    p.add_argument("paths", nargs="+", help="export folders or work dirs, each as "
                   "[NAME=]PATH[@STEPS,STEPS...] (default name: the folder name; "
                   "default steps: --steps)")
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="sampling steps to evaluate (default: each export's trained number)")
    p.add_argument("--seeds", default="0-511", help="noise seeds, e.g. 0-511")
    p.add_argument("--reference", default=None, help="export for paired PSNR "
                   "(default: the first path)")
    p.add_argument("--reference-steps", type=int, default=None,
                   help="steps of the reference (default: the largest of --steps)")
    p.add_argument("--inception-weights", default=None,
                   help="local inception-2015-12-05.pt for Inception FID")
    p.add_argument("--clip-sample", choices=CLIP_CHOICES, default="export",
                   help="x0 clipping while sampling: as exported, on or off")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default="evaluation", help="writes OUT.json and OUT.md")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def parse_model(spec: str) -> tuple[str, str, list[int] | None]:
    """'[NAME=]PATH[@S1,S2]' -> (name, export folder, steps or None)."""
    name, steps = None, None
    if "=" in spec and not osp.exists(spec):
        name, spec = spec.split("=", 1)
    if "@" in spec and not osp.exists(spec):
        spec, _, tail = spec.rpartition("@")
        steps = [int(x) for x in tail.split(",")]
    folder = find_export(spec)
    return name or osp.basename(osp.normpath(folder)), folder, steps


def evaluate(paths, steps=None, seeds=range(512), reference=None, reference_steps=None,
             inception_weights=None, batch_size=256, device="cpu",
             clip_sample="export") -> list[dict]:
    from diffengine_distill.datasets.digits import load_digits_uint8
    from diffengine_distill.evaluation import (class_accuracy, classifier_features,
                                               frechet_distance, get_digits_classifier,
                                               inception_features, psnr)
    if inception_weights is not None and not osp.isfile(inception_weights):
        inception_features(None, inception_weights)  # raises the explanatory error early
    models = [parse_model(p) for p in paths]
    seeds = list(seeds)
    pipes = {name: load_pipeline(folder, device, clip_sample=clip_sample)
             for name, folder, _ in models}
    resolution = next(iter(pipes.values())).unet.config.sample_size
    classifier, clf_acc = get_digits_classifier(resolution)
    real = torch.from_numpy(load_digits_uint8(resolution)[0]).float()[:, None] / 127.5 - 1
    real_feats = classifier_features(real, classifier)
    real_incep = (inception_features(real, inception_weights, device)
                  if inception_weights else None)

    def run(pipe, n_steps):
        start = time.perf_counter()
        images = generate(pipe, seeds, n_steps, batch_size=batch_size)
        return images, time.perf_counter() - start

    def steps_of(folder, own):
        return own or steps or [export_metadata(folder).get("num_inference_steps") or 50]

    ref_name, ref_folder, ref_own = parse_model(reference) if reference else models[0]
    ref_steps = reference_steps or max(steps_of(ref_folder, ref_own))
    ref_pipe = pipes.get(ref_name) or load_pipeline(ref_folder, device, clip_sample=clip_sample)
    ref_images, ref_seconds = run(ref_pipe, ref_steps)

    rows = []
    for name, folder, own in models:
        pipe = pipes[name]
        conditional = pipeline_classes(pipe) is not None
        for n_steps in steps_of(folder, own):
            images, seconds = ((ref_images, ref_seconds)
                               if (name, n_steps) == (ref_name, ref_steps)
                               else run(pipe, n_steps))
            row = dict(model=name, steps=n_steps, num_images=len(seeds),
                       fd=frechet_distance(classifier_features(images, classifier), real_feats),
                       psnr_vs_reference=float(psnr(images, ref_images).mean()),
                       reference=f"{ref_name}@{ref_steps}",
                       seconds_per_image=None if seconds is None else seconds / len(seeds))
            if conditional:
                labels = torch.tensor([s % 10 for s in seeds])
                row["class_acc"] = class_accuracy(images, labels, classifier)
            if real_incep is not None:
                row["inception_fd"] = frechet_distance(
                    inception_features(images, inception_weights, device), real_incep)
            rows.append(row)
            print(format_row(row), flush=True)
    for row in rows:
        row["classifier_test_acc"] = clf_acc
    return rows


def format_row(row: dict) -> str:
    return " | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in row.items())


def markdown_table(rows: list[dict]) -> str:
    cols = [c for c in ("model", "steps", "fd", "class_acc", "psnr_vs_reference",
                        "inception_fd", "seconds_per_image") if any(c in r for r in rows)]
    head = {"fd": "digits FD ↓", "class_acc": "class acc ↑", "psnr_vs_reference":
            f"PSNR vs {rows[0]['reference']} (dB) ↑", "inception_fd": "Inception FID ↓",
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
    note = (f"Digits classifier test accuracy: {rows[0]['classifier_test_acc']:.3f}. "
            f"{rows[0]['num_images']} images per row.\n")
    with open(out + ".md", "w") as f:
        f.write((f"`{command}`\n\n" if command else "") + table + "\n" + note)
    print(table + note)


def main(argv=None):
    import sys
    args = parse_args(argv)
    rows = evaluate(args.paths, args.steps, parse_seeds(args.seeds), args.reference,
                    args.reference_steps, args.inception_weights, args.batch_size,
                    args.device, args.clip_sample)
    write_results(rows, args.out, "python tools/evaluate.py " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    return rows
