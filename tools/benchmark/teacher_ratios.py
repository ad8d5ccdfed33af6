"""Each method on the ε- and the v-prediction digits teacher: student / full
teacher ratio of digits FD, and paired PSNR against the full teacher, per
method and NFE, from the quality benchmarks' result files.

    python tools/benchmark/teacher_ratios.py

Reads ``tools/benchmark/results/{pd,sfd,dmd}_quality.json`` (v teacher) and
``..._eps.json`` (ε teacher, the same benchmark with ``--teacher`` and
``--out`` pointing at the ε runs; ``--eps pd=pd_quality_eps_clip`` picks
another run, by default PD's with the shipped configs' clipped stage 0
under the teacher's own loss (900 iterations), sampled as the PD paper
does: ``--clip-sample recompute``; comma-separated
stems when several runs each hold some of the methods);
a missing file leaves its methods out.
"Within ±10%" compares the ε ratio with the v ratio: |ε / v - 1| <= 0.1;
"at most 10% worse": the ε FD ratio at most 10% above the v one and its
PSNR at most 10% below.
Writes ``teacher_ratios.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

RESULTS = osp.join(osp.dirname(osp.abspath(__file__)), "results")
# benchmark: (its full teacher: the model's row with the most steps; the
# student rows' models; the step key)
BENCHMARKS = {
    "pd": ("teacher", ("pd-student",), "steps"),
    "sfd": ("teacher DPM-Solver++", ("SFD", "SFD-v", "SFD second stage"), "nfe"),
    "dmd": ("teacher DPM-Solver++", ("DMD", "DMD2", "DMD2 4-step"), "steps"),
}


def ratios(rows: list[dict], teacher_model: str, students: tuple, key: str) -> dict:
    """{(method, nfe): dict(fd_ratio, psnr, teacher_fd_ratio)} of one result file."""
    teacher = {r[key]: r for r in rows if r["model"] == teacher_model}
    ref = teacher.pop(max(teacher))
    out = {}
    for r in rows:
        if r["model"] in students:
            same_steps = teacher.get(r[key])
            out[(r["model"], r[key])] = dict(
                fd_ratio=r["fd"] / ref["fd"], psnr=r.get("psnr_vs_reference"),
                teacher_fd_ratio=same_steps["fd"] / ref["fd"] if same_steps else None)
    return out


# The ε runs made with the shipped configs (PD: stage0_clip_x0=1, every sampler
# with x0_hat clipped and eps_hat recomputed, as the paper evaluates; DMD: the
# run with DMD2 and DMD2 4-step and the one with DMD, v generators).
EPS_RUNS = {"pd": "pd_quality_eps_own_mse",
            "dmd": "dmd_quality_eps_4step,dmd_quality_eps_regression"}


def compare(results: str = RESULTS, eps_runs: dict | None = None) -> list[dict]:
    eps_runs = {**EPS_RUNS, **(eps_runs or {})}
    table = []
    for name, (full, students, key) in BENCHMARKS.items():
        v_path = osp.join(results, f"{name}_quality.json")
        eps_paths = [osp.join(results, stem + ".json")
                     for stem in eps_runs.get(name, f"{name}_quality_eps").split(",")]
        eps_paths = [p for p in eps_paths if osp.isfile(p)]
        if not osp.isfile(v_path) or not eps_paths:
            continue
        v_ratios = ratios(json.load(open(v_path))["rows"], full, students, key)
        eps_ratios, eps_file = {}, {}  # several ε runs may each hold some of the methods
        for p in eps_paths:
            for k, r in ratios(json.load(open(p))["rows"], full, students, key).items():
                eps_ratios[k], eps_file[k] = r, osp.basename(p)
        for method, nfe in sorted(v_ratios, key=lambda k: (k[0], -k[1])):
            v, eps = v_ratios[method, nfe], eps_ratios.get((method, nfe))
            if eps is None:
                continue
            row = dict(benchmark=name, eps_run=eps_file[method, nfe], method=method,
                       nfe=nfe, v=v, eps=eps,
                       fd_ratio_change=eps["fd_ratio"] / v["fd_ratio"] - 1)
            if v["psnr"] is not None and eps["psnr"] is not None:
                row["psnr_change"] = eps["psnr"] / v["psnr"] - 1
            row["within_10pct"] = all(abs(row[k]) <= 0.1 for k in
                                      ("fd_ratio_change", "psnr_change") if k in row)
            # A lower FD ratio or a higher PSNR is closer to the teacher, not a miss.
            row["no_worse_than_10pct"] = row["fd_ratio_change"] <= 0.1 and \
                row.get("psnr_change", 0.0) >= -0.1
            table.append(row)
    return table


def markdown(table: list[dict]) -> str:
    def num(x, fmt):
        return "—" if x is None else format(x, fmt)
    lines = ["| ε run | method | NFE | FD ratio, v | FD ratio, ε | change | teacher@NFE FD ratio, v / ε "
             "| PSNR v (dB) | PSNR ε (dB) | change | within ±10% | at most 10% worse |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        v, e = r["v"], r["eps"]
        lines.append(
            f"| {r['eps_run']} | {r['method']} | {r['nfe']} | {v['fd_ratio']:.2f} | {e['fd_ratio']:.2f} | "
            f"{r['fd_ratio_change']:+.0%} | {num(v['teacher_fd_ratio'], '.2f')} / "
            f"{num(e['teacher_fd_ratio'], '.2f')} | {num(v['psnr'], '.1f')} | "
            f"{num(e['psnr'], '.1f')} | "
            f"{'—' if 'psnr_change' not in r else format(r['psnr_change'], '+.0%')} | "
            f"{'yes' if r['within_10pct'] else 'no'} | "
            f"{'yes' if r['no_worse_than_10pct'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--out", default=osp.join(RESULTS, "teacher_ratios"))
    p.add_argument("--eps", action="append", default=[], metavar="BENCHMARK=STEM[,STEM]",
                   help="the ε runs' result file stems, e.g. pd=pd_quality_eps")
    args = p.parse_args(argv)
    eps_runs = {}
    for item in args.eps:
        name, sep, stem = item.partition("=")
        if not sep or name not in BENCHMARKS:
            p.error(f"--eps {item!r}: expected BENCHMARK=STEM with BENCHMARK in "
                    f"{sorted(BENCHMARKS)}")
        eps_runs[name] = stem
    table = compare(args.results, eps_runs)
    command = " ".join(["python tools/benchmark/teacher_ratios.py",
                        *(sys.argv[1:] if argv is None else argv)])
    with open(args.out + ".json", "w") as f:
        json.dump(dict(command=command, eps_runs={**EPS_RUNS, **eps_runs}, rows=table), f,
                  indent=2)
    text = markdown(table)
    with open(args.out + ".md", "w") as f:
        f.write(f"`{command}`\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
