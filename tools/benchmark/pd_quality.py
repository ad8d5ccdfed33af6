"""Progressive distillation on digits: teacher DDIM at N steps vs the PD student
at N steps, N = 64 ... 1, against the teacher at T steps (T = 1024 for the v
teacher, 1000 for the eps teacher).

    python tools/benchmark/pd_quality.py [--teacher work_dirs/ddpm_v_digits/step2500]

Trains PD 128 -> 1 (7 stages, plus the conversion stage 0 of an eps teacher
into the config's v student; skipped when the work dir holds the exports,
resumed when it holds a checkpoint), then writes results/pd_quality.{json,md,png}.
A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="work_dirs/ddpm_v_digits/step2500")
    p.add_argument("--work-dir", default="work_dirs/pd_benchmark")
    p.add_argument("--teacher-steps", type=int, default=128)
    p.add_argument("--iters-per-stage", type=int, default=300)
    p.add_argument("--stage0-iters", type=int, default=None,
                   help="iterations of the conversion stage 0 (default: --iters-per-stage)")
    p.add_argument("--seeds", default="0-255")
    p.add_argument("--clip-sample", default="export",
                   choices=("export", "on", "off", "recompute"),
                   help="x0 clipping of every sampler, teacher and students (recompute: "
                   "eps_hat from the clipped x0_hat, the PD paper's evaluation sampler)")
    p.add_argument("--exact-grid", action="store_true",
                   help="sample the teacher on the students' trailing grid i*T/N - 1 where N "
                   "does not divide T (diffusers' DDIM steps T // N there)")
    p.add_argument("--student-prediction-type", default="v_prediction",
                   choices=("v_prediction", "epsilon", "sample"),
                   help="the student's parameterisation (the teacher's: no stage 0)")
    p.add_argument("--out", default=osp.join(ROOT, "tools/benchmark/results/pd_quality"))
    return p.parse_args()


def teacher_config(teacher: str) -> dict:
    with open(osp.join(teacher, "scheduler", "scheduler_config.json")) as f:
        return json.load(f)


def num_iterations(args) -> int:
    """Halvings down to 1 step, plus stage 0 when the teacher is converted into
    another parameterisation (pd_digits.py's v student for an eps teacher)."""
    converts = teacher_config(args.teacher).get("prediction_type") != args.student_prediction_type
    halvings = (args.teacher_steps).bit_length() - 1
    return halvings * args.iters_per_stage + converts * (args.stage0_iters or args.iters_per_stage)


def train(args) -> float | None:
    halvings = (args.teacher_steps).bit_length() - 1
    if glob.glob(osp.join(args.work_dir, f"stage_{halvings}_1steps")):
        return None
    resume = ["--resume"] if glob.glob(osp.join(args.work_dir, "iter_*.pth")) else []
    start = time.perf_counter()
    subprocess.run([osp.join(osp.dirname(sys.executable), "mim"), "train", "diffengine_distill",
                    "configs/progressive_distillation/pd_digits.py", "--work-dir", args.work_dir,
                    *resume, "--cfg-options", f"model.unet.path={args.teacher}",
                    f"model.scheduler.path={args.teacher}",
                    f"model.teacher_steps={args.teacher_steps}",
                    f"model.student_prediction_type={args.student_prediction_type}",
                    "custom_hooks.0.end_steps=1",
                    f"custom_hooks.0.iters_per_stage={args.iters_per_stage}",
                    f"custom_hooks.0.stage0_iters={args.stage0_iters}",
                    f"custom_hooks.1.interval={args.iters_per_stage}",
                    f"train_cfg.max_iters={num_iterations(args)}"],
                   cwd=ROOT, check=True)
    return time.perf_counter() - start


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, style in (("teacher", "o--"), ("pd-student", "s-")):
        pts = sorted((r["steps"], r) for r in rows if r["model"] == name and r["steps"] <= 64)
        xs = [n for n, _ in pts]
        axes[0].plot(xs, [r["fd"] for _, r in pts], style, label=name)
        axes[1].plot(xs, [r["psnr_vs_reference"] for _, r in pts], style, label=name)
    full = max((r for r in rows if r["model"] == "teacher"), key=lambda r: r["steps"])
    axes[0].axhline(full["fd"], color="gray", lw=0.8, label=f"teacher @{full['steps']}")
    axes[0].set_yscale("log")
    for ax, title in zip(axes, ("digits FD (log scale, lower is better)",
                                f"PSNR vs teacher@{full['steps']}, same noise (dB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps N")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    args = parse_args()
    os.chdir(ROOT)
    seconds = train(args)
    from diffengine_distill.apis.evaluate import evaluate, write_results
    exports = {int(re.search(r"_(\d+)steps", p).group(1)): p
               for p in glob.glob(osp.join(args.work_dir, "stage_*_*steps"))}
    steps = [n for n in (64, 16, 8, 4, 2, 1) if n in exports]
    from diffengine_distill.apis.inference import parse_seeds
    full = min(1024, teacher_config(args.teacher)["num_train_timesteps"])
    models = [f"teacher={args.teacher}@{full},{','.join(map(str, steps))}"]
    models += [f"pd-student-{n}={exports[n]}@{n}" for n in steps]
    rows = evaluate(models, seeds=parse_seeds(args.seeds), reference_steps=full,
                    clip_sample=args.clip_sample, exact_grid=args.exact_grid)
    for r in rows:
        if r["model"].startswith("pd-student"):
            r["model"] = "pd-student"
    os.makedirs(osp.dirname(args.out), exist_ok=True)
    write_results(rows, args.out, "python tools/benchmark/pd_quality.py " + " ".join(sys.argv[1:]))
    plot(rows, args.out + ".png")
    # Median iteration time from the training log: robust to a busy machine.
    times = [json.loads(line).get("time") for p in glob.glob(
        osp.join(args.work_dir, "*", "vis_data", "scalars.json")) for line in open(p)]
    times = sorted(t for t in times if t is not None)
    meta = dict(distillation_seconds=seconds, teacher_steps=args.teacher_steps,
                median_seconds_per_iteration=times[len(times) // 2] if times else None,
                iterations=num_iterations(args), stage0_iters=args.stage0_iters,
                clip_sample=args.clip_sample, exact_grid=args.exact_grid,
                student_prediction_type=args.student_prediction_type,
                iters_per_stage=args.iters_per_stage)
    with open(args.out + ".json") as f:
        data = json.load(f)
    data.update(meta)
    with open(args.out + ".json", "w") as f:
        json.dump(data, f, indent=2)
    print(meta)


if __name__ == "__main__":
    main()
