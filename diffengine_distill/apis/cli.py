"""Command-line parsers of the tools, standard library only.

``tools/*.py`` load this file by path and parse before anything imports
torch or diffusers, so ``--help`` and nonsense numbers answer at once. Bad
input ends with one line on stderr and exit status 2 (parse time) or 1
(found later, e.g. steps the scheduler cannot do); tracebacks mean bugs.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys

CLIP_CHOICES = ("export", "on", "off", "recompute")
SOLVERS = ("dpmpp", "ddim", "pndm")
DTYPE_NAMES = ("bfloat16", "float16", "float32")


class UsageError(ValueError):
    """Bad input from the user: the tools print it as one line, no traceback."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


@contextlib.contextmanager
def user_errors(prog: str):
    """Turn user errors (bad values, missing files, offline hub ids) into one
    line on stderr and exit status 1."""
    try:
        yield
    except (UsageError, OSError) as err:
        sys.exit(f"{prog}: error: {' '.join(str(err).split())}")


# -- value types ------------------------------------------------------------------

def positive_int(text) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def finite_float(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def eta_value(text) -> float:
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"DDIM eta must be in [0, 1], got {value}")
    return value


def steps_list(text) -> list[int]:
    """'4' or '1000,250,50'."""
    return [positive_int(part) for part in str(text).split(",")]


def parse_seeds(text, what: str = "seed", unique: bool = True) -> list[int]:
    """'0-99', '1,5,9' or '0-9,20' -> non-negative integers (seeds: < 2**63, no repeats)."""
    values = []
    for part in str(text).split(","):
        a, dash, b = part.strip().partition("-")
        try:
            lo, hi = int(a), int(b) if dash else int(a)
        except ValueError:
            raise UsageError(f"{text!r} is not a {what} list like 0-99 or 1,5,9 "
                             "(non-negative integers)") from None
        if hi < lo:
            raise UsageError(f"{what} range {part.strip()!r} is empty: write LOW-HIGH with "
                             "LOW <= HIGH")
        if hi >= 2 ** 63:
            raise UsageError(f"{what} {hi} is too large (must be < 2**63)")
        values.extend(range(lo, hi + 1))
    if unique and len(set(values)) != len(values):
        raise UsageError(f"{what} list {text!r} repeats {what}s")
    return values


def seed_list(text) -> list[int]:
    try:
        return parse_seeds(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def label_list(text) -> list[int]:
    try:
        return parse_seeds(text, what="label", unique=False)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _device(p):
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


# -- parsers ------------------------------------------------------------------------

def sample_parser() -> Parser:
    p = Parser(prog="sample.py", description="Sample images from a diffusers pixel pipeline "
               "(an export of this project, a DDPMPipeline/DDIMPipeline folder or a hub id).")
    p.add_argument("path", help="pipeline folder (with model_index.json), a work dir (its "
                   "newest export is used) or a hub id such as google/ddpm-cifar10-32")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampling steps (default: the export's trained number, else 50)")
    p.add_argument("--seeds", type=seed_list, default=None,
                   help="e.g. 0-99 or 1,5,9 (default: 0..num-images-1)")
    p.add_argument("--num-images", type=positive_int, default=64,
                   help="images when --seeds is not given")
    p.add_argument("--labels", type=label_list, default=None, help="class labels for "
                   "class-conditional models, e.g. 0-9, cycled (default: seed %% 10)")
    p.add_argument("--out", default=None, help="output folder (default: "
                   "<export>/samples_<steps>steps; ./samples_<steps>steps for a hub id)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--eta", type=eta_value, default=0.0,
                   help="DDIM eta in [0, 1]: 0 deterministic, 1 DDPM-like (DDIM samplers only)")
    p.add_argument("--clip-sample", choices=CLIP_CHOICES, default="export",
                   help="clip x0_hat to [-1, 1] at every step (on/off), or as exported; "
                   "recompute: also recompute DDIM's eps_hat from the clipped x0_hat (the "
                   "sampler of the progressive distillation paper)")
    p.add_argument("--clipped-sampling", "--clipped_sampling", dest="clip_sample",
                   action="store_const", const="on", help="same as --clip-sample on")
    _exact_grid(p)
    _device(p)
    p.add_argument("--scale", type=positive_int, default=4,
                   help="enlarge the grid by this factor")
    return p


def _exact_grid(p: Parser) -> None:
    p.add_argument("--exact-grid", action="store_true",
                   help="DDIM on the trailing grid i*T/N - 1 for any N (GridDDIMScheduler); "
                   "diffusers' DDIM steps T // N, off the grid where N does not divide T")


def strip_parser() -> Parser:
    p = Parser(prog="strip.py", description="Compare pipelines side by side, same seeds.")
    p.add_argument("rows", nargs="+", help="LABEL=PATH@STEPS, one per row")
    p.add_argument("--seeds", type=seed_list, default="0-11")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--scale", type=positive_int, default=4)
    p.add_argument("--clip-sample", choices=CLIP_CHOICES, default="export")
    _exact_grid(p)
    return p


def evaluate_parser() -> Parser:
    p = Parser(prog="evaluate.py", description="Score pipelines: paired PSNR against a "
               "reference sampler; digits FD / class accuracy for digits-shaped models "
               "(1 channel, square, >= 8 px); Inception FID with local weights.")
    p.add_argument("paths", nargs="+", help="pipeline folders, work dirs or hub ids, each "
                   "as [NAME=]PATH[@STEPS,STEPS...] (default name: the folder name; "
                   "default steps: --steps)")
    p.add_argument("--steps", type=positive_int, nargs="+", default=None,
                   help="sampling steps to evaluate (default: each export's trained number)")
    p.add_argument("--seeds", type=seed_list, default="0-511",
                   help="noise seeds, e.g. 0-511 (at least 2 images)")
    p.add_argument("--reference", default=None, help="pipeline for paired PSNR "
                   "(default: the first path)")
    p.add_argument("--reference-steps", type=positive_int, default=None,
                   help="steps of the reference (default: the largest of its steps)")
    p.add_argument("--inception-weights", default=None,
                   help="local NVlabs inception-2015-12-05.pt (SHA-256 checked) for "
                   "Inception FID")
    p.add_argument("--clip-sample", choices=CLIP_CHOICES, default="export",
                   help="x0 clipping while sampling: as exported, on, off, or recompute "
                   "(DDIM's eps_hat recomputed from the clipped x0_hat)")
    _exact_grid(p)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--out", default="evaluation", help="writes OUT.json and OUT.md")
    _device(p)
    return p


def pairs_parser() -> Parser:
    p = Parser(prog="make_pairs.py", description="Noise-image pairs of a teacher's ODE, "
               "for DMD's regression loss (PairsDataset).")
    p.add_argument("teacher", help="teacher export folder, its work dir or a hub id")
    p.add_argument("--out", required=True, help="pairs folder (rerun to resume)")
    p.add_argument("--seeds", type=seed_list, default="0-9999", help="e.g. 0-9999")
    p.add_argument("--steps", type=positive_int, default=64, help="ODE solver steps")
    p.add_argument("--solver", choices=SOLVERS, default="dpmpp",
                   help="dpmpp: DPM-Solver++(2M); ddim: deterministic DDIM; pndm: SD's "
                   "PLMS (DMD's SD pairs: pndm, 50 steps)")
    p.add_argument("--shard-size", type=positive_int, default=1000)
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="labels are seed %% N (default: the teacher's classes without "
                   "its null class)")
    p.add_argument("--prompts", default=None,
                   help="text-to-image teachers: a file with one prompt per line (seed s "
                   "gets line s %% lines)")
    p.add_argument("--guidance-scale", type=finite_float, default=None,
                   help="text-to-image teachers: CFG scale of the pairs (DMD, SD 1.5: 3)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    _device(p)
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32",
                   help="teacher weights' dtype (pairs are stored in float32)")
    return p
