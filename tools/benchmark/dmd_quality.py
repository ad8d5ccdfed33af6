"""DMD and DMD2 on the class-conditional digits teacher: Fréchet distance in
the digits classifier's feature space and class accuracy of one-step (and
four-step) generators against the teacher at 1, 4 and 64 steps.

    python tools/benchmark/dmd_quality.py --device cuda   # trains what is missing

Trains (skipped when the run's final export exists; a run that exported
but did not finish is refused) ``configs/dmd/dmd_digits.py`` on the
teacher's ODE pairs (made first with tools/make_pairs.py),
``dmd2_digits.py`` and ``dmd2_4step_digits.py``, all three at once unless
``--sequential`` (a 1.1M-parameter UNet leaves a GPU mostly idle). Writes
``<out>.json``, ``<out>.md``, ``<out>_strip.png`` (same seeds, one row per
model) and ``<out>_curves.png`` (DM loss, critic loss and FD over training).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RUNS = {  # name: (config, its export's steps)
    "DMD": ("configs/dmd/dmd_digits.py", 1),
    "DMD2": ("configs/dmd/dmd2_digits.py", 1),
    "DMD2 4-step": ("configs/dmd/dmd2_4step_digits.py", 4),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="work_dirs/ddpm_v_digits_cond/step2500")
    p.add_argument("--pairs", default="work_dirs/pairs/digits_cond")
    p.add_argument("--num-pairs", type=int, default=10000)
    p.add_argument("--work-dir", default="work_dirs/dmd_benchmark")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", default="0-1023")
    p.add_argument("--sequential", action="store_true", help="train one run at a time")
    p.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS), metavar="RUN",
                   help=f"which runs to train and evaluate (default: all of {list(RUNS)}; "
                        "none: the teacher's rows only)")
    p.add_argument("--reference-seed-sets", type=int, default=1, metavar="K",
                   help="also sample the 64-step teacher on K-1 further disjoint seed sets "
                        "of the same size and report its FD spread (what a difference "
                        "between two rows must beat)")
    p.add_argument("--cfg-options", nargs="*", default=[],
                   help="extra options for every run (e.g. a short smoke test)")
    p.add_argument("--out", default=osp.join(ROOT, "tools/benchmark/results/dmd_quality"))
    return p.parse_args(argv)


def train_all(args) -> dict:
    """Start every missing run (in parallel unless --sequential), wait, time them."""
    procs, runs = {}, {}
    for name in args.runs:
        config = RUNS[name][0]
        work = osp.join(args.work_dir, osp.splitext(osp.basename(config))[0])
        runs[name] = dict(work_dir=work, config=config)
        if trained(work, config):
            continue
        cmd = [sys.executable, "tools/train.py", config, "--work-dir", work, "--cfg-options",
               f"model.unet.path={args.teacher}", f"model.scheduler.path={args.teacher}"]
        if "dmd_digits" in config:
            cmd.append(f"train_dataloader.dataset.path={args.pairs}")
        cmd += args.cfg_options
        os.makedirs(work, exist_ok=True)
        log = open(osp.join(work, "benchmark_train.log"), "w")
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "4"))
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        env=env), time.perf_counter())
        if args.sequential:
            procs[name][0].wait()
    for name, (proc, start) in procs.items():
        if proc.wait():
            raise RuntimeError(f"{name} training failed: see {runs[name]['work_dir']}/"
                               "benchmark_train.log")
        runs[name]["wall_seconds"] = time.perf_counter() - start
    for run in runs.values():
        run["scalars"] = read_scalars(run["work_dir"])
        exports = glob.glob(osp.join(run["work_dir"], "step*", "model_index.json"))
        run["export"] = max((osp.dirname(p) for p in exports),
                            key=lambda d: int(osp.basename(d)[4:]))
        times = sorted(s["time"] for s in run["scalars"] if "time" in s)
        run["median_seconds_per_iteration"] = times[len(times) // 2] if times else None
    return runs


def trained(work_dir, config) -> bool:
    """Whether a run's final export exists: the step of ``max_iters`` in the
    config that tools/train.py dumped into ``work_dir`` (with its overrides)."""
    if not glob.glob(osp.join(work_dir, "step*", "model_index.json")):
        return False
    from mmengine.config import Config
    dumped = glob.glob(osp.join(work_dir, "*.py"))
    if len(dumped) != 1:
        return True  # no single dumped config to compare with: trust the exports
    max_iters = Config.fromfile(dumped[0]).train_cfg.max_iters
    if osp.isfile(osp.join(work_dir, f"step{max_iters}", "model_index.json")):
        return True
    raise RuntimeError(
        f"{work_dir} holds exports but not the final one (step{max_iters}): its training "
        f"is still running or was stopped. Wait for it, resume it (python tools/train.py "
        f"{config} --work-dir {work_dir} --resume, with the same --cfg-options), or "
        "delete the folder.")


def read_scalars(work_dir) -> list[dict]:
    logs = sorted(glob.glob(osp.join(work_dir, "*", "vis_data", "scalars.json")))
    return [json.loads(line) for line in open(logs[-1])] if logs else []


def plot_curves(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [("loss_dm", "DM loss"), ("loss_critic", "critic loss"),
            ("metric/digits_fd", "digits FD (512 samples)")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, (key, title) in zip(axes, keys):
        for name, run in runs.items():
            pts = [(s["step"], s[key]) for s in run["scalars"] if key in s]
            if pts:
                ax.plot(*zip(*pts), label=name)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        if key.startswith("metric"):
            ax.set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(rows) -> str:
    lines = ["| model | steps (NFE) | digits FD | class accuracy |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['steps']} | {r['fd']:.2f} | {r['class_acc']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.chdir(ROOT)
    import torch

    from diffengine_distill.apis.inference import generate, load_pipeline, parse_seeds
    from diffengine_distill.apis.pairs import make_pairs, ode_scheduler
    from diffengine_distill.datasets.digits import load_digits_uint8
    from diffengine_distill.evaluation import (class_accuracy, classifier_features,
                                               frechet_distance, get_digits_classifier)
    from diffengine_distill.pipelines import SamplerPipeline
    from diffengine_distill.utils import make_grid, save_image

    get_digits_classifier(16)  # trained and cached once, before runs that use it start
    start = time.perf_counter()
    if "DMD" in args.runs:  # only DMD regresses onto the teacher's ODE pairs
        make_pairs(args.teacher, args.pairs, range(args.num_pairs), 64, "dpmpp",
                   batch_size=1000, device=args.device)
    pairs_seconds = time.perf_counter() - start
    runs = train_all(args)

    seeds = parse_seeds(args.seeds)
    labels = [s % 10 for s in seeds]
    classifier, clf_acc = get_digits_classifier(16)
    real = torch.from_numpy(load_digits_uint8(16)[0]).float()[:, None] / 127.5 - 1
    real_feats = classifier_features(real, classifier)
    rows, strip = [], []

    def add(model, steps, images, **extra):
        row = dict(model=model, steps=steps,
                   fd=frechet_distance(classifier_features(images, classifier), real_feats),
                   class_acc=class_accuracy(images, torch.tensor(labels), classifier), **extra)
        rows.append(row)
        strip.append(images[:12])
        print(row, flush=True)

    teacher = load_pipeline(args.teacher, device=args.device)
    dpmpp = SamplerPipeline(unet=teacher.unet,
                            scheduler=ode_scheduler(teacher.scheduler, "dpmpp"))
    dpmpp.set_progress_bar_config(disable=True)

    def sample(pipe, steps, seed_list=seeds):  # labels follow the position, not the seed
        return generate(pipe, seed_list, steps, labels=labels, batch_size=512, progress=False)

    add("teacher DPM-Solver++", 64, sample(dpmpp, 64))
    reference_fds = [rows[-1]["fd"]]
    for k in range(1, args.reference_seed_sets):
        other = [s + k * (max(seeds) + 1) for s in seeds]  # disjoint, same labels
        reference_fds.append(frechet_distance(
            classifier_features(sample(dpmpp, 64, other), classifier), real_feats))
    for steps in (4, 1):
        add("teacher DPM-Solver++", steps, sample(dpmpp, steps))
    for steps in (4, 1):
        add("teacher DDIM", steps, sample(teacher, steps))
    for name in args.runs:
        steps, run = RUNS[name][1], runs[name]
        pipe = load_pipeline(run["export"], device=args.device)
        add(name, steps, sample(pipe, steps),
            iterations=int(osp.basename(run["export"])[4:]),
            median_seconds_per_iteration=run["median_seconds_per_iteration"])
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    grid = make_grid(torch.cat(strip), nrow=12)
    save_image(grid, args.out + "_strip.png", 3)
    if runs:
        plot_curves(runs, args.out + "_curves.png")
    hardware = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                else "CPU")
    meta = dict(command="python tools/benchmark/dmd_quality.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), hardware=hardware,
        classifier_test_acc=clf_acc, num_images=len(seeds), pairs_seconds=pairs_seconds,
        reference_fd_seed_sets=reference_fds,
        strip_rows=[f"{r['model']} @ {r['steps']}" for r in rows],
        runs={k: {kk: vv for kk, vv in v.items() if kk != "scalars"} for k, v in runs.items()})
    with open(args.out + ".json", "w") as f:
        json.dump(dict(meta, rows=rows), f, indent=2)
    table = markdown(rows)
    if len(reference_fds) > 1:
        fds = np.array(reference_fds)
        table += (f"\n\nTeacher DPM-Solver++ at 64 steps on {len(fds)} disjoint seed sets of "
                  f"{len(seeds)}: FD {fds.mean():.3f} ± {fds.std(ddof=1):.3f} "
                  f"(min {fds.min():.3f}, max {fds.max():.3f}).")
    with open(args.out + ".md", "w") as f:
        f.write(f"`{meta['command']}` ({hardware})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
