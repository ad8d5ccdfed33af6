"""SFD on digits: SFD at 2-5 NFE, SFD-v (one model), second stage (1 NFE) vs the
teacher with DPM-Solver++ at the same NFE, and the PD students.

    python tools/benchmark/sfd_quality.py [--teacher work_dirs/ddpm_v_digits/step2500]

Trains every run that its work dir does not already hold (timing each), then
writes results/sfd_quality.{json,md,png}. A benchmark, not a test.

PSNR pairs each image with the teacher's converged ODE sample from the same
noise: DPM-Solver++(3M) with 256 steps over SFD's sigma interval for the SFD
rows and the teacher's solver rows; PD rows are copied from pd_quality.json,
whose reference is the teacher's 1024-step DDIM from the same noise.
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

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = "configs/sfd/sfd_digits.py"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="work_dirs/ddpm_v_digits/step2500")
    p.add_argument("--work-dir", default="work_dirs/sfd_benchmark")
    p.add_argument("--nfe", type=int, nargs="+", default=[2, 3, 4, 5])
    p.add_argument("--kimg", type=float, default=10, help="trajectories (x1000) per SFD run")
    p.add_argument("--v-kimg", type=float, default=20, help="... for SFD-v")
    p.add_argument("--second-kimg", type=float, default=10, help="... for the second stage")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seeds", default="0-255")
    p.add_argument("--pd-results", default=osp.join(ROOT, "tools/benchmark/results/pd_quality.json"))
    p.add_argument("--out", default=osp.join(ROOT, "tools/benchmark/results/sfd_quality"))
    return p.parse_args()


def train(work_dir, kimg, batch, options) -> dict:
    """One mim run (skipped when its export exists): wall-clock and iterations."""
    iters = max(2, int(kimg * 1000) // batch)
    export = osp.join(work_dir, f"step{iters}")
    record = osp.join(work_dir, "benchmark_run.json")
    if osp.isdir(export) and osp.isfile(record):
        with open(record) as f:
            return json.load(f)
    start = time.perf_counter()
    subprocess.run([osp.join(osp.dirname(sys.executable), "mim"), "train", "diffengine_distill",
                    CONFIG, "--work-dir", work_dir, "--cfg-options", *options,
                    f"train_dataloader.batch_size={batch}", f"train_cfg.max_iters={iters}",
                    f"param_scheduler.0.milestones=[{iters // 2}]",
                    f"param_scheduler.0.end={iters}",
                    f"custom_hooks.0.interval={iters}", f"custom_hooks.1.interval={iters}"],
                   cwd=ROOT, check=True)
    times = sorted(json.loads(line)["time"] for p in glob.glob(
        osp.join(work_dir, "*", "vis_data", "scalars.json")) for line in open(p)
        if '"time"' in line)
    median = times[len(times) // 2]
    # Median iteration time x iterations, as pd_quality: robust to a busy machine.
    info = dict(export=export, iterations=iters, trajectories=iters * batch,
                wall_seconds=time.perf_counter() - start, median_seconds_per_iteration=median,
                seconds=median * iters)
    with open(record, "w") as f:
        json.dump(info, f, indent=2)
    return info


def teacher_solver_images(teacher, noise, nfe_list, ref_steps=256):
    """The teacher's DPM-Solver++(3M) samples over SFD's sigma interval."""
    import torch
    from mmengine.config import Config

    from diffengine_distill.diffusion.solvers import solve
    from diffengine_distill.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, CONFIG))
    cfg.model.unet.path = cfg.model.scheduler.path = teacher
    model = MODELS.build(cfg.model).eval()

    @torch.no_grad()
    def run(num_steps):
        sig = model.sigmas(num_steps)
        out = []
        for chunk in noise.split(128):
            def den(x, s):
                return model.denoise(model.teacher_unet, x, s, None, None)
            out.append(solve(den, chunk * sig[0].float(), sig, **model.solver)[-1])
        return torch.cat(out).clamp(-1, 1)
    images = {n: run(n + 1) for n in nfe_list}
    return images, run(ref_steps + 1), dict(sigma_min=model.sigma_min, sigma_max=model.sigma_max)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    styles = {"teacher DPM-Solver++": "o--", "SFD": "s-", "SFD-v": "^-",
              "SFD second stage": "D", "PD": "x:"}
    for name, style in styles.items():
        pts = sorted((r["nfe"], r) for r in rows if r["model"] == name and r["nfe"] <= 8)
        if not pts:
            continue
        xs = [n for n, _ in pts]
        axes[0].plot(xs, [r["fd"] for _, r in pts], style, label=name)
        axes[1].plot(xs, [r["psnr_vs_reference"] for _, r in pts], style, label=name)
    full = next(r for r in rows if r["nfe"] > 8)
    axes[0].axhline(full["fd"], color="gray", lw=0.8, label=f"teacher, {full['nfe']} steps")
    axes[0].set_yscale("log")
    for ax, title in zip(axes, ("digits FD (log scale, lower is better)",
                                "PSNR vs the teacher's converged ODE, same noise (dB)")):
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    args = parse_args()
    os.chdir(ROOT)
    teacher = [f"model.unet.path={args.teacher}", f"model.scheduler.path={args.teacher}"]
    runs = {}
    for nfe in args.nfe:
        runs[f"sfd_nfe{nfe}"] = train(osp.join(args.work_dir, f"sfd_nfe{nfe}"), args.kimg,
                                      args.batch, teacher + [f"model.num_steps={nfe + 2}"])
    runs["sfd_v"] = train(osp.join(args.work_dir, "sfd_v"), args.v_kimg, args.batch,
                          teacher + ["model.use_step_condition=True"])
    stage1 = runs["sfd_v"]["export"]
    runs["second_stage"] = train(
        osp.join(args.work_dir, "second_stage"), args.second_kimg, args.batch,
        [f"model.unet.path={stage1}", f"model.scheduler.path={stage1}",
         "model.type=SFDSecondStage", "model.num_steps=3", "model.M=2",
         "model.last_step_loss=l1", "optim_wrapper.optimizer.lr=5e-4"])

    import torch

    from diffengine_distill.apis.inference import generate, load_pipeline, parse_seeds
    from diffengine_distill.datasets.digits import load_digits_uint8
    from diffengine_distill.evaluation import (classifier_features, frechet_distance,
                                               get_digits_classifier, psnr)
    seeds = parse_seeds(args.seeds)
    noise = torch.stack([torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(s))
                         for s in seeds])
    classifier, clf_acc = get_digits_classifier(16)
    real = torch.from_numpy(load_digits_uint8(16)[0]).float()[:, None] / 127.5 - 1
    real_feats = classifier_features(real, classifier)
    solver_images, reference, sigmas = teacher_solver_images(args.teacher, noise, args.nfe + [1])
    rows = []

    def add(model, nfe, images, **extra):
        row = dict(model=model, nfe=nfe,
                   fd=frechet_distance(classifier_features(images, classifier), real_feats),
                   psnr_vs_reference=float(psnr(images, reference).mean()), **extra)
        rows.append(row)
        print(row, flush=True)

    add("teacher DPM-Solver++", 256, reference)
    for nfe, images in sorted(solver_images.items()):
        add("teacher DPM-Solver++", nfe, images)
    for nfe in args.nfe:
        run = runs[f"sfd_nfe{nfe}"]
        add("SFD", nfe, generate(load_pipeline(run["export"]), seeds, nfe, progress=False),
            distill_seconds=run["seconds"], trajectories=run["trajectories"])
    pipe = load_pipeline(runs["sfd_v"]["export"])
    for nfe in args.nfe:
        add("SFD-v", nfe, generate(pipe, seeds, nfe, progress=False),
            distill_seconds=runs["sfd_v"]["seconds"], trajectories=runs["sfd_v"]["trajectories"])
    run = runs["second_stage"]
    add("SFD second stage", 1, generate(load_pipeline(run["export"]), seeds, 1, progress=False),
        distill_seconds=run["seconds"] + runs["sfd_v"]["seconds"],
        trajectories=run["trajectories"])
    if osp.isfile(args.pd_results):
        with open(args.pd_results) as f:
            pd = json.load(f)
        per_it = pd.get("median_seconds_per_iteration")
        for r in pd["rows"]:
            if r["model"] == "pd-student" and r["steps"] <= 8:
                stages = pd["teacher_steps"].bit_length() - r["steps"].bit_length()
                rows.append(dict(model="PD", nfe=r["steps"], fd=r["fd"],
                                 psnr_vs_reference=r["psnr_vs_reference"],
                                 reference=r["reference"],
                                 distill_seconds=per_it * stages * pd["iters_per_stage"]
                                 if per_it else None))
    table = markdown(rows)
    meta = dict(command="python tools/benchmark/sfd_quality.py " + " ".join(sys.argv[1:]),
                classifier_test_acc=clf_acc, num_images=len(seeds), sigmas=sigmas, runs=runs,
                reference="teacher DPM-Solver++(3M), 256 steps, same noise")
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(meta, rows=rows), f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(f"`{meta['command']}`\n\n{table}\n")
    plot(rows, args.out + ".png")
    print(table)


def markdown(rows) -> str:
    lines = ["| model | NFE | digits FD ↓ | PSNR vs converged teacher ODE (dB) ↑ | "
             "distillation (CPU min) |", "|---|---|---|---|---|"]
    for r in rows:
        minutes = r.get("distill_seconds")
        lines.append(f"| {r['model']} | {r['nfe']} | {r['fd']:.2f} | "
                     f"{r['psnr_vs_reference']:.1f}"
                     + (" (vs DDIM@1024)" if r["model"] == "PD" else "")
                     + f" | {'—' if minutes is None else f'{minutes / 60:.1f}'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
